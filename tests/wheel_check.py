"""``make wheel-check``: the wheel alone serves, with no checkout around it (CI runs it after the tests).

It builds the wheel from this checkout, installs it into a fresh venv outside the repo with the runtime lock
(hashes required), and then, as a new user would, with a temporary HOME in an empty directory and no provider
key: ``memproxy init``, ``memproxy serve``, a chat completion to the demo model through the official OpenAI
SDK with the master key ``init`` generated, and a second ``memproxy init``, which must change nothing. Not a
pytest test: installing the lock needs the package index, and the tests stay on loopback.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

from tests.bench import free_port

REPO = Path(__file__).resolve().parent.parent
PACKAGE_DATA = (
    "aiohttp_memproxy/server/ui.html",
    "aiohttp_memproxy/install/files/config.yaml",
    "aiohttp_memproxy/install/files/memproxy.env.example",
    "aiohttp_memproxy/install/files/aiohttp-memproxy.service",
    "aiohttp_memproxy/install/files/aiohttp-memproxy-user.service",
)
ASK = """
import sys
from openai import OpenAI
client = OpenAI(base_url=sys.argv[1], api_key=sys.argv[2], max_retries=0)
answer = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hi"}])
print(answer.choices[0].message.content)
"""


def step(
    what: str, command: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    print(f"wheel-check: {what}", flush=True)
    done = subprocess.run(command, text=True, capture_output=True, check=False, cwd=cwd, env=env)
    if done.returncode != 0:
        sys.exit(f"wheel-check: {what} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="memproxy-wheel-") as tmp:
        root = Path(tmp)
        dist, venv, home, work = root / "dist", root / "venv", root / "home", root / "work"
        for directory in (home, work):
            directory.mkdir()
        build = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
        step("build the wheel", [*build, "--wheel-dir", str(dist), str(REPO)])
        [wheel] = dist.glob("aiohttp_memproxy-*.whl")
        names = set(zipfile.ZipFile(wheel).namelist())
        missing = [name for name in PACKAGE_DATA if name not in names]
        if missing:
            sys.exit(f"wheel-check: {wheel.name} lacks {', '.join(missing)}")
        step("make a fresh venv", [sys.executable, "-m", "venv", str(venv)])
        python = venv / "bin" / "python"
        pip = [str(python), "-m", "pip", "install", "--quiet"]
        step(
            "install the runtime lock",
            [*pip, "--require-hashes", "--no-deps", "-r", str(REPO / "requirements.lock")],
        )
        step(f"install {wheel.name}", [*pip, "--no-deps", str(wheel)])
        env = {
            "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
            "HOME": str(home),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        }
        memproxy = str(venv / "bin" / "memproxy")
        step("memproxy init", [memproxy, "init"], cwd=work, env=env)
        directory = home / ".config" / "aiohttp-memproxy"
        before = {path: path.read_bytes() for path in (directory / "config.yaml", directory / "env")}
        key = next(
            line.split("=", 1)[1]
            for line in before[directory / "env"].decode().splitlines()
            if line.startswith("MEMPROXY_MASTER_KEY=")
        )
        port = free_port()
        print("wheel-check: memproxy serve", flush=True)
        log = (root / "serve.log").open("w")
        server = subprocess.Popen(
            [memproxy, "serve", "--port", str(port)],
            cwd=work,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/readiness", timeout=2):
                        break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        log.flush()
                        output = (root / "serve.log").read_text()
                        sys.exit(f"wheel-check: memproxy serve did not get ready:\n{output}")
                    time.sleep(0.5)
            answer = step(
                "a chat completion through the OpenAI SDK",
                [str(python), "-c", ASK, f"http://127.0.0.1:{port}/v1", key],
                cwd=work,
                env=env,
            )
            if "demo model" not in answer.stdout:
                sys.exit(f"wheel-check: unexpected answer {answer.stdout!r}")
        finally:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(timeout=60)
            log.close()
        step("memproxy init again", [memproxy, "init"], cwd=work, env=env)
        after = {path: path.read_bytes() for path in before}
        if after != before:
            sys.exit("wheel-check: a second memproxy init changed a file")
    print(f"wheel-check: passed ({wheel.name}: init, serve, the demo model through the SDK, init again)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
