"""Load benchmark: concurrent CPython clients against one dev server on loopback.

Starts ``serve.py`` on a free port, then ``--clients`` websocket clients (aiohttp, speaking
the pyclient.v1 framing with ``pyclient.frames``) each run ``--sessions`` sessions, a mix of
``chat`` and ``voice`` with small parameters, half of the clients under credit flow control.
Every client answers tool calls (calculator, clock), closes after ``done``, and then checks
the session against the server's ``/stats``: the SHA-256 of the text it received equals the
server's ``text_sha256``, audio samples and ``audio_sha256`` are equal, every tool result
was as expected, no frame was malformed or missing, and the close was clean.

Bounded and self-stopping: at most ``--clients`` x ``--sessions`` sessions, no new session after
``--seconds``, each session at most ``--session-timeout`` s. Meanwhile a sampler thread times
``GET /stats`` and reads the server's RSS (``/proc/PID/status`` VmRSS) every
``--interval`` s. Traffic goes only to 127.0.0.1. Writes docs/benchmarks/load.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from devserver.harness import ROOT, start_server
from pyclient.flow import CreditWindow
from pyclient.frames import (
    AudioFrame,
    BytesSource,
    ControlFrame,
    FrameDecoder,
    Malformed,
    Sequencer,
    TextFrame,
    ToolCallFrame,
)

OUT = ROOT / "docs" / "benchmarks"
SUBPROTOCOLS = {"credit": ("pyclient.v1.credit", "pyclient.v1"), "plain": ("pyclient.v1",)}
MIX = (
    ("chat", "scenario=chat&turns=2&tokens=60&burst=0.4&pause=0.2"),
    ("voice", "scenario=voice&seconds=2&rate=16000"),
)


@dataclass
class SessionResult:
    client: int
    scenario: str
    subprotocol: str | None = None
    conn_id: int | None = None
    frames_in: int = 0
    bytes_in: int = 0
    frames_out: int = 0
    bytes_out: int = 0
    tool_calls: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def calculator(expression: str) -> float:
    """The scenario's calculator calls are ``a * b``; nothing else is evaluated."""
    a, b = expression.split("*")
    return int(a) * int(b)


def run_tool(name: str, arguments_json: str) -> tuple[bool, Any, dict[str, str] | None]:
    try:
        args = json.loads(arguments_json)
        if name == "calculator":
            return True, calculator(args["expression"]), None
        if name == "clock":
            return True, time.strftime("%Y-%m-%dT%H:%M:%S%z"), None
        return False, None, {"type": "unknown_tool", "message": f"no tool {name!r}"}
    except Exception as exc:
        return False, None, {"type": "tool_error", "message": repr(exc)}


async def one_session(
    http: aiohttp.ClientSession, base: str, client: int, k: int, credit: bool, timeout: float
) -> SessionResult:
    scenario, query = MIX[(client + k) % len(MIX)]
    res = SessionResult(client, scenario)
    t0 = time.monotonic()
    try:
        await asyncio.wait_for(_converse(http, base, f"{query}&seed={client * 100 + k}", credit, res), timeout)
    except TimeoutError:
        res.problems.append(f"session did not end within {timeout:g} s")
    except Exception as exc:
        res.problems.append(f"client failed: {exc!r}"[:300])
    res.seconds = time.monotonic() - t0
    return res


