"""Which side of LiteLLM serves each call the gateway makes: its Python code, or its Rust core.

LiteLLM (1.110) moves routes to a native module route by route; its catalog (``rust_bridge/catalog.py``) says,
per route, provider, model, target and feature, whether Python or Rust serves a request. A Rust path sends
with its own HTTP client, around the gateway's transport, session and cookie jar. So the seam owns the
decision: ``python_only`` asks LiteLLM to stay in Python where LiteLLM allows that (its process switch), and
``refusals`` asks the catalog itself, for every route the gateway calls and every deployment of a config,
which side would serve it; a deployment a route would send through Rust is refused, naming both, before the
config serves anything (at start and at every reload). Verified on LiteLLM 1.110.2.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

RUST_SWITCH = "LITELLM_RUST"
# LiteLLM's routes (its catalog's names) that this gateway calls. Gemini's generate content has no route of
# its own: LiteLLM serves it in Python, translated to chat completions where the provider is not Google's.
ROUTES_USED = ("chat_completions", "messages", "responses", "token_counter", "tokenizer")
# The catalog's provider names for the tokenizers LiteLLM picks on its own (rust_bridge/tokenizer.py).
TOKENIZERS = ("tiktoken", "huggingface")


class CatalogMoved(RuntimeError):
    """LiteLLM's catalog is not as verified: whether a call stays in Python cannot be known."""


def python_only() -> None:
    """LiteLLM's process switch for its optional Rust paths, off. ``LITELLM_RUST`` in the environment still
    wins over it (LiteLLM's rule): ``refusals`` finds what it turns on."""
    try:
        from litellm.rust_bridge.configuration import rust
    except ImportError:  # a LiteLLM without the Rust bridge: every path is Python
        return
    rust(False)


def back_to_default() -> None:
    """LiteLLM's process switch as LiteLLM sets it."""
    try:
        from litellm.rust_bridge.configuration import reset_rust_configuration
    except ImportError:
        return
    reset_rust_configuration()


def native_routes(provider: str, litellm_model: str) -> list[tuple[str, str]]:
    """(route, why) for each route the gateway calls that LiteLLM would serve through its Rust HTTP client
    for a deployment of ``provider`` named ``litellm_model``. The catalog is asked as LiteLLM asks it (first
    matching rule), for every target and for each feature alone, so a rule that sends only some requests to
    Rust is found too."""
    try:
        from litellm.rust_bridge import catalog
        from litellm.rust_bridge.configuration import Decision
    except ImportError:
        return []
    found: list[tuple[str, str]] = []
    try:
        for route in (
            catalog.Route(name) for name in ROUTES_USED if name in catalog.Route._value2member_map_
        ):
            decisions = {
                catalog.decision(context) for context in _contexts(catalog, route, provider, litellm_model)
            }
            if Decision.RUST_REQUIRED in decisions:
                found.append((route.value, "LiteLLM serves it only there"))
            elif decisions - {Decision.PYTHON}:
                found.append((route.value, f"{RUST_SWITCH} is set in the environment: unset it"))
    except (AttributeError, TypeError, ValueError) as exc:
        raise CatalogMoved(f"its Rust bridge's catalog changed ({type(exc).__name__})") from exc
    return found


def _contexts(catalog: Any, route: Any, provider: str, litellm_model: str) -> Iterator[Any]:
    """The requests that can tell the route's rules apart: each target and model name a rule names, and one
    feature of each kind (the features that the same rules name behave alike)."""
    own = [rule for rule in catalog.RULES if rule.route is route]
    feature_sets = [rule.features for rule in own if rule.features is not None]
    kinds = {tuple(feature in named for named in feature_sets): feature for feature in catalog.Feature}
    features = [frozenset(), *(frozenset({feature}) for feature in kinds.values())]
    targets = {None, *(target for rule in own for target in rule.targets or ())}
    named = {name for rule in own for name in rule.models or ()}
    names = {None, *({litellm_model, litellm_model.split("/", 1)[-1]} & named)}
    providers = {provider, *(TOKENIZERS if route.value in ("token_counter", "tokenizer") else ())}
    for each in providers:
        for name in names:
            for target in targets:
                for feature in features:
                    yield catalog.RouteContext(
                        route, provider=each, model=name, target=target, features=feature
                    )
