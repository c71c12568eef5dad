from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aiohttp_memproxy.config.exposure import exposure_problems
from aiohttp_memproxy.config.load import default_state_dir, load_settings
from aiohttp_memproxy.config.settings import ConfigError, Settings
from aiohttp_memproxy.resolve.memory import MemoryRouting
from tests.conftest import SHIPPED_CONFIG, base_config

SECRET = "fake-anthropic-value-never-printed-0123456789"  # a test value, not a key


def model(name: str, litellm_model: str, **params: Any) -> dict[str, Any]:
    return {"model_name": name, "litellm_params": {"model": litellm_model, **params}}


def errors_of(make_settings: Callable[..., Settings], doc: dict[str, Any] | str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        make_settings(doc)
    return list(caught.value.errors)


def test_shipped_config_loads_with_no_keys(tmp_path: Path) -> None:
    settings = load_settings(SHIPPED_CONFIG, {"HOME": str(tmp_path)})
    enabled = [m.name for m in settings.models if m.enabled]
    assert enabled == ["demo"]
    assert settings.master_key is None
    assert settings.gateway.port == 8764
    assert settings.gateway.host == "127.0.0.1"
    assert settings.gateway.state_dir == tmp_path / ".local/state/aiohttp-memproxy"
    assert settings.aliases["claude-sonnet-4-5-20250929"].target == "claude-sonnet-4-5"
    assert settings.aliases["claude-haiku-4-5-20251001"].target == "claude-haiku-4-5"
    patterns = {(r.pattern, r.user_id) for r in settings.routing.header_patterns}
    assert {
        ("^claude-cli", "claude-code"),
        ("^Claude Code", "claude-code"),
        ("^OpenAIClientImpl/Java", "pycharm-ai"),
        ("^anthropic-sdk-python", "anthropic-python"),
        ("^codex[_-]", "codex"),
        ("^GeminiCLI/", "gemini-cli"),
    } <= patterns
    router = MemoryRouting(settings.routing)
    for agent in ("codex_exec/0.169.0 (Debian 12; x86_64) dumb", "codex_cli_rs/0.169.0", "codex-tui/0.169.0"):
        assert router.decide({"user-agent": agent}).user_id == "codex"
    assert (
        router.decide({"user-agent": "GeminiCLI/0.61.0/gemini-2.5-pro (linux; x64)"}).user_id == "gemini-cli"
    )
    by_name = {m.name: m for m in settings.models}
    assert by_name["claude-sonnet-4-5"].supermemory
    assert not by_name["claude-sonnet-4-5-direct"].supermemory
    assert not by_name["gpt-4o"].supermemory


def test_shipped_config_with_keys_enables_every_model(tmp_path: Path) -> None:
    env = {
        "HOME": str(tmp_path),
        "ANTHROPIC_API_KEY": "a",
        "SUPERMEMORY_API_KEY": "s",
        "OPENAI_API_KEY": "o",
        "GEMINI_API_KEY": "g",
        "MEMPROXY_MASTER_KEY": "m" * 32,
    }
    settings = load_settings(SHIPPED_CONFIG, env)
    assert all(m.enabled for m in settings.models)
    assert settings.master_key == "m" * 32
    sonnet = next(m for m in settings.models if m.name == "claude-sonnet-4-5")
    assert sonnet.params["extra_headers"] == {"x-supermemory-api-key": "s"}
    assert sonnet.params["api_key"] == "a"
    assert not [w for w in settings.warnings if w.event != "config_keys_ignored"]


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            base_config(
                model_list=[
                    model("a", "openai/a"),
                    model("b", "openai/b"),
                    model("c", "gpt4"),
                ]
            ),
            "model_list[2].litellm_params.model: expected 'provider/name', got 'gpt4'",
        ),
        (
            base_config(model_list=[{"litellm_params": {"model": "openai/x"}}]),
            "model_list[0].model_name: required",
        ),
        (
            base_config(model_list=[{"model_name": "x"}]),
            "model_list[0].litellm_params: required",
        ),
        (
            base_config(
                model_list=[
                    {**model("a", "openai/a"), "model_info": {"id": "one"}},
                    {**model("b", "openai/b"), "model_info": {"id": "one"}},
                ]
            ),
            "model_list[1].model_info.id: deployment id 'one' is already model_list[0]'s",
        ),
        (
            base_config(
                model_list=[model("a", "openai/a"), {**model("b", "openai/b"), "model_info": {"id": "a/0"}}]
            ),
            "model_list[1].model_info.id: deployment id 'a/0' is already model_list[0]'s",
        ),
        (
            base_config(
                router_settings={"model_group_alias": {"fast": "demo"}, "fallbacks": [{"demo": ["fast"]}]}
            ),
            "router_settings.fallbacks[0].demo: fallback 'fast' is an alias: "
            "name the model_name it stands for",
        ),
        (
            base_config(router_settings={"fallbacks": [{"demo": ["nope"]}]}),
            "router_settings.fallbacks[0].demo: fallback unknown model 'nope'",
        ),
        (
            base_config(litellm_settings={"context_window_fallbacks": [{"gone": ["demo"]}]}),
            "litellm_settings.context_window_fallbacks[0].gone: unknown model 'gone'",
        ),
        (
            base_config(router_settings={"routing_strategy": "fastest"}),
            "router_settings.routing_strategy: Input should be 'simple-shuffle', 'least-busy', "
            "'usage-based-routing', 'usage-based-routing-v2', 'latency-based-routing' "
            "or 'cost-based-routing'",
        ),
        (
            base_config(router_settings={"allowed_fails": -1}),
            "router_settings.allowed_fails: Input should be greater than or equal to 0",
        ),
        (
            base_config(model_list=[{**model("a", "openai/a"), "model_info": {"supermemory": "maybe"}}]),
            "model_list[0].model_info.supermemory: Input should be a valid boolean, "
            "unable to interpret input",
        ),
        (
            base_config(
                user_id_mappings={
                    "header_patterns": [{"header": "user-agent", "pattern": "(", "user_id": "x"}]
                }
            ),
            "user_id_mappings.header_patterns[0].pattern: invalid regular expression: "
            "missing ), unterminated subpattern at position 0",
        ),
        (
            base_config(
                user_id_mappings={
                    "header_patterns": [{"header": "user-agent", "pattern": "^x", "user_id": "bad id!"}]
                }
            ),
            "user_id_mappings.header_patterns[0].user_id: invalid user id: expected 1-128 characters "
            "of A-Z a-z 0-9 . _ : @ -",
        ),
        (
            base_config(user_id_mappings={"default_user_id": "x" * 129}),
            "user_id_mappings.default_user_id: invalid user id: "
            "expected 1-128 characters of A-Z a-z 0-9 . _ : @ -",
        ),
        (
            base_config(
                user_id_mappings={
                    "header_patterns": [
                        {"header": "User-Agent", "pattern": "^a", "user_id": "x"},
                        {"header": "user-agent", "pattern": "^b", "user_id": "y"},
                        {"header": "user-agent", "pattern": "^a", "user_id": "z"},
                    ]
                }
            ),
            "user_id_mappings.header_patterns[2]: duplicate (header, pattern) of header_patterns[0]",
        ),
        (base_config(user_id_mappings={"custom_hedaer": "x"}), "user_id_mappings.custom_hedaer: unknown key"),
        (base_config(memproxy={"prot": 1}), "memproxy.prot: unknown key"),
        (base_config(memproxy={"port": 70000}), "memproxy.port: Input should be less than or equal to 65535"),
        (
            base_config(memproxy={"log_format": "xml"}),
            "memproxy.log_format: Input should be 'auto', 'console' or 'json'",
        ),
        (
            base_config(router_settings={"model_group_alias": {"fast": "nope"}}),
            "router_settings.model_group_alias.fast: unknown model 'nope'",
        ),
        (
            base_config(router_settings={"model_group_alias": {"demo": "demo"}}),
            "router_settings.model_group_alias.demo: the alias shadows a model_list entry of the same name",
        ),
        (
            base_config(memproxy={"host": "os.environ/MEMPROXY_TEST_UNSET_HOST"}),
            "memproxy.host: environment variable MEMPROXY_TEST_UNSET_HOST is not set",
        ),
        (
            base_config(litellm_settings={"num_retries": -1}),
            "litellm_settings.num_retries: Input should be greater than or equal to 0",
        ),
        ("- just\n- a list\n", "expected a mapping at the top level, got list"),
    ],
)
def test_config_errors_name_their_key_path(
    make_settings: Callable[..., Settings], doc: dict[str, Any] | str, expected: str
) -> None:
    assert expected in errors_of(make_settings, doc)


