"""The GatewayError family: what a client may be told, raised by every layer.

A GatewayError carries a status, a code and a *safe* message: text we wrote, never ``str()`` of a foreign
exception (those can carry URLs and keys). One middleware renders it in the route's dialect (each dialect's
``error_body``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar


class GatewayError(Exception):
    """An error whose message is safe to show a client."""

    status: ClassVar[int] = 500
    default_code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers: dict[str, str] = dict(headers or {})
        if status is not None:
            self.status = status  # type: ignore[misc]  # an instance may refine its class's status
        # None where the API the client speaks has none (OpenAI's own errors for an unknown route).
        self.code: str | None = code or self.default_code


class InvalidRequest(GatewayError):
    status = 400
    default_code = "invalid_request"


class AuthenticationFailed(GatewayError):
    status = 401
    default_code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    default_code = "permission_denied"


class NotFound(GatewayError):
    status = 404
    default_code = "not_found"


class ModelNotFound(NotFound):
    default_code = "model_not_found"


class RequestTooLarge(GatewayError):
    status = 413
    default_code = "request_too_large"


class UnsupportedMediaType(GatewayError):
    status = 415
    default_code = "unsupported_media_type"


class RateLimited(GatewayError):
    status = 429
    default_code = "rate_limit_exceeded"


class UpstreamUnreachable(GatewayError):
    status = 502
    default_code = "upstream_unreachable"


class UpstreamRedirected(UpstreamUnreachable):
    default_code = "upstream_redirect"

    @classmethod
    def of(cls, where: str, status: int, host: str) -> UpstreamRedirected:
        return cls(
            f"{where}: the upstream answered {status}, a redirect to {host}; the gateway follows no "
            "redirect (the request carries the deployment's key): set its api_base to where it points"
        )


class ServiceUnavailable(GatewayError):
    status = 503
    default_code = "service_unavailable"


class ModelDisabled(ServiceUnavailable):
    default_code = "model_disabled"


class UpstreamTimeout(GatewayError):
    status = 504
    default_code = "upstream_timeout"
