"""Backpressure benchmark: a flood the client can only consume at real-time audio speed.

For each mode and browser, the ``flood`` scenario offers ``--mb`` MB as fast as the socket takes
it for ``--seconds`` s, while the client plays at real time (48 KB/s of 24 kHz PCM16). Sampled
every ``--interval`` s: client buffered bytes, ring fill, JS heap (Chromium), Pyodide's wasm
memory, server bytes sent and send-wait (drain + credit). Writes docs/benchmarks/backpressure
.{json,md,png} and prints the table.

Modes:
  1 naive          classic WebSocket, unbounded queue (web/lab/naive.html; what most clients do)
  2 credit         pyclient, classic WebSocket (credit flow control: the default)
  3 bounded-drop   pyclient, classic WebSocket, server without credit: bounded queue, drops counted
  4 wss-tcp        pyclient, WebSocketStream with credit turned off: backpressure through TCP only
  4b wss           pyclient, WebSocketStream as it comes (credit offered by default, server picks)
  5 openai-wss     OpenAI Realtime (base64 JSON, no credit in the protocol), WebSocketStream: TCP
  5b openai-ws     OpenAI Realtime, classic WebSocket: the bounded queue drops audio deltas only

"Server ahead" is how far the server's sending ran ahead of playback, in wire bytes:
bytes sent x (1 - samples played / samples sent), whatever the protocol's framing.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from playwright.sync_api import sync_playwright

from devserver.harness import ROOT, Server, launch_args, start_server

OUT = ROOT / "docs" / "benchmarks"
RING_BYTES = 65536 * 2
BOUND = 1024 * 1024 + RING_BYTES
OPENAI = {"protocol": "openai-realtime"}


@dataclass(frozen=True)
class Mode:
    key: str
    title: str
    page: str
    query: dict[str, Any]
    browsers: tuple[str, ...]
    bounded: bool  # expected to meet the bound


MODES = [
    Mode("1", "naive (classic WS, unbounded)", "lab/naive.html", {}, ("chromium", "firefox"), False),
    Mode("2", "credit (classic WS + credit)", "", {"transport": "websocket"}, ("chromium", "firefox"), True),
    Mode(
        "3",
        "bounded-drop (classic WS, no credit)",
        "",
        {"transport": "websocket", "credit": 0},
        ("chromium", "firefox"),
        True,
    ),
    Mode(
        "4",
        "wss-tcp (WebSocketStream, credit off)",
        "",
        {"transport": "websocketstream", "client_credit": 0},
        ("chromium",),
        True,
    ),
    Mode("4b", "wss (WebSocketStream, default: credit)", "", {"transport": "websocketstream"}, ("chromium",), True),
    Mode(
        "5",
        "openai-wss (OpenAI JSON, WebSocketStream)",
        "",
        {**OPENAI, "transport": "websocketstream"},
        ("chromium",),
        True,
    ),
    Mode(
        "5b",
        "openai-ws (OpenAI JSON, classic WS, drops audio)",
        "",
        {**OPENAI, "transport": "websocket"},
        ("chromium", "firefox"),
        True,
    ),
]


def connection_id(page: Any, server: Server, mode: Mode) -> int:
    """The server's id for the page's connection: pyclient.v1's hello says it; for the
    emulated providers it is the newest connection of that protocol once the page is open."""
    if "protocol" not in mode.query:
        page.wait_for_function("window.pyclientStats && pyclientStats().server.connection_id", timeout=60_000)
        return page.evaluate("pyclientStats().server.connection_id")
    page.wait_for_function("window.pyclientStats && pyclientStats().state === 'open'", timeout=60_000)
    conns = [c for c in server.stats()["connections"] if c.get("protocol") == mode.query["protocol"]]
    return conns[-1]["id"]


def run_one(page: Any, server: Server, mode: Mode, args: argparse.Namespace) -> dict[str, Any]:
    query = {"autostart": 1, "scenario": "flood", "mb": args.mb, "seconds": args.seconds, **mode.query}
    page.goto(server.url + mode.page + "?" + urlencode(query))
    conn = connection_id(page, server, mode)
    samples: list[dict[str, Any]] = []
    t0 = time.monotonic()
    while (elapsed := time.monotonic() - t0) < args.seconds:
        s = page.evaluate("pyclientStats()")
        srv = server.stats(conn)
        played = s["audio"].get("samples_played") or 0
        samples.append(
            {
                "t": round(elapsed, 2),
                "buffered_bytes": s["buffered_bytes"],
                "ring_fill_bytes": (s["audio"].get("ring_fill") or 0) * 2,
                "js_heap_used": s["memory"].get("js_heap_used"),
                "wasm_bytes": s["memory"].get("wasm_bytes"),
                "samples_played": played,
                "dropped_frames": s["receive"].get("dropped_frames", 0),
                "server_bytes_sent": srv["bytes_sent"],
                "server_send_wait_s": srv["send_wait_s"] + srv.get("credit_wait_s", 0.0),
                "server_ahead_bytes": srv["bytes_sent"] * (1 - played / max(1, srv["audio_samples_sent"])),
            }
        )
        time.sleep(max(0.0, args.interval - (time.monotonic() - t0 - elapsed)))
    final = page.evaluate("pyclientStats()")
    page.goto("about:blank")  # closes the socket
    return {"mode": mode.key, "title": mode.title, "bounded": mode.bounded, "final": final, "samples": samples}


def peak(run: dict[str, Any], key: str) -> float | None:
    values = [s[key] for s in run["samples"] if s[key] is not None]
    return max(values) if values else None


def summarise(run: dict[str, Any]) -> dict[str, Any]:
    last = run["samples"][-1]
    buffered_peak = max(peak(run, "buffered_bytes") or 0, run["final"].get("buffered_bytes_max") or 0)
    ahead = peak(run, "server_ahead_bytes")
    return {
        "browser": run["browser"],
        "mode": run["mode"],
        "title": run["title"],
        "buffered_peak": buffered_peak,
        "ring_peak": peak(run, "ring_fill_bytes"),
        "js_heap_peak": peak(run, "js_heap_used"),
        "wasm_peak": peak(run, "wasm_bytes"),
        "server_mb_sent": last["server_bytes_sent"] / 1e6,
        "server_wait_s": last["server_send_wait_s"],
        "server_ahead_peak": ahead,
        "dropped_frames": last["dropped_frames"],
        "client_bound_met": buffered_peak <= BOUND,
        "server_bound_met": ahead is not None and ahead <= BOUND,
    }


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "n/a"
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} KB"


def table(rows: list[dict[str, Any]], seconds: float, mb: float) -> str:
    head = (
        "| browser | mode | client buffered peak | ring peak | JS heap peak | wasm | server sent | "
        "server send-wait | server ahead of played (peak) | dropped frames | client ≤ bound | server ≤ bound |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['browser']} | {r['mode']} {r['title']} | {fmt_bytes(r['buffered_peak'])} | {fmt_bytes(r['ring_peak'])} "
        f"| {fmt_bytes(r['js_heap_peak'])} | {fmt_bytes(r['wasm_peak'])} | {r['server_mb_sent']:.2f} MB "
        f"| {r['server_wait_s']:.1f} s | {fmt_bytes(r['server_ahead_peak'])} | {r['dropped_frames']} "
        f"| {'yes' if r['client_bound_met'] else 'no'} | {'yes' if r['server_bound_met'] else 'no'} |"
        for r in rows
    ]
    intro = (
        f"Flood of up to {mb:g} MB offered for {seconds:g} s; the client plays at real time (48 KB/s). "
        f"Bound = 1 MiB + ring ({fmt_bytes(BOUND)}).\n\n"
    )
    return intro + head + "\n".join(lines) + "\n"


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    browsers = sorted({r["browser"] for r in runs})
    fig, axes = plt.subplots(2, len(browsers), figsize=(7 * len(browsers), 8), squeeze=False)
    for col, browser in enumerate(browsers):
        for run in (r for r in runs if r["browser"] == browser):
            t = [s["t"] for s in run["samples"]]
            label = f"{run['mode']} {run['title']}"
            axes[0][col].plot(t, [s["buffered_bytes"] / 1e6 for s in run["samples"]], label=label)
            axes[1][col].plot(t, [s["server_ahead_bytes"] / 1e6 for s in run["samples"]], label=label)
        for row, what in enumerate(("client buffered bytes (MB)", "server bytes sent - bytes played (MB)")):
            ax = axes[row][col]
            ax.axhline(BOUND / 1e6, color="grey", linestyle="--", linewidth=1, label="bound: 1 MiB + ring")
            ax.set_yscale("symlog", linthresh=0.1)
            ax.set_ylim(bottom=0)
            ax.set_title(f"{browser}: {what}")
            ax.set_xlabel("seconds")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench backpressure", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--mb", type=float, default=60.0)
    ap.add_argument("--interval", type=float, default=0.5)
    ap.add_argument("--browsers", default="chromium,firefox")
    ap.add_argument("--modes", default=",".join(m.key for m in MODES))
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--replot", action="store_true", help="redraw the PNG from the JSON of the last run")
    args = ap.parse_args(argv)
    if args.replot:
        plot(json.loads((args.out / "backpressure.json").read_text())["runs"], args.out / "backpressure.png")
        return 0
    wanted_modes = set(args.modes.split(","))
    args.out.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    server = start_server()
    try:
        with sync_playwright() as p:
            for browser_name in args.browsers.split(","):
                modes = [m for m in MODES if m.key in wanted_modes and browser_name in m.browsers]
                try:
                    launch = launch_args(browser_name)
                    if browser_name == "chromium":
                        launch["args"] = [*launch["args"], "--enable-precise-memory-info"]
                    browser = getattr(p, browser_name).launch(**launch)
                except Exception as exc:  # recorded; the other browser still runs
                    failures += [failure(browser_name, mode, exc) for mode in modes]
                    write_results(args, runs, failures)
                    continue
                for mode in modes:
                    print(f"{browser_name}: mode {mode.key} {mode.title} ...", flush=True)
                    page = None
                    try:
                        page = browser.new_page()
                        run = run_one(page, server, mode, args)
                        run["browser"] = browser_name
                        runs.append(run)
                    except Exception as exc:  # recorded; the other modes still run
                        failures.append(failure(browser_name, mode, exc))
                    finally:
                        if page is not None:
                            try:
                                page.close()
                            except Exception:
                                pass
                    # Written as soon as each mode completes: a later failure loses nothing.
                    write_results(args, runs, failures)
                try:
                    browser.close()
                except Exception:
                    pass
    finally:
        server.stop()
    md = write_results(args, runs, failures, final=True)
    print(md)
    print(f"wrote {args.out}/backpressure.{{md,json,png}}")
    return 1 if failures else 0


def failure(browser_name: str, mode: Mode, exc: BaseException) -> dict[str, Any]:
    print(f"{browser_name}: mode {mode.key} failed: {exc!r}", flush=True)
    return {"browser": browser_name, "mode": mode.key, "title": mode.title, "error": repr(exc)[:500]}


def write_results(
    args: argparse.Namespace, runs: list[dict[str, Any]], failures: list[dict[str, Any]], final: bool = False
) -> str:
    """Write backpressure.{md,json,png} from the modes completed so far; returns the markdown."""
    rows = [summarise(r) for r in runs if r["samples"]]
    naive = {r["browser"]: r["buffered_peak"] for r in rows if r["mode"] == "1"}
    for r in rows:
        base = naive.get(r["browser"])
        r["naive_peak_ratio"] = round(base / r["buffered_peak"], 1) if base and r["buffered_peak"] else None
    md = table(rows, args.seconds, args.mb)
    ratios = ", ".join(
        f"{r['browser']} mode {r['mode']}: {r['naive_peak_ratio']}x"
        for r in rows
        if r["mode"] != "1" and r["naive_peak_ratio"]
    )
    md += f"\nNaive peak / our peak (client buffered bytes): {ratios}.\n"
    if failures:
        md += "\nFailed modes (recorded, the others ran):\n\n" + "".join(
            f"- {f['browser']} mode {f['mode']} {f['title']}: `{f['error']}`\n" for f in failures
        )
    if not final:
        md += "\n(In progress: written after each mode.)\n"
    md += f"\nReproduce: `./dev bench backpressure --seconds {args.seconds:g} --mb {args.mb:g}`\n"
    (args.out / "backpressure.md").write_text("# Backpressure benchmark\n\n" + md)
    (args.out / "backpressure.json").write_text(
        json.dumps(
            {"args": vars(args) | {"out": str(args.out)}, "summary": rows, "failures": failures, "runs": runs},
            indent=1,
            default=str,
        )
    )
    if runs:
        try:
            plot(runs, args.out / "backpressure.png")
        except Exception as exc:  # the numbers are written; a plot is a nicety
            print(f"plot failed: {exc!r}", flush=True)
    return md