def test_every_error_is_reported_at_once(make_settings: Callable[..., Settings]) -> None:
    doc = base_config(
        model_list=[model("a", "gpt4"), model("b", "claude")],
        memproxy={"port": 0},
    )
    errors = errors_of(make_settings, doc)
    assert len(errors) == 3
    assert any(e.startswith("model_list[0].litellm_params.model") for e in errors)
    assert any(e.startswith("model_list[1].litellm_params.model") for e in errors)
    assert any(e.startswith("memproxy.port") for e in errors)


def test_custom_llm_provider_allows_a_bare_model_name(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(
        base_config(
            model_list=[model("x", "my-model", custom_llm_provider="hosted_vllm", api_base="http://h")]
        )
    )
    assert settings.models[0].provider == "hosted_vllm"


def test_yaml_syntax_error_names_the_position_and_not_the_line(
    make_settings: Callable[..., Settings],
) -> None:
    text = f"model_list:\n  - model_name: x\n    litellm_params: {{model: openai/x, api_key: {SECRET}\n"
    errors = errors_of(make_settings, text)
    assert len(errors) == 1
    assert errors[0].startswith("invalid YAML at line")
    assert SECRET not in errors[0]


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path / "nope.yaml", {})
    assert caught.value.errors == ("cannot read the file: No such file or directory",)


