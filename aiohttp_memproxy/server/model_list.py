"""``GET /v1/models`` and ``GET /v1/models/{id}`` in both shapes: OpenAI's, and Anthropic's when the caller
speaks Anthropic (sends ``anthropic-version``)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from aiohttp_memproxy.config.settings import ModelConfig
from aiohttp_memproxy.errors import InvalidRequest
from aiohttp_memproxy.keys import DIALECT, RUNTIME
from aiohttp_memproxy.server.ops import iso

routes = web.RouteTableDef()

ANTHROPIC_PAGE_DEFAULT, ANTHROPIC_PAGE_MAX = 20, 1000


@routes.get("/v1/models")
@routes.get("/models")
@routes.get("/anthropic/v1/models")  # the LiteLLM proxy's prefix for Anthropic clients
async def list_models(request: web.Request) -> web.Response:
    listed = request[RUNTIME].models.listing()
    created = request[RUNTIME].settings.loaded_at
    if request[DIALECT] == "anthropic":
        return web.json_response(_anthropic_page(request, listed, created))
    return web.json_response(
        {"object": "list", "data": [_openai(name, model, created) for name, model in listed]}
    )


@routes.get("/v1/models/{model_id:.+}")
@routes.get("/models/{model_id:.+}")
@routes.get("/anthropic/v1/models/{model_id:.+}")
async def retrieve_model(request: web.Request) -> web.Response:
    """One model by the id a client lists or sends (an alias too); 404 in the caller's dialect if none."""
    name = request.match_info["model_id"]
    model = request[RUNTIME].models.resolve(name).config
    created = request[RUNTIME].settings.loaded_at
    if request[DIALECT] == "anthropic":
        return web.json_response(_anthropic(name, model, created))
    return web.json_response(_openai(name, model, created))


def _openai(name: str, model: ModelConfig, created: float) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": int(created), "owned_by": model.provider}


def _anthropic(name: str, model: ModelConfig, created: float) -> dict[str, Any]:
    return {
        "type": "model",
        "id": name,
        "display_name": str(model.info.get("display_name") or name),
        "created_at": iso(created),
    }


def _anthropic_page(
    request: web.Request, listed: list[tuple[str, ModelConfig]], created: float
) -> dict[str, Any]:
    """Anthropic's ``GET /v1/models``: ``limit``, ``after_id`` and ``before_id`` paginate."""
    raw_limit = request.query.get("limit", str(ANTHROPIC_PAGE_DEFAULT))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= ANTHROPIC_PAGE_MAX:
        raise InvalidRequest(f"limit: expected an integer from 1 to {ANTHROPIC_PAGE_MAX}", param="limit")
    limit = int(raw_limit)
    ids = [name for name, _ in listed]
    for param in ("after_id", "before_id"):
        value = request.query.get(param)
        if value is not None and value not in ids:
            raise InvalidRequest(f"{param}: no model with that id", param=param)
    if "before_id" in request.query:  # the page just before before_id; has_more looks further back
        stop = ids.index(request.query["before_id"])
        start = max(0, stop - limit)
        has_more = start > 0
    else:
        start = ids.index(request.query["after_id"]) + 1 if "after_id" in request.query else 0
        stop = min(len(listed), start + limit)
        has_more = stop < len(listed)
    page = listed[start:stop]
    return {
        "data": [_anthropic(name, model, created) for name, model in page],
        "has_more": has_more,
        "first_id": page[0][0] if page else None,
        "last_id": page[-1][0] if page else None,
    }