async def _converse(http: aiohttp.ClientSession, base: str, query: str, credit: bool, res: SessionResult) -> None:
    decoder, seq = FrameDecoder(), Sequencer()
    text, pcm_sha, samples = hashlib.sha256(), hashlib.sha256(), 0
    calls: dict[str, dict[str, str]] = {}
    expected_seq = 0
    done = False
    protocols = SUBPROTOCOLS["credit" if credit else "plain"]
    async with http.ws_connect(base + "ws?" + query, protocols=protocols) as ws:
        res.subprotocol = ws.protocol
        window = CreditWindow() if ws.protocol == "pyclient.v1.credit" else None

        async def send(frame: bytes) -> None:
            res.frames_out += 1
            res.bytes_out += len(frame)
            await ws.send_bytes(frame)

        if window is not None:
            await send(seq.credit(window.initial()))
        await send(seq.control("hello", client="bench.load", transport="aiohttp", tools=["calculator", "clock"]))
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.BINARY:
                res.problems.append(f"unexpected {msg.type.name} message")
                continue
            res.bytes_in += len(msg.data)
            if window is not None:
                window.on_received(len(msg.data))
                if window.in_flight < 0:
                    res.problems.append("server sent past its credit")
            for frame in decoder.feed_message(BytesSource(msg.data)):
                res.frames_in += 1
                if isinstance(frame, Malformed):
                    res.problems.append(f"malformed frame: {frame.reason}")
                    continue
                if frame.seq != expected_seq:
                    res.problems.append(f"sequence gap: {frame.seq} after {expected_seq - 1}")
                expected_seq = frame.seq + 1
                if isinstance(frame, TextFrame):
                    text.update(frame.data)
                elif isinstance(frame, AudioFrame):
                    samples += frame.samples
                    pcm_sha.update(frame.pcm)
                elif isinstance(frame, ToolCallFrame):
                    call = calls.setdefault(frame.call_id, {"name": "", "args": ""})
                    call["name"] = frame.name or call["name"]
                    call["args"] += frame.arguments_delta
                    if frame.final:
                        res.tool_calls += 1
                        ok, result, error = run_tool(call["name"], calls.pop(frame.call_id)["args"])
                        await send(seq.tool_result(frame.call_id, ok=ok, result=result, error=error))
                elif isinstance(frame, ControlFrame):
                    if frame.type == "hello":
                        res.conn_id = frame.fields.get("connection_id")
                    elif frame.type == "error":
                        res.problems.append(f"server error: {frame.fields}")
                    elif frame.type == "done":
                        done = True
            if window is not None and (grant := window.on_consumed(len(msg.data))):
                await send(seq.credit(grant))
            if done:
                await ws.close()
    if not done:
        res.problems.append(f"no 'done' (close code {ws.close_code})")
    if ws.close_code != 1000:
        res.problems.append(f"close code {ws.close_code}")
    if res.conn_id is None:
        res.problems.append("no hello")
        return
    st = await _server_stats(http, base, res.conn_id)
    if st["text_sha256"] != text.hexdigest():
        res.problems.append("text differs from what the server sent (sha256)")
    if st["audio_samples_sent"] != samples or st["audio_sha256"] != pcm_sha.hexdigest():
        res.problems.append(f"audio differs: {samples} samples received, {st['audio_samples_sent']} sent")
    sent, got = st["tool_calls_sent"], st["tool_results_received"]
    if got != sent or st["tool_results_as_expected"] != sent:
        res.problems.append(f"tool results: {got} of {sent} arrived, {st['tool_results_as_expected']} as expected")
    if st["errors"]:
        res.problems.append(f"server errors: {st['errors'][:3]}")
    if st["close_code"] != 1000:
        res.problems.append(f"server recorded close code {st['close_code']}")


async def _server_stats(http: aiohttp.ClientSession, base: str, conn_id: int) -> dict[str, Any]:
    for _ in range(200):  # the server records the end right after the closing handshake
        async with http.get(f"{base}stats?id={conn_id}") as r:
            if r.status != 200:
                raise RuntimeError(f"/stats?id={conn_id}: {r.status} {(await r.text())[:200]}")
            st = await r.json()
        if not st["open"]:
            break
        await asyncio.sleep(0.05)
    return st


async def one_client(
    http: aiohttp.ClientSession, base: str, client: int, args: argparse.Namespace, stop_at: float
) -> list[SessionResult]:
    results = []
    for k in range(args.sessions):
        if time.monotonic() >= stop_at:
            break
        results.append(await one_session(http, base, client, k, credit=client % 2 == 0, timeout=args.session_timeout))
    return results


def rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class Sampler(threading.Thread):
    """Times ``GET /stats`` (every open and recent connection) and reads the server's RSS every
    ``interval`` s, in a thread of its own (blocking urllib) beside the load generator's loop."""

    def __init__(self, url: str, pid: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.url, self.pid, self.interval = url, pid, interval
        self.latencies: list[float] = []
        self.largest = 0  # bytes of the largest /stats answer
        self.failures: list[str] = []
        self.rss: list[tuple[float, int]] = []
        self.stop = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self.stop.is_set():
            t = time.monotonic()
            if (rss := rss_bytes(self.pid)) is not None:
                self.rss.append((round(t - self.t0, 2), rss))
            try:
                with urllib.request.urlopen(self.url + "stats", timeout=30) as r:
                    self.largest = max(self.largest, len(r.read()))
                self.latencies.append(time.monotonic() - t)
            except Exception as exc:
                self.failures.append(repr(exc))
            self.stop.wait(max(0.0, self.interval - (time.monotonic() - t)))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


async def run_load(base: str, args: argparse.Namespace) -> list[SessionResult]:
    stop_at = time.monotonic() + args.seconds
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        per_client = await asyncio.gather(*(one_client(http, base, c, args, stop_at) for c in range(args.clients)))
    return [r for results in per_client for r in results]


def report(args: argparse.Namespace, results: list[SessionResult], sampler: Sampler, wall: float) -> dict[str, Any]:
    failed = [r for r in results if not r.ok]
    rss = [b for _, b in sampler.rss]
    lat_ms = [x * 1000 for x in sampler.latencies]
    return {
        "clients": args.clients,
        "sessions_per_client": args.sessions,
        "sessions": len(results),
        "completed": len(results) - len(failed),
        "failures": len(failed),
        "failure_reasons": [{"client": r.client, "scenario": r.scenario, "problems": r.problems[:5]} for r in failed],
        "by_scenario": {
            name: sum(1 for r in results if r.scenario == name and r.ok) for name in sorted({n for n, _ in MIX})
        },
        "credit_sessions": sum(1 for r in results if r.subprotocol == "pyclient.v1.credit"),
        "frames_in": sum(r.frames_in for r in results),
        "bytes_in": sum(r.bytes_in for r in results),
        "frames_out": sum(r.frames_out for r in results),
        "bytes_out": sum(r.bytes_out for r in results),
        "tool_calls_answered": sum(r.tool_calls for r in results),
        "session_seconds_p50": round(statistics.median([r.seconds for r in results]), 2) if results else None,
        "wall_seconds": round(wall, 1),
        "stats_samples": len(lat_ms),
        "stats_largest_bytes": sampler.largest,
        "stats_failures": sampler.failures[:5],
        "stats_latency_ms_p50": round(pct(lat_ms, 0.5), 1),
        "stats_latency_ms_p99": round(pct(lat_ms, 0.99), 1),
        "stats_latency_ms_max": round(max(lat_ms), 1) if lat_ms else None,
        "server_rss_mb_start": round(rss[0] / 1e6, 1) if rss else None,
        "server_rss_mb_peak": round(max(rss) / 1e6, 1) if rss else None,
        "server_rss_mb_end": round(rss[-1] / 1e6, 1) if rss else None,
        "rss_timeline": sampler.rss,
        "cpu_count": os.cpu_count(),
    }


def markdown(s: dict[str, Any], args: argparse.Namespace) -> str:
    rows = [
        ("concurrent clients", s["clients"]),
        ("sessions (chat / voice mix, half under credit)", f"{s['sessions']} ({s['credit_sessions']} credit)"),
        ("completed and verified", f"{s['completed']} ({', '.join(f'{k} {v}' for k, v in s['by_scenario'].items())})"),
        ("failures", s["failures"]),
        ("frames received / sent by the clients", f"{s['frames_in']:,} / {s['frames_out']:,}"),
        ("bytes received / sent by the clients", f"{s['bytes_in'] / 1e6:.1f} MB / {s['bytes_out'] / 1e6:.2f} MB"),
        ("tool calls answered", s["tool_calls_answered"]),
        (
            "/stats latency p50 / p99 / max",
            f"{s['stats_latency_ms_p50']} / {s['stats_latency_ms_p99']} / {s['stats_latency_ms_max']} ms "
            f"({s['stats_samples']} samples, answers up to {s['stats_largest_bytes'] / 1e3:.0f} KB)",
        ),
        (
            "server RSS start / peak / end",
            f"{s['server_rss_mb_start']} / {s['server_rss_mb_peak']} / {s['server_rss_mb_end']} MB",
        ),
        ("wall time", f"{s['wall_seconds']} s ({s['cpu_count']} CPUs)"),
    ]
    md = "# Load benchmark\n\n"
    md += (
        f"{s['clients']} concurrent CPython websocket clients against one dev server on 127.0.0.1, each running "
        f"up to {s['sessions_per_client']} sessions. Every session is verified against the server's /stats: "
        "text SHA-256, audio samples and SHA-256, every tool result as expected, no malformed frame or sequence "
        "gap, `done` and a clean close (1000).\n\n"
    )
    md += "| measure | value |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)
    md += "\nSessions alternate between " + " and ".join(f"`/ws?{q}`" for _, q in MIX) + " (seeded per session).\n"
    if s["failure_reasons"]:
        md += "\nFailures (first 10):\n\n" + "".join(
            f"- client {f['client']} {f['scenario']}: {'; '.join(f['problems'])}\n" for f in s["failure_reasons"][:10]
        )
    md += (
        f"\nReproduce: `./dev bench load --clients {args.clients} --sessions {args.sessions} "
        f"--seconds {args.seconds:g}`\n"
    )
    return md


def shown_path(path: Path) -> str:
    """``path`` relative to the checkout when inside it (results stay machine-independent)."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench load", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--sessions", type=int, default=10, help="sessions per client (at most)")
    ap.add_argument("--seconds", type=float, default=120.0, help="no new session starts after this")
    ap.add_argument("--session-timeout", type=float, default=120.0)
    ap.add_argument("--interval", type=float, default=0.1, help="/stats and RSS sampling period")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if not 1 <= args.clients <= 500 or not 1 <= args.sessions <= 100:
        ap.error("--clients must be in 1..500 and --sessions in 1..100")
    server = start_server("--host", "127.0.0.1")
    sampler = Sampler(server.url, server.proc.pid, args.interval)
    sampler.start()
    t0 = time.monotonic()
    try:
        time.sleep(0.5)  # an RSS sample at rest before the load
        results = asyncio.run(run_load(server.url, args))
        wall = time.monotonic() - t0
        time.sleep(1.0)  # and after it
    finally:
        sampler.stop.set()
        sampler.join(35)
        server.stop()
    summary = report(args, results, sampler, wall)
    args.out.mkdir(parents=True, exist_ok=True)
    md = markdown(summary, args)
    (args.out / "load.md").write_text(md)
    (args.out / "load.json").write_text(
        json.dumps({"args": vars(args) | {"out": shown_path(args.out)}, **summary}, indent=1)
    )
    print(md)
    print(f"wrote {args.out}/load.{{md,json}}")
    return 0 if summary["failures"] == 0 and summary["sessions"] else 1