def test_no_secret_in_errors_or_repr(make_settings: Callable[..., Settings]) -> None:
    good = base_config(
        model_list=[
            model("a", "anthropic/x", api_key=SECRET, extra_headers={"x-supermemory-api-key": SECRET})
        ],
        general_settings={"master_key": SECRET},
    )
    settings = make_settings(good)
    assert SECRET not in repr(settings)
    assert SECRET not in repr(settings.models[0])
    bad = {**good, "memproxy": {"port": "x"}}
    with pytest.raises(ConfigError) as caught:
        make_settings(bad)
    assert SECRET not in str(caught.value)
    wrong_type = base_config(model_list=[model("a", "anthropic/x", api_key=["not", SECRET])])
    with pytest.raises(ConfigError) as caught:
        make_settings(wrong_type)
    assert SECRET not in str(caught.value)


def test_environ_resolved_in_nested_dicts_and_lists(make_settings: Callable[..., Settings]) -> None:
    doc = base_config(
        model_list=[
            model(
                "sm",
                "anthropic/claude",
                api_base="https://api.supermemory.ai/v3/api.anthropic.com",
                api_key="os.environ/TEST_ANTHROPIC",
                extra_headers={"x-supermemory-api-key": "os.environ/TEST_SM", "x-plain": "plain"},
                metadata={
                    "tags": ["os.environ/TEST_TAG", "fixed"],
                    "deep": {"deeper": "os.environ/TEST_DEEP"},
                },
            )
        ]
    )
    env = {"TEST_ANTHROPIC": "ak", "TEST_SM": "smk", "TEST_TAG": "tag1", "TEST_DEEP": "d"}
    settings = make_settings(doc, env)
    params = settings.models[0].params
    assert params["api_key"] == "ak"
    assert params["extra_headers"] == {"x-supermemory-api-key": "smk", "x-plain": "plain"}
    assert params["metadata"] == {"tags": ["tag1", "fixed"], "deep": {"deeper": "d"}}
    assert settings.models[0].enabled


