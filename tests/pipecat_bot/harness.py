"""Start the test bot (``python -m tests.pipecat_bot``) as a subprocess and read its counters.

Used by ``tests/unit/test_pipecat_bot.py`` (CPython client) and ``tests/e2e/test_pipecat.py``
(the demo page in real browsers). Waits are for conditions (``READY`` on stdout), with a
generous deadline: CI runs on a busy 2-core machine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PIPECAT_MISSING = "pipecat-ai is not installed (./dev test installs the [pipecat] extra)"
START_TIMEOUT_S = 90.0  # importing pipecat (numpy, onnxruntime...) is slow on a busy machine


def pipecat_installed() -> bool:
    """Whether pipecat-ai is installed, found without importing it (see script.py: importing
    it replaces ``asyncio.wait_for`` in this process)."""
    return importlib.util.find_spec("pipecat") is not None


def load_frames_pb2() -> Any:
    """Pipecat's generated protobuf module (``pipecat/frames/protobufs/frames_pb2.py``), the
    reference our decoder is tested against, loaded from its file on its own: it needs only
    the ``protobuf`` package, and ``pipecat/__init__`` (which patches asyncio) never runs."""
    spec = importlib.util.find_spec("pipecat")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "frames" / "protobufs" / "frames_pb2.py"
    module_spec = importlib.util.spec_from_file_location("pipecat_reference_frames_pb2", path)
    if module_spec is None or module_spec.loader is None:
        return None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class BotProcess:
    proc: subprocess.Popen
    ws_url: str
    stats_url: str
    origin: str
    stderr_path: Path
    stdout_lines: list[str] = field(default_factory=list)

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.stats_url + "/stats", timeout=10) as r:
            return json.load(r)

    def ring_checksum(self, samples: int) -> int:
        """The audio player's running checksum over the first ``samples`` samples the bot sent."""
        with urllib.request.urlopen(f"{self.stats_url}/ring_checksum?samples={samples}", timeout=10) as r:
            return json.load(r)["checksum"]

    def stderr_tail(self, n: int = 4000) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def start_bot(*, port: int | None = None, origin: str, extra_args: tuple[str, ...] = ()) -> BotProcess:
    """Start the bot on ``port`` (a free one if None) allowing ``origin``; wait for ``READY``."""
    port = port or free_port()
    stats_port = free_port()
    stderr_path = Path(tempfile.mkdtemp(prefix="pipecat_bot_")) / "bot.stderr"
    args = [sys.executable, "-m", "tests.pipecat_bot", "--port", str(port), "--stats-port", str(stats_port)]
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(
            [*args, "--origin", origin, *extra_args],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=dict(os.environ),
        )
    bot = BotProcess(proc, f"ws://127.0.0.1:{port}", f"http://127.0.0.1:{stats_port}", origin, stderr_path)
    ready = threading.Event()

    def read_stdout() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").strip()
            bot.stdout_lines.append(line)
            if line == "READY":
                ready.set()

    threading.Thread(target=read_stdout, daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready.wait(0.1):
        if proc.poll() is not None or time.monotonic() > deadline:
            why = f"exited with {proc.returncode}" if proc.poll() is not None else f"no READY in {START_TIMEOUT_S} s"
            bot.stop()
            raise RuntimeError(
                f"the Pipecat test bot did not start: {why}; stdout {bot.stdout_lines}\n{bot.stderr_tail()}"
            )
    return bot
