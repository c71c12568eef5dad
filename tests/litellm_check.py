"""``make litellm-check VERSION=x.y.z``: is a LiteLLM release fit to be this gateway's? A one-screen report.

In a scratch venv (``.litellm-check/<version>``, the repo's own venv untouched) it installs the dev lock as
locked, then that LiteLLM (pip moves what its requirements demand, and the report names each package that
moved), then the gateway itself (editable, without dependencies). Against that venv it runs:

- the seam's self-check: the gateway's changes to LiteLLM installed and taken back (``llm.patches``), and
  LiteLLM's Rust catalog asked for every provider of the shipped config (``llm.rust``);
- the tests that follow LiteLLM closely: the seam, the provider matrix, the Router, and the real CLIs
  (skipped, with their reason, where ``make cli-deps`` has not installed them); ``FULL=1`` runs every test;
- the bench's short form (``tests.bench --short``): the gateway's overhead served by that LiteLLM and by the
  pinned one (this repo's venv), measured in turns.

It exits non-zero when anything failed. Taking the release is then the four steps in docs/development.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
DEV_LOCK = REPO / "requirements-dev.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")
FOCUSED = (
    "tests/test_litellm_seam.py",
    "tests/test_providers.py",
    "tests/test_llm_router.py",
    "tests/test_real_clis.py",
)
SEAM_CHECK = """
import json, sys
from importlib import metadata
from aiohttp_memproxy.config.load import load_settings
from aiohttp_memproxy.llm import patches, providers
found = {"litellm": metadata.version("litellm"), "verified_on": patches.VERIFIED_ON}
try:
    with patches.installed():
        found["seam"] = "installed and taken back"
except patches.SeamError as exc:
    found["seam_error"] = str(exc)
settings = load_settings(sys.argv[1], {"STATE_DIRECTORY": sys.argv[2]})
found["unservable"] = providers.unservable(settings)
print(json.dumps(found))
"""


def run(
    command: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, text=True, capture_output=True, check=False, cwd=cwd, env=env)


def lock_entries() -> list[tuple[str | None, str, str]]:
    """The dev lock's entries: (name, version, the entry's text with its hashes); comments have no name."""
    found: list[tuple[str | None, str, str]] = []
    for entry in re.split(r"\n(?=[A-Za-z0-9])", DEV_LOCK.read_text()):
        match = PIN.match(entry)
        name = canonicalize_name(match.group(1)) if match else None
        found.append((name, match.group(2) if match else "", entry))
    return found


def locked_without_litellm(target: Path) -> None:
    """The dev lock minus LiteLLM's entry (hashes kept), written to ``target``."""
    target.write_text("\n".join(text for name, _, text in lock_entries() if name != "litellm") + "\n")


def installed(python: Path) -> dict[str, str]:
    listed = run([str(python), "-m", "pip", "list", "--format=json", "--exclude-editable"])
    return {canonicalize_name(p["name"]): p["version"] for p in json.loads(listed.stdout or "[]")}


def scratch_venv(version: str, log: list[str]) -> Path:
    venv = REPO / ".litellm-check" / version
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        lock = Path(tmp) / "locked.txt"
        locked_without_litellm(lock)
        steps = [
            ["-m", "pip", "install", "--quiet", "--require-hashes", "--no-deps", "-r", str(lock)],
            ["-m", "pip", "install", "--quiet", f"litellm=={version}"],
            ["-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "-e", str(REPO)],
        ]
        for step in steps:
            done = run([str(python), *step], cwd=REPO)
            if done.returncode != 0:
                log.append(done.stdout + done.stderr)
                raise SystemExit(f"litellm-check: could not build the scratch venv ({' '.join(step[2:5])})")
    return python


def pytest_summary(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if re.search(r"\d+ (passed|failed|error)", line)]
    return lines[-1].strip("= ") if lines else "no summary (see the log)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="litellm-check", description=__doc__)
    parser.add_argument("version", help="the LiteLLM release to check, e.g. 1.110.2")
    parser.add_argument("--full", action="store_true", help="every test, not only those that follow LiteLLM")
    parser.add_argument("--no-bench", action="store_true", help="skip the bench's short form")
    args = parser.parse_args(argv)
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    log: list[str] = []
    started = time.monotonic()
    python = scratch_venv(args.version, log)
    pinned = {name: version for name, version, _ in lock_entries() if name is not None}
    now = installed(python)
    moved = sorted(
        f"{name} {pinned[name]} -> {now.get(name, 'gone')}"
        for name in pinned
        if now.get(name) != pinned[name]
    )
    added = sorted(
        f"{name} {version}" for name, version in now.items() if name not in pinned and name != "pip"
    )
    failed = False
    report = [f"LiteLLM {args.version} for aiohttp-memproxy (scratch venv {python.parent.parent})", ""]
    report.append("Dependencies moved from the lock: " + (", ".join(moved) if moved else "none"))
    if added:
        report.append("New dependencies: " + ", ".join(added))

    with tempfile.TemporaryDirectory() as state:
        seam = run([str(python), "-c", SEAM_CHECK, str(REPO / "conf" / "config.yaml"), state], env=env)
    try:
        found = json.loads(seam.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        found = {"seam_error": (seam.stderr or seam.stdout).strip().splitlines()[-1:]}
    seam_ok = "seam" in found and not found.get("unservable")
    failed |= not seam_ok
    report.append(
        f"Seam self-check: {'ok' if 'seam' in found else 'FAILED: ' + str(found.get('seam_error'))}"
        f" (VERIFIED_ON {found.get('verified_on', '?')})"
    )
    problems = found.get("unservable") or []
    report.append("Shipped config's providers: " + ("all served in Python" if not problems else ""))
    report += [f"  FAILED: {problem}" for problem in problems]

    tests = [] if args.full else list(FOCUSED)
    result = run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], cwd=REPO, env=env)
    log.append(result.stdout[-20000:] + result.stderr[-5000:])
    failed |= result.returncode != 0
    scope = "every test" if args.full else "seam, providers, Router, real CLIs"
    report.append(f"Tests ({scope}): {pytest_summary(result.stdout)}")
    skipped = sorted(set(re.findall(r"SKIPPED \[\d+\] [^:]+:\d+: (.+)", result.stdout)))
    report += [f"  skipped: {reason}" for reason in skipped]
    report += [f"  {line}" for line in result.stdout.splitlines() if line.startswith("FAILED ")][:10]

    if not args.no_bench:
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            bench = run(
                [
                    sys.executable,
                    "-m",
                    "tests.bench",
                    "--short",
                    "--python",
                    str(python),
                    "--against",
                    sys.executable,
                    "--output",
                    out.name,
                ],
                cwd=REPO,
                env=env,
            )
        failed |= bench.returncode != 0
        report.append("Bench, short form (this LiteLLM as 'memproxy', the pinned one as 'pinned'):")
        report += ["  " + line for line in bench.stdout.splitlines() if line and not line.startswith("JSON")]
        if bench.returncode != 0:
            report.append("  FAILED: " + (bench.stderr.strip().splitlines() or ["?"])[-1])

    logfile = python.parent.parent / "check.log"
    logfile.write_text("\n".join(log))
    report += [
        "",
        f"{'FAILED' if failed else 'PASSED'} in {time.monotonic() - started:.0f} s; log: {logfile}",
    ]
    print("\n".join(report))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