def test_unset_variable_disables_only_its_model(make_settings: Callable[..., Settings]) -> None:
    doc = base_config(
        model_list=[
            model("ok", "openai/ok", api_key="os.environ/TEST_SET"),
            model("off", "anthropic/x", extra_headers={"x-supermemory-api-key": "os.environ/TEST_UNSET"}),
            model("empty", "openai/e", api_key="os.environ/TEST_EMPTY"),
        ]
    )
    settings = make_settings(doc, {"TEST_SET": "v", "TEST_EMPTY": ""})
    status = {m.name: m.missing_env for m in settings.models}
    assert status == {"ok": (), "off": ("TEST_UNSET",), "empty": ("TEST_EMPTY",)}
    disabled = [w.fields for w in settings.warnings if w.event == "model_disabled"]
    assert disabled == [
        {"model": "off", "missing_env": ["TEST_UNSET"]},
        {"model": "empty", "missing_env": ["TEST_EMPTY"]},
    ]


def test_environment_variables_section_feeds_resolution(make_settings: Callable[..., Settings]) -> None:
    doc = base_config(
        model_list=[model("x", "openai/x", api_key="os.environ/FROM_FILE")],
        environment_variables={"FROM_FILE": "file-value"},
    )
    assert make_settings(doc).models[0].params["api_key"] == "file-value"


def test_unimplemented_litellm_sections_load_with_one_warning(make_settings: Callable[..., Settings]) -> None:
    doc = base_config(
        general_settings={
            "master_key": "sk-0123456789abcdefXYZ",
            "database_url": "os.environ/DATABASE_URL",
            "alerting": ["slack"],
        },
        litellm_settings={
            "drop_params": True,
            "cache": True,
            "cache_params": {"type": "redis", "host": "os.environ/REDIS_HOST"},
            "success_callback": ["langfuse"],
            "callbacks": ["otel"],
        },
        router_settings={"routing_strategy": "simple-shuffle", "redis_host": "os.environ/REDIS_HOST"},
        mcp_servers={"zapier": {"url": "https://example.invalid/mcp"}},
        otel={"exporter": "console"},
        guardrails=[{"guardrail_name": "x"}],
        credential_list=[],
    )
    doc["model_list"][0].update({"tpm": 1000, "rpm": 10})
    settings = make_settings(doc)
    ignored = [w for w in settings.warnings if w.event == "config_keys_ignored"]
    assert len(ignored) == 1
    assert set(ignored[0].fields["keys"]) == {
        "mcp_servers",
        "otel",
        "guardrails",
        "credential_list",
        "general_settings.database_url",
        "general_settings.alerting",
        "litellm_settings.cache",
        "litellm_settings.cache_params",
        "litellm_settings.success_callback",
        "litellm_settings.callbacks",
        "router_settings.redis_host",
        "model_list[0].tpm",
        "model_list[0].rpm",
    }
    assert settings.litellm.drop_params is True
    assert settings.master_key == "sk-0123456789abcdefXYZ"


