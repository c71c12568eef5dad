"""Run inside a network namespace of its own (``unshare -rn``, by tests/test_service.py): a gateway bound to
0.0.0.0 with a strong master key, reloaded (SIGHUP) with configs a start would refuse, then with one it would
accept. Prints one JSON object per line: what each reload left the gateway accepting, and its log.

Inside the namespace nothing but its own ``lo`` exists, so a gateway on 0.0.0.0 is reachable from nowhere
else even while a bad reload would have opened it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

PORT = 8764  # the namespace's own: nothing else listens there
STRONG = "sk-netns-strong-master-key-0123456789"
NEXT = "sk-netns-next-strong-master-key-987654"
DEMO = [{"model_name": "demo", "litellm_params": {"model": "openai/demo", "mock_response": "hi"}}]
# What a start refuses on a non-loopback bind, each as its general_settings.
REFUSED: dict[str, dict[str, Any]] = {
    "no-key": {},
    "published-key": {"master_key": "sk-1234"},
    "short-key": {"master_key": "short-key"},
    "unset-variable": {"master_key": "os.environ/NETNS_UNSET_VARIABLE"},
}


def status(port: int, key: str | None) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models")  # loopback
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def write(config: Path, general: dict[str, Any]) -> None:
    doc: dict[str, Any] = {"model_list": DEMO, "memproxy": {"host": "0.0.0.0", "port": PORT}}
    if general:
        doc["general_settings"] = general
    config.write_text(yaml.safe_dump(doc))


def main() -> int:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    work = Path(tempfile.mkdtemp())
    config = work / "config.yaml"
    write(config, {"master_key": "os.environ/MEMPROXY_MASTER_KEY"})
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(work / "notify.sock"))
    notify.settimeout(60)
    env = {**os.environ, "MEMPROXY_MASTER_KEY": STRONG, "NOTIFY_SOCKET": str(work / "notify.sock")}
    env.pop("NETNS_UNSET_VARIABLE", None)
    gateway = subprocess.Popen(
        [sys.executable, "-m", "aiohttp_memproxy", "serve", "--config", str(config), "--log-format", "json",
         "--state-dir", str(work / "state")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        assert "READY=1" in notify.recv(4096).decode()
        print(
            json.dumps({"step": "start", "without_key": status(PORT, None), "with_key": status(PORT, STRONG)})
        )
        for name, general in [*REFUSED.items(), ("next-strong-key", {"master_key": NEXT})]:
            write(config, general)
            gateway.send_signal(signal.SIGHUP)
            assert notify.recv(4096).decode().startswith("RELOADING=1")
            assert "READY=1" in notify.recv(4096).decode()
            print(
                json.dumps(
                    {
                        "step": name,
                        "without_key": status(PORT, None),
                        "published_key": status(PORT, "sk-1234"),
                        "with_key": status(PORT, STRONG),
                        "next_key": status(PORT, NEXT),
                    }
                )
            )
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(30)
    finally:
        if gateway.poll() is None:
            gateway.kill()
        output, _ = gateway.communicate()
    for line in output.splitlines():
        if line.startswith("{"):
            print(json.dumps({"step": "log", "line": json.loads(line)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
