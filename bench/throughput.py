"""Throughput benchmark: pyclient against a pure-JavaScript reference client doing the same work.

    python -m bench throughput [--tokens N] [--runs R]

Scenario: ``/ws?scenario=chat&turns=1&tokens=N&burst=0&pause=0``: the dev server sends one
pyclient.v1 TEXT frame per message as fast as the client reads (plus a tool call, answered by
both clients). Each client counts the messages it handled and times the first and the last one
(``receive.first_message_ms`` / ``last_message_ms``); messages per second is (messages - 1) /
(last - first). The reference (``web/lab/reference.html``) parses the header, checks sequence
numbers, routes by kind, decodes text incrementally and renders it once per animation frame,
copies audio into a ring and answers tool calls: the work pyclient does, in JavaScript.
Configurations: Chromium on WebSocketStream and on the classic WebSocket, Firefox on the
classic WebSocket (it has no WebSocketStream). The median of ``--runs`` runs is reported, side by
side in one run of this program. Writes docs/benchmarks/throughput.{json,md,png}.

Only pyclient.v1 for now: the reference speaks neither OpenAI's nor Gemini's JSON yet.

``--profile`` adds one more pyclient run in Chromium (WebSocketStream) under the V8 CPU profiler
(CDP ``Profiler``): the functions with the most self time, JavaScript and WebAssembly (Pyodide's
interpreter), go into the report. Profiling slows the run; its rate is not reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from playwright.sync_api import sync_playwright

from devserver.harness import ROOT, launch_args, start_server

OUT = ROOT / "docs" / "benchmarks"
CONFIGS = [("chromium", "websocketstream"), ("chromium", "websocket"), ("firefox", "websocket")]
CLIENTS = [("js reference", "lab/reference.html"), ("pyclient", "")]
SESSION_TIMEOUT_MS = 600_000


def run_once(page: Any, url: str) -> dict[str, Any]:
    page.goto(url)
    page.wait_for_function("document.body.dataset.pyclient === 'ready'", timeout=120_000)
    page.wait_for_function(
        "window.pyclientStats && ['closed', 'error'].includes(pyclientStats().state)",
        timeout=SESSION_TIMEOUT_MS,
        polling=500,
    )
    s = page.evaluate("pyclientStats()")
    r = s["receive"]
    seconds = (r["last_message_ms"] - r["first_message_ms"]) / 1000
    return {
        "state": s["state"],
        "transport": s["transport"],
        "messages": s["messages_in"],
        "seconds": seconds,
        "messages_per_s": (s["messages_in"] - 1) / seconds if seconds > 0 else None,
        "chars_rendered": s["text"]["chars_rendered"],
        "tool_results": s["tools"]["results_sent"],
    }


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench throughput", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tokens", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--profile", action="store_true", help="profile one pyclient run in Chromium (CDP)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    scenario = {"scenario": "chat", "turns": 1, "tokens": args.tokens, "burst": 0, "pause": 0}
    rows: list[dict[str, Any]] = []
    profile: list[dict[str, Any]] = []
    versions: dict[str, str] = {}
    server = start_server()
    try:
        with sync_playwright() as p:
            for browser_name, transport in CONFIGS:
                browser = getattr(p, browser_name).launch(**launch_args(browser_name))
                versions[browser_name] = browser.version
                page = browser.new_page()
                for client, path in CLIENTS:
                    query = {**scenario, "transport": transport, "autostart": 1}
                    if client == "pyclient":
                        query["audio"] = "off"
                    runs = []
                    for k in range(args.runs):
                        print(f"{browser_name} / {transport} / {client} run {k + 1} ...", flush=True)
                        runs.append(run_once(page, server.url + path + "?" + urlencode(query)))
                    rates = [r["messages_per_s"] for r in runs if r["messages_per_s"]]
                    rows.append(
                        {
                            "browser": browser_name,
                            "transport": transport,
                            "client": client,
                            "messages_per_s_median": statistics.median(rates) if rates else None,
                            "runs": runs,
                        }
                    )
                if args.profile and browser_name == "chromium" and transport == "websocketstream":
                    query = {**scenario, "transport": transport, "autostart": 1, "audio": "off"}
                    print("chromium / websocketstream / pyclient under the CPU profiler ...", flush=True)
                    profile = profile_run(page, server.url + "?" + urlencode(query))
                browser.close()
    finally:
        server.stop()
    by = {(r["browser"], r["transport"], r["client"]): r["messages_per_s_median"] for r in rows}
    lines = [
        "# Throughput: pyclient against a JavaScript reference client",
        "",
        f"`chat` scenario, {args.tokens:,} tokens, one pyclient.v1 TEXT frame per message, as fast as the client "
        f"reads; median of {args.runs} runs each, side by side in one run of `bench/throughput.py`. Messages per "
        "second between the first and the last message the client handled. The reference "
        "(`web/lab/reference.html`) does the same work in JavaScript: header, sequence check, routing, "
        "incremental UTF-8, text rendered once per animation frame, tool calls answered.",
        "",
        f"Machine: {platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}; browsers: "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + ".",
        "",
        "| browser | transport | JS reference (msg/s) | pyclient (msg/s) | pyclient / JS |",
        "|---|---|---|---|---|",
    ]
    for browser_name, transport in CONFIGS:
        js_rate = by.get((browser_name, transport, "js reference"))
        py_rate = by.get((browser_name, transport, "pyclient"))
        ratio = f"{py_rate / js_rate:.2f}x" if js_rate and py_rate else "n/a"
        js_text = f"{js_rate:,.0f}" if js_rate else "n/a"
        py_text = f"{py_rate:,.0f}" if py_rate else "n/a"
        lines.append(f"| {browser_name} | {transport} | {js_text} | {py_text} | {ratio} |")
    if profile:
        total = sum(p["self_ms"] for p in profile) or 1
        lines += [
            "",
            "## Where pyclient's time goes (Chromium, WebSocketStream, V8 CPU profile of one run)",
            "",
            "Self time by function over the whole run (page idle time excluded); `wasm-function[...]` and "
            "C names are Pyodide's interpreter, compiled to WebAssembly.",
            "",
            "| function | self ms | share |",
            "|---|---|---|",
        ]
        for p in profile[:15]:
            lines.append(f"| `{p['function'][:70]}` | {p['self_ms']:,.0f} | {p['self_ms'] / total:.1%} |")
    lines += [
        "",
        "Both clients rendered the same text in every run (characters: the reference counts UTF-16 code units, "
        "pyclient code points; the scenario's text has characters outside the BMP). Raw runs: `throughput.json`.",
        "",
        f"Reproduce: `./dev bench throughput --tokens {args.tokens} --runs {args.runs}"
        + (" --profile`" if args.profile else "`"),
        "",
    ]
    md = "\n".join(lines)
    (args.out / "throughput.md").write_text(md)
    (args.out / "throughput.json").write_text(
        json.dumps(
            {"args": vars(args) | {"out": str(args.out)}, "versions": versions, "rows": rows, "profile": profile},
            indent=1,
        )
    )
    _plot(args.out / "throughput.png", rows)
    print(md)
    return 0


def profile_run(page: Any, url: str) -> list[dict[str, Any]]:
    """One session under V8's sampling profiler; self time per function, most first."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Profiler.enable")
    cdp.send("Profiler.setSamplingInterval", {"interval": 200})
    cdp.send("Profiler.start")
    try:
        run_once(page, url)
    finally:
        result = cdp.send("Profiler.stop")
        cdp.detach()
    prof = result["profile"]
    nodes = {n["id"]: n for n in prof["nodes"]}
    deltas = prof.get("timeDeltas", [])
    self_us: dict[str, float] = {}
    for sample, delta in zip(prof.get("samples", []), [*deltas[1:], 0], strict=False):
        frame = nodes[sample]["callFrame"]
        name = frame.get("functionName") or "(anonymous)"
        if name in ("(idle)", "(program)", "(garbage collector)"):
            key = name
        else:
            where = frame.get("url", "").rsplit("/", 1)[-1]
            key = f"{name} {where}".strip()
        self_us[key] = self_us.get(key, 0) + delta
    ranked = sorted(self_us.items(), key=lambda kv: -kv[1])
    return [{"function": k, "self_ms": v / 1000} for k, v in ranked if k != "(idle)"]


def _plot(path: Path, rows: list[dict[str, Any]]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot", flush=True)
        return
    labels = [f"{b}\n{t}" for b, t in CONFIGS]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.38
    for k, (client, _) in enumerate(CLIENTS):
        rates = {(r["browser"], r["transport"]): r["messages_per_s_median"] or 0 for r in rows if r["client"] == client}
        values = [rates.get(config, 0) for config in CONFIGS]
        ax.bar([i + (k - 0.5) * width for i in range(len(CONFIGS))], values, width, label=client)
    ax.set_xticks(range(len(CONFIGS)), labels)
    ax.set_ylabel("messages per second")
    ax.set_title("chat scenario, one TEXT frame per message")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
