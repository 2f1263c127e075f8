"""The coordinator's side of a Flower deployment: start our Flower app on a SuperLink, follow it, stop it.

The ServerApp (learners/federated/flower/server_app.py) runs our Coordinator inside
the SuperLink and prints one ``WORKBENCH-FEDERATION {json}`` line per event
(hello, each round, the final weights, an error); `FlowerRun.events` reads them
with ``flwr log <run-id> <connection> --stream``. Everything goes through the
``flwr`` command line, as an operator would: ``flwr run ... --format json`` for
the run id, ``flwr stop`` to stop it.

The connection is written to ``$FLWR_HOME/config.toml`` under one name
(``workbench``): the SuperLink's Control API address and either its CA
certificate (TLS) or ``insecure = true`` (tests on loopback only).
"""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

APP_DIR = Path(__file__).resolve().parent / "flower"
CONNECTION = "workbench"
EVENT_PREFIX = "WORKBENCH-FEDERATION "  # as server_app.EVENT_PREFIX (that module imports flwr)


class FlowerRunError(RuntimeError):
    """A `flwr` command failed; the message says which and what it printed."""


def flwr_binary() -> str:
    return str(Path(sys.executable).parent / "flwr")


def flower_home_write(home: Path, *, address: str, root_certificates: str = "") -> Path:
    """Write the `flwr` connection `workbench` under `home` (FLWR_HOME); returns the config file."""
    home.mkdir(parents=True, exist_ok=True)
    lines = ["[superlink]", f'default = "{CONNECTION}"', "", f"[superlink.{CONNECTION}]",
             f"address = {json.dumps(address)}"]
    if root_certificates:
        lines.append(f"root-certificates = {json.dumps(str(root_certificates))}")
    else:
        lines.append("insecure = true")
    path = home / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_config_text(values: dict[str, Any]) -> str:
    """`flwr run --run-config` text: space-separated TOML ``key=value`` pairs (strings quoted)."""
    return " ".join(f"{key}={json.dumps(value)}" for key, value in values.items())


def run_config_for(*, federation: str, sites: list[str], plan: dict[str, Any], weights: bytes | None = None,
                   hello_timeout: float = 60.0, poll_seconds: float = 0.05,
                   payload_bytes: bool = False) -> dict[str, Any]:
    """The ServerApp's run-config (see flower/pyproject.toml); `payload_bytes`: every message's bytes in the log."""
    # flwr's --run-config parser takes no escaped quotes: JSON travels as base64, site names (slugs) as a list
    return {"federation": federation, "sites": ",".join(sites),
            "plan": base64.b64encode(json.dumps(plan).encode()).decode("ascii"),
            "weights": base64.b64encode(weights).decode("ascii") if weights else "",
            "hello-timeout": float(hello_timeout), "poll-seconds": float(poll_seconds),
            "payload-bytes": bool(payload_bytes)}


class FlowerRun:
    """One run of our Flower app, driven through the `flwr` command line with FLWR_HOME = `home`."""

    def __init__(self, home: Path, *, env: dict[str, str] | None = None, app_dir: Path = APP_DIR) -> None:
        self.home = Path(home)
        self.app_dir = app_dir
        self.run_id: int | None = None
        self._env = {**os.environ, **(env or {}), "FLWR_HOME": str(self.home)}
        bin_dir = str(Path(sys.executable).parent)
        if bin_dir not in self._env.get("PATH", "").split(os.pathsep):
            self._env["PATH"] = bin_dir + os.pathsep + self._env.get("PATH", "")
        self._log: subprocess.Popen[str] | None = None

    def _flwr(self, *argv: str, timeout: float = 120.0) -> str:
        out = subprocess.run([flwr_binary(), *argv], env=self._env, capture_output=True, text=True,
                             timeout=timeout)
        if out.returncode != 0:
            raise FlowerRunError(f"flwr {argv[0]} failed (exit {out.returncode}): "
                                 f"{(out.stdout + out.stderr).strip()[-2000:]}")
        return out.stdout

    def start(self, run_config: dict[str, Any]) -> int:
        """`flwr run`: the run id the SuperLink gave."""
        text = self._flwr("run", str(self.app_dir), CONNECTION, "--format", "json",
                          "--run-config", run_config_text(run_config))
        try:
            answer = json.loads(text[text.index("{"):])
        except ValueError:
            raise FlowerRunError(f"flwr run printed no JSON: {text[-2000:]}") from None
        if not answer.get("success") or not answer.get("run-id"):
            raise FlowerRunError(f"the SuperLink did not start the run: {answer}")
        self.run_id = int(answer["run-id"])
        return self.run_id

    def events(self) -> Iterator[dict[str, Any]]:
        """The ServerApp's events as they come, until its final or error event (or the log ends)."""
        if self.run_id is None:
            raise FlowerRunError("the run has not been started")
        self._log = subprocess.Popen([flwr_binary(), "log", str(self.run_id), CONNECTION, "--stream"],
                                     env=self._env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self._log.stdout is not None
        try:
            for line in self._log.stdout:
                at = line.find(EVENT_PREFIX)
                if at < 0:
                    continue
                event = json.loads(line[at + len(EVENT_PREFIX):])
                yield event
                if event.get("event") in ("final", "error"):
                    return
            raise FlowerRunError(f"the log of run {self.run_id} ended before the run did "
                                 f"(flwr log exit {self._log.wait()})")
        finally:
            self.close()

    def stop(self) -> None:
        if self.run_id is not None:
            self._flwr("stop", str(self.run_id), CONNECTION)

    def close(self) -> None:
        if self._log is not None and self._log.poll() is None:
            self._log.terminate()
            try:
                self._log.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._log.kill()
                self._log.wait()
        self._log = None
