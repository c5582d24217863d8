"""Soak: one page runs session after session for ``--minutes``; memory must not creep.

The demo page stays loaded the whole time (one Pyodide, one page) and runs sessions back to
back, alternating ``chat`` (bursty text + a tool call per turn) and ``voice`` (24 kHz audio
with network jitter, transcript, a tool call) -- each a new ``Client``, as a page that
reconnects would. After every session it checks that nothing was lost (transcript sha256
equals the server's, samples played equal samples sent with equal checksums, every tool result
as expected, no malformed frames or sequence gaps, the microphone and all of the connection's
proxies released) and samples memory after a forced garbage collection: the JS heap
(Chromium), Pyodide's wasm memory, live proxies and DOM nodes in the page, and the server's
RSS. The slope of each (least squares over the run, per minute) is the figure: a leak shows
as a steady climb. Writes docs/benchmarks/soak.{json,md}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from playwright.sync_api import sync_playwright

from devserver.harness import ROOT, Server, launch_args, start_server

OUT = ROOT / "docs" / "benchmarks"
SESSION_TIMEOUT_MS = 120_000
# Parameters for both scenarios (each ignores the other's): about 3 s of chat, 6 s of voice.
QUERY = {"turns": 2, "tokens": 300, "burst": 0.8, "pause": 0.3, "seconds": 3, "items": 2, "jitter": 40}


def server_rss(server: Server) -> int:
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def slope_per_minute(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of ``(seconds, value)`` points, per minute."""
    if len(points) < 3:
        return None
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    if var == 0:
        return None
    return sum((t - mx) * (v - my) for t, v in points) / var * 60


def run_session(page: Any, server: Server, scenario: str, previous: int | None) -> dict[str, Any]:
    page.select_option("#scenario", scenario)
    page.click("#connect")
    page.wait_for_function(
        f"(() => {{ const s = window.pyclientStats && pyclientStats(); return !!s && s.server.connection_id && "
        f"s.server.connection_id !== {json.dumps(previous)} && (s.state === 'closed' || s.state === 'error'); }})()",
        timeout=SESSION_TIMEOUT_MS,
        polling=100,
    )
    s = page.evaluate("pyclientStats()")
    srv = server.wait_closed(s["server"]["connection_id"])
    if srv["audio_samples_sent"]:
        page.wait_for_function(
            f"pyclientStats().audio.samples_played >= {srv['audio_samples_sent']}", timeout=30_000, polling=100
        )
        s = page.evaluate("pyclientStats()")
    text = page.evaluate("document.getElementById('transcript').textContent")
    problems = []
    if s["state"] != "closed":
        problems.append(f"state {s['state']}: {s['error']}")
    if hashlib.sha256(text.encode()).hexdigest() != srv["text_sha256"]:
        problems.append("transcript differs from what the server sent")
    a = s["audio"]
    if srv["audio_samples_sent"] and (
        a["samples_played"] != srv["audio_samples_sent"] or a["checksum"] != srv["audio_checksum"]
    ):
        problems.append(f"audio: played {a['samples_played']} of {srv['audio_samples_sent']} samples")
    if srv["tool_results_received"] != srv["tool_calls_sent"] or not all(
        r.get("as_expected") for r in srv["tool_results"]
    ):
        problems.append("tool results missing or wrong")
    if s["malformed"] or s["seq_gaps"] or s["internal_errors"]:
        problems.append(f"malformed {s['malformed']}, gaps {s['seq_gaps']}, internal {s['internal_errors']}")
    if s["proxies"] != 1:
        problems.append(f"{s['proxies']} proxies alive after the session (expected 1: pyclientStats)")
    return {
        "scenario": scenario,
        "connection_id": s["server"]["connection_id"],
        "frames": s["frames_in"],
        "bytes": s["bytes_in"],
        "samples_played": a.get("samples_played", 0),
        "problems": problems,
    }


