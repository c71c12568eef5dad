"""LiteLLM's exceptions to our GatewayError: one table, most specific first; the words say where it happened.

What LiteLLM raised before any request left the gateway (a parameter the target cannot take, a request it
could not translate) is the client's request that could not be served: a 400 naming the parameter, never
"the upstream". What happened upstream keeps the upstream's own status, and the upstream's own message, made
safe (``upstream_message``), follows ours. LiteLLM's own text can carry URLs and keys: it is read here (to
find a parameter name the client sent, or the upstream's body it quotes) and never echoed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable

import httpx
import openai
import structlog
from litellm.exceptions import (
    APIConnectionError,
    BadRequestError,
    ContentPolicyViolationError,
    ContextWindowExceededError,
    MidStreamFallbackError,
    Timeout,
    UnsupportedParamsError,
)
from litellm.types.router import RouterRateLimitError, RouterRateLimitErrorBasic

from aiohttp_memproxy import errors
from aiohttp_memproxy.llm.upstream_message import said
from aiohttp_memproxy.outbound.transport import UPSTREAM_STATUS_HEADER, CertificateError, UpstreamRedirect

log = structlog.get_logger()

# LiteLLM's UnsupportedParamsError: "<provider> does not support parameters: ['a', 'b'], for model=..."
UNSUPPORTED_LIST = re.compile(r"does not support parameters:\s*\[([^\]]*)\]")
SAFE_PARAM = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,63}")
# Named in nearly every LiteLLM message ("for model=..."), so never taken as the culprit by a text search.
NOT_A_CULPRIT = frozenset({"model"})
# What LiteLLM raises, before sending, about the request itself: a parameter the target cannot take, or a
# body its translation could not read (LiteLLM wraps a TypeError or AttributeError from reading the client's
# messages in its APIConnectionError: the chain decides). Anything else before sending is the gateway's own
# failure (a missing key, a missing package, a bug), never the client's.
REQUEST_SHAPED = (
    UnsupportedParamsError,
    BadRequestError,
    TypeError,
    ValueError,
    KeyError,
    AttributeError,
    IndexError,
)
# LiteLLM's errors about an upstream exchange (they subclass the OpenAI SDK's), and our transport's.
UPSTREAM_ERRORS = (openai.OpenAIError, httpx.HTTPError)


def _retry_after(exc: BaseException) -> dict[str, str]:
    """The upstream's Retry-After, wherever LiteLLM kept it; only that header is passed on."""
    response = getattr(exc, "response", None)
    for headers in (
        getattr(exc, "litellm_response_headers", None),
        response.headers if isinstance(response, httpx.Response) else None,
        getattr(exc, "headers", None),
    ):
        if headers:
            value = {str(k).lower(): v for k, v in dict(headers).items()}.get("retry-after")
            if value:
                return {"Retry-After": str(value)}
    return {}


def _chain(exc: BaseException) -> list[BaseException]:
    found: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(found) < 16:
        found.append(seen)
        seen = seen.__cause__ or seen.__context__
    return found


def _upstream_status(exc: BaseException) -> int | None:
    """The upstream's own status. LiteLLM re-raises some (a 529, an HTML 502) as 500, but keeps the response
    headers, where our transport wrote the real one; else the deepest status in the exception chain."""
    for error in _chain(exc):
        for headers in (getattr(error, "litellm_response_headers", None), getattr(error, "headers", None)):
            if headers:
                value = {str(k).lower(): v for k, v in dict(headers).items()}.get(UPSTREAM_STATUS_HEADER)
                if value and str(value).isdigit():
                    return int(value)
    found: int | None = None
    for error in _chain(exc):
        status = error.response.status_code if isinstance(error, httpx.HTTPStatusError) else None
        status = status or getattr(error, "status_code", None)
        if isinstance(status, int):
            found = status
    return found


def culprit(exc: BaseException, sent: Collection[str]) -> str | None:
    """The parameter a local LiteLLM failure names, if the client sent it (only then is it safe to echo)."""
    text = " ".join(str(getattr(error, "message", "") or error) for error in _chain(exc))
    listed = UNSUPPORTED_LIST.search(text)
    if listed:
        for name in re.findall(r"['\"]([^'\"]+)['\"]", listed.group(1)):
            if name in sent and SAFE_PARAM.fullmatch(name):
                return str(name)
    for name in sorted(sent, key=len, reverse=True):
        if name in NOT_A_CULPRIT or not SAFE_PARAM.fullmatch(name):
            continue
        if re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", text):
            return name
    return None


def local_error(exc: BaseException, model: str, sent: Collection[str]) -> errors.GatewayError:
    """LiteLLM failed before anything left the gateway: the client's request (a 400 naming the parameter)
    when the failure is about the request, else the gateway's own failure (a 500 that says so)."""
    if not any(isinstance(error, REQUEST_SHAPED) for error in _chain(exc)):
        log.error(
            "gateway_error",
            error=type(exc).__name__,
            cause=type(exc.__cause__).__name__ if exc.__cause__ else None,
        )
        return errors.GatewayError(
            f"model {model!r}: the gateway failed preparing the request (nothing was sent upstream; its log "
            "says why)",
            code="gateway_error",
        )
    param = culprit(exc, sent)
    log.warning("request_untranslatable", error=type(exc).__name__, param=param)
    what = f"parameter {param!r}" if param else "the request"
    return errors.InvalidRequest(
        f"model {model!r}: {what} cannot be sent to this model "
        "(rejected by the gateway while translating it; nothing was sent upstream)",
        param=param,
        code="unsupported_parameter" if param else "invalid_request",
    )