def test_real_world_litellm_config_loads(make_settings: Callable[..., Settings]) -> None:
    text = """
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: azure/gpt-4o
      api_base: os.environ/AZURE_API_BASE
      api_key: os.environ/AZURE_API_KEY
      api_version: "2024-08-01-preview"
      rpm: 6
  - model_name: claude-3-7
    litellm_params:
      model: anthropic/claude-3-7-sonnet-20250219
      api_key: os.environ/ANTHROPIC_API_KEY
      thinking: {type: enabled, budget_tokens: 1024}
  - model_name: local
    litellm_params:
      model: hosted_vllm/qwen
      api_base: http://localhost:8000/v1
      temperature: 0.2
      timeout: 30
      max_retries: 1
  - model_name: "anthropic/*"
    litellm_params:
      model: "anthropic/*"
      api_key: os.environ/ANTHROPIC_API_KEY
litellm_settings:
  drop_params: true
  num_retries: 3
  request_timeout: 120
  set_verbose: false
  json_logs: true
router_settings:
  routing_strategy: usage-based-routing-v2
  model_group_alias: {"gpt-4": "gpt-4o", "claude": {"model": "claude-3-7", "hidden": true}}
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
  database_url: os.environ/DATABASE_URL
  store_model_in_db: true
environment_variables:
  LITELLM_LOG: ERROR
"""
    settings = make_settings(text, {"ANTHROPIC_API_KEY": "k"})
    by_name = {m.name: m for m in settings.models}
    assert by_name["local"].enabled
    assert by_name["local"].params["temperature"] == 0.2
    assert by_name["claude-3-7"].params["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert by_name["gpt-4o"].missing_env == ("AZURE_API_BASE", "AZURE_API_KEY")
    assert settings.aliases["claude"].hidden
    assert settings.litellm.num_retries == 3


def test_supermemory_detection_and_override(make_settings: Callable[..., Settings]) -> None:
    sm_base = "https://api.supermemory.ai/v3/api.anthropic.com"
    doc = base_config(
        model_list=[
            model("detected", "anthropic/a", api_base=sm_base),
            {**model("forced-off", "anthropic/a", api_base=sm_base), "model_info": {"supermemory": False}},
            {
                **model("forced-on", "openai/a", api_base="http://127.0.0.1:9"),
                "model_info": {"supermemory": True},
            },
            model("plain", "anthropic/a"),
        ]
    )
    flags = {m.name: m.supermemory for m in make_settings(doc).models}
    assert flags == {"detected": True, "forced-off": False, "forced-on": True, "plain": False}


def test_header_names_are_lowercased_and_patterns_case_insensitive(
    make_settings: Callable[..., Settings],
) -> None:
    doc = base_config(
        user_id_mappings={
            "custom_header": "X-Memory-User",
            "header_patterns": [{"header": "User-Agent", "pattern": "^Claude", "user_id": "c"}],
        }
    )
    routing = make_settings(doc).routing
    assert routing.custom_header == "x-memory-user"
    assert routing.header_patterns[0].header == "user-agent"
    assert routing.header_patterns[0].regex.search("claude-cli/2")


def test_cli_overrides_are_validated(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings().with_overrides(host="::1", port=9000, state_dir=tmp_path, log_level=None)
    gateway = settings.gateway
    assert (gateway.host, gateway.port, gateway.state_dir) == ("::1", 9000, tmp_path)
    with pytest.raises(ConfigError) as caught:
        settings.with_overrides(port=0)
    assert caught.value.errors[0].startswith("--port:")


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        (
            {"STATE_DIRECTORY": "/var/lib/aiohttp-memproxy", "XDG_STATE_HOME": "/x"},
            "/var/lib/aiohttp-memproxy",
        ),
        ({"STATE_DIRECTORY": "/a:/b"}, "/a"),
        ({"XDG_STATE_HOME": "/x/state", "HOME": "/home/u"}, "/x/state/aiohttp-memproxy"),
        ({"HOME": "/home/u"}, "/home/u/.local/state/aiohttp-memproxy"),
    ],
)
def test_default_state_dir(environ: dict[str, str], expected: str) -> None:
    assert default_state_dir(environ) == Path(expected)


def test_state_dir_from_config_wins_over_environment(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(base_config(memproxy={"state_dir": "/srv/jar"}))
    assert settings.gateway.state_dir == Path("/srv/jar")


@pytest.mark.parametrize(
    ("host", "key", "errors", "warnings"),
    [
        ("127.0.0.1", None, 0, 1),
        ("127.0.0.1", "sk-1234", 0, 1),
        ("localhost", "abc12", 0, 1),
        ("::1", "sk-a-long-enough-key-123", 0, 0),
        ("0.0.0.0", None, 1, 0),
        ("0.0.0.0", "sk-1234", 1, 0),
        ("192.168.1.10", "k3y-9", 1, 0),
        ("0.0.0.0", "sk-a-long-enough-key-123", 0, 0),
    ],
)
def test_exposure(
    make_settings: Callable[..., Settings], host: str, key: str | None, errors: int, warnings: int
) -> None:
    doc = base_config(memproxy={"host": host}, general_settings={"master_key": key} if key else {})
    found_errors, found_warnings = exposure_problems(make_settings(doc))
    assert (len(found_errors), len(found_warnings)) == (errors, warnings)
    assert all(key not in message for message in found_errors + found_warnings if key)


def test_master_key_variable_unset_is_a_warning(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(base_config(general_settings={"master_key": "os.environ/TEST_NO_MASTER"}))
    assert settings.master_key is None
    assert [w.fields for w in settings.warnings if w.event == "master_key_unset"] == [
        {"variable": "TEST_NO_MASTER"}
    ]