def sample_memory(page: Any, server: Server, t: float) -> dict[str, Any]:
    page.evaluate("window.gc && window.gc()")
    m = page.evaluate(
        "(() => { const s = pyclientStats(); return {js_heap: s.memory.js_heap_used, wasm: s.memory.wasm_bytes, "
        "proxies: s.proxies, dom_nodes: document.getElementsByTagName('*').length}; })()"
    )
    return {"t": round(t, 1), **m, "server_rss": server_rss(server)}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench soak", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--browser", default="chromium", choices=("chromium", "firefox"))
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    server = start_server()
    sessions: list[dict[str, Any]] = []
    memory: list[dict[str, Any]] = []
    try:
        with sync_playwright() as p:
            launch = launch_args(args.browser)
            if args.browser == "chromium":
                launch["args"] = [*launch["args"], "--js-flags=--expose-gc", "--enable-precise-memory-info"]
            browser = getattr(p, args.browser).launch(**launch)
            page = browser.new_page()
            page.goto(server.url + "?" + urlencode(QUERY))
            page.wait_for_function("document.body.dataset.pyclient === 'ready'", timeout=60_000)
            t0 = time.monotonic()
            while (elapsed := time.monotonic() - t0) < args.minutes * 60:
                scenario = ("chat", "voice")[len(sessions) % 2]
                previous = sessions[-1]["connection_id"] if sessions else None
                sessions.append(run_session(page, server, scenario, previous))
                memory.append(sample_memory(page, server, time.monotonic() - t0))
                print(
                    f"{elapsed:6.0f} s  session {len(sessions):3d} {scenario:5s}  "
                    f"heap {memory[-1]['js_heap']}  wasm {memory[-1]['wasm']}  rss {memory[-1]['server_rss']}  "
                    f"{'; '.join(sessions[-1]['problems']) or 'ok'}",
                    flush=True,
                )
            version = browser.version
            browser.close()
    finally:
        server.stop()
    # The first sessions warm caches (Pyodide imports, JIT, worklet modules): fit from the third.
    fit = memory[2:] if len(memory) > 5 else memory
    slopes = {
        key: slope_per_minute([(m["t"], m[key]) for m in fit if m[key] is not None])
        for key in ("js_heap", "wasm", "proxies", "dom_nodes", "server_rss")
    }
    failed = [s for s in sessions if s["problems"]]
    result = {
        "browser": args.browser,
        "browser_version": version,
        "minutes": args.minutes,
        "sessions": len(sessions),
        "sessions_failed": len(failed),
        "frames": sum(s["frames"] for s in sessions),
        "bytes": sum(s["bytes"] for s in sessions),
        "samples_played": sum(s["samples_played"] for s in sessions),
        "slopes_per_minute": slopes,
        "memory": memory,
        "failures": failed,
    }

    def mb(v: float | None) -> str:
        return "n/a" if v is None else f"{v / 1e6:+.3f} MB/min"

    def count(v: float | None) -> str:
        return "n/a" if v is None else f"{v:+.2f} per min"

    def span(key: str) -> str:
        vals = [m[key] for m in memory if m[key] is not None]
        return f"{vals[0] / 1e6:.1f} → {vals[-1] / 1e6:.1f} MB (max {max(vals) / 1e6:.1f})" if vals else "n/a"

    lines = [
        "# Soak",
        "",
        f"{args.browser} {version}, one page for {args.minutes:g} min: {len(sessions)} sessions back to back "
        f"(chat and voice alternating, a new `Client` each), {result['frames']:,} frames, "
        f"{result['bytes'] / 1e6:.1f} MB, {result['samples_played']:,} samples played. Sessions with anything "
        f"lost or left behind: **{len(failed)}**.",
        "",
        "| measure | first → last | slope (least squares, from the 3rd session) |",
        "|---|---|---|",
        f"| page JS heap (after gc) | {span('js_heap')} | {mb(slopes['js_heap'])} |",
        f"| Pyodide wasm memory | {span('wasm')} | {mb(slopes['wasm'])} |",
        f"| server RSS | {span('server_rss')} | {mb(slopes['server_rss'])} |",
        f"| live proxies | {memory[0]['proxies']} → {memory[-1]['proxies']} | {count(slopes['proxies'])} |",
        f"| DOM nodes | {memory[0]['dom_nodes']} → {memory[-1]['dom_nodes']} | {count(slopes['dom_nodes'])} |",
        "",
        f"Reproduce: `./dev bench soak --minutes {args.minutes:g} --browser {args.browser}`",
        "",
    ]
    md = "\n".join(lines)
    (args.out / "soak.md").write_text(md)
    (args.out / "soak.json").write_text(json.dumps(result, indent=1))
    print(md)
    return 1 if failed else 0