def cooling_down(exc: BaseException, model: str) -> errors.GatewayError | None:
    """LiteLLM's Router found no deployment to send to (those that failed recently are in cooldown): the
    gateway's own decision, a 503 with when to come back. None for any other failure."""
    found = next(
        (
            error
            for error in _chain(exc)
            if isinstance(error, RouterRateLimitError | RouterRateLimitErrorBasic)
        ),
        None,
    )
    if found is None:
        return None
    wait = getattr(found, "cooldown_time", None)
    seconds = max(1, math.ceil(wait)) if isinstance(wait, int | float) and wait > 0 else None
    log.warning("model_cooling_down", retry_after_s=seconds)
    return errors.ServiceUnavailable(
        f"model {model!r}: no deployment can take the request now; those that failed recently are cooling "
        "down (router_settings.allowed_fails, cooldown_time)"
        + (f", retry in {seconds} s" if seconds else ""),
        code="model_cooling_down",
        headers={"Retry-After": str(seconds)} if seconds else None,
    )


def untranslatable_stream(exc: BaseException, model: str) -> errors.GatewayError:
    """LiteLLM failed translating an upstream's stream, mid-stream: the gateway's failure, said as such."""
    log.error("stream_untranslatable", error=type(exc).__name__)
    # 502: an answer came back that the gateway could not use (a 500 is for the gateway's own failures).
    return errors.GatewayError(
        f"model {model!r}: the gateway could not translate the upstream's answer",
        status=502,
        code="translation_error",
    )


def to_gateway_error(
    exc: BaseException,
    model: str,
    *,
    left: bool = True,
    sent: Collection[str] = (),
    secrets: Iterable[str] = (),
) -> errors.GatewayError:
    """One table, most specific first. ``left``: whether any request of this call tried to leave the
    gateway; ``sent``: the parameter names the client sent (for naming the culprit of a local failure);
    ``secrets``: what the upstream's message must not show (the deployments' keys and headers)."""
    if not left:
        return local_error(exc, model, sent)
    # The class and status only: enough to diagnose, nothing that could carry a key.
    log.warning(
        "upstream_error",
        error=type(exc).__name__,
        upstream_status=getattr(exc, "status_code", None),
        cause=type(exc.__cause__).__name__ if exc.__cause__ else None,
    )
    where = f"model {model!r}"
    original = getattr(exc, "original_exception", None)
    if isinstance(exc, MidStreamFallbackError) and isinstance(original, BaseException):
        return to_gateway_error(original, model, secrets=secrets)  # what broke the stream, not the wrapper
    # Our transport's own errors are the truth about the connection, however LiteLLM wrapped them.
    for error in _chain(exc):
        if isinstance(error, UpstreamRedirect):
            return errors.UpstreamRedirected.of(where, error.status, error.host)
        if isinstance(error, CertificateError):
            return errors.UpstreamUnreachable(
                f"{where}: the TLS certificate of {error.host} could not be verified (is the CA of a "
                "TLS-inspecting proxy trusted? memproxy.ca_bundle or SSL_CERT_FILE)",
                code="upstream_certificate",
            )
        if isinstance(error, httpx.TimeoutException):
            return errors.UpstreamTimeout(f"{where}: the upstream timed out")
        if isinstance(error, httpx.TransportError):
            return errors.UpstreamUnreachable(f"{where}: the upstream could not be reached or broke off")
    told = said(_chain(exc), secrets)

    def words(ours: str) -> str:
        return f"{ours}: {told}" if told else ours

    match exc:
        case ContextWindowExceededError():
            return errors.InvalidRequest(
                words(f"{where}: the request exceeds the model's context window"),
                code="context_length_exceeded",
            )
        case ContentPolicyViolationError():
            return errors.InvalidRequest(
                words(f"{where}: the upstream refused the content"), code="content_policy"
            )
        case Timeout() | httpx.TimeoutException():
            return errors.UpstreamTimeout(f"{where}: the upstream timed out")
        case APIConnectionError() | httpx.TransportError():
            return errors.UpstreamUnreachable(f"{where}: the upstream could not be reached or broke off")
    # LiteLLM's class does not always match the upstream's status (a 401 can come as BadRequestError):
    # the status decides.
    status = _upstream_status(exc)
    match status:
        case 400 | 422:
            return errors.InvalidRequest(words(f"{where}: the upstream rejected the request as invalid"))
        case 401:
            return errors.AuthenticationFailed(
                words(f"{where}: the upstream rejected the gateway's credentials"),
                code="upstream_authentication",
            )
        case 403:
            return errors.PermissionDenied(words(f"{where}: the upstream denied access"))
        case 404:
            return errors.NotFound(words(f"{where}: the upstream does not know this model"))
        case 408 | 504:
            return errors.UpstreamTimeout(f"{where}: the upstream timed out")
        case 413:
            return errors.RequestTooLarge(words(f"{where}: the upstream refused the request as too large"))
        case 429:
            return errors.RateLimited(
                words(f"{where}: the upstream is rate limiting"), headers=_retry_after(exc)
            )
        case 503 | 529:
            return errors.ServiceUnavailable(
                words(f"{where}: the upstream is unavailable"), headers=_retry_after(exc)
            )
    if isinstance(status, int) and 500 <= status <= 599:  # the upstream's own server error, as it was
        return errors.GatewayError(
            words(f"{where}: the upstream failed (status {status})"), status=status, code="upstream_error"
        )
    return errors.UpstreamUnreachable(f"{where}: the upstream failed", code="upstream_error")
