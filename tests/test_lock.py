"""The hash-locked install: setup.cfg and the lock files agree (CI fails when they do not), every pin carries
its sha256, and no machine's index settings are committed. Regenerate with ``make lock``."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import REPO

LOCK, DEV_LOCK = REPO / "requirements.lock", REPO / "requirements-dev.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", re.MULTILINE)


def declared(*extras: str) -> list[Requirement]:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    lines = config["options"]["install_requires"].splitlines()
    for extra in extras:
        lines += config["options.extras_require"][extra].splitlines()
    return [
        Requirement(line) for line in (line.strip() for line in lines) if line and not line.startswith("#")
    ]


def pins(lock: Path) -> dict[str, Version]:
    return {canonicalize_name(name): Version(version) for name, version in PIN.findall(lock.read_text())}


@pytest.mark.parametrize(
    ("lock", "extras"), [(LOCK, ()), (DEV_LOCK, ("test", "lint"))], ids=["runtime", "dev"]
)
def test_lock_satisfies_setup_cfg(lock: Path, extras: tuple[str, ...]) -> None:
    pinned = pins(lock)
    for requirement in declared(*extras):
        name = canonicalize_name(requirement.name)
        assert name in pinned, (
            f"{requirement} is declared in setup.cfg but not locked in {lock.name}: make lock"
        )
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{lock.name} pins {name}=={pinned[name]}, outside setup.cfg's {requirement}: make lock"
        )


def test_dev_lock_pins_the_runtime_as_the_runtime_lock_does() -> None:
    runtime, dev = pins(LOCK), pins(DEV_LOCK)
    assert {name: dev.get(name) for name in runtime} == runtime


@pytest.mark.parametrize("lock", [LOCK, DEV_LOCK], ids=["runtime", "dev"])
def test_every_pin_has_a_hash_and_no_index_is_committed(lock: Path) -> None:
    text = lock.read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n\n", 1)[-1] if "\n\n" in text else text)
    for entry in entries:
        match = PIN.match(entry.strip())
        if match:
            assert "--hash=sha256:" in entry, f"{match.group(1)} has no hash in {lock.name}"
    for forbidden in ("--index-url", "--extra-index-url", "--find-links", "file://"):
        assert forbidden not in text


def test_litellm_is_the_verified_one_and_bounded_below_its_next_minor() -> None:
    """The seam into LiteLLM is verified per version (``patches.VERIFIED_ON``): the lock pins that version,
    and a newer minor comes only by `make litellm-check` and `make lock`, on purpose."""
    from aiohttp_memproxy.llm.patches import VERIFIED_ON

    verified = Version(VERIFIED_ON)
    (litellm,) = [r for r in declared() if r.name == "litellm"]
    assert litellm.specifier.contains(verified)
    assert not litellm.specifier.contains(f"{verified.major}.{verified.minor + 1}.0")
    for lock in (LOCK, DEV_LOCK):
        assert pins(lock)["litellm"] == verified, f"{lock.name} pins another LiteLLM than VERIFIED_ON"


def test_every_package_the_gateway_imports_is_a_runtime_pin() -> None:
    """`make run` installs requirements.lock alone: a module the gateway imports from a package only the test
    lock has would start in tests and crash in service."""
    import ast
    import sys
    from importlib.metadata import packages_distributions

    distributions = packages_distributions()
    runtime = pins(LOCK)
    missing = set()
    for source in (REPO / "aiohttp_memproxy").glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "aiohttp_memproxy":
                    continue
                for distribution in distributions.get(top, [top]):
                    if canonicalize_name(distribution) not in runtime:
                        missing.add(f"{source.name}: {top} ({distribution})")
    assert not missing, f"imported but not in {LOCK.name}: {sorted(missing)}"
