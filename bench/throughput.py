"""Throughput benchmark: pyclient against a pure-JavaScript reference client doing the same work.

    python -m bench throughput [--tokens N] [--runs R] [--protocols P,...] [--profile]

Scenario: ``chat&turns=1&tokens=N&burst=0&pause=0``: the dev server sends one message per
token as fast as the client reads (plus a tool call, answered by both clients), in each
protocol: pyclient.v1 binary frames, OpenAI Realtime and Gemini Live JSON events (the dev
server's emulations). Each client counts the messages it handled and times the first and
the last one (``receive.first_message_ms`` / ``last_message_ms``); messages per second is
(messages - 1) / (last - first). The reference (``web/lab/reference.html``) parses, routes,
decodes text incrementally and renders it once per animation frame, copies audio into a ring
and answers tool calls: the work pyclient does, in JavaScript. pyclient runs in
``web/lab/pyclient.html`` (the client alone, no demo UI). Configurations: Chromium on
WebSocketStream and on the classic WebSocket, Firefox on the classic WebSocket (it has no
WebSocketStream). The median of ``--runs`` runs is reported, side by side in one run of this
program. Writes docs/benchmarks/throughput.{json,md,png}.

``--pyprofile`` adds one more pyclient run per protocol in Firefox under Python's ``cProfile``
in the page: the Python functions with the most self time go into the report.

``--profile`` adds one more pyclient run per protocol in Chromium (WebSocketStream) under the
V8 CPU profiler (CDP ``Profiler``): the functions with the most self time, JavaScript and
WebAssembly (Pyodide's interpreter), go into the report. Profiling slows the run; its rate
is not reported.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

from devserver.harness import start_server

from .pagetools import (
    CLIENTS,
    CONFIGS,
    OUT,
    PROTOCOLS,
    configs,
    machine,
    median,
    page_url,
    pyplot,
    pyprofile_run,
    pyprofile_section,
    ratio,
    run_session,
    write_results,
)


def run_once(page: Any, url: str) -> dict[str, Any]:
    s = run_session(page, url)
    r = s["receive"]
    seconds = (r["last_message_ms"] - r["first_message_ms"]) / 1000 if r.get("first_message_ms") else 0
    return {
        "state": s["state"],
        "transport": s["transport"],
        "messages": s["messages_in"],
        "seconds": seconds,
        "messages_per_s": (s["messages_in"] - 1) / seconds if seconds > 0 else None,
        "chars_rendered": s["text"]["chars_rendered"],
        "tool_results": s["tools"]["results_sent"],
        "batches": r.get("batches_taken"),
        "batches_waited": r.get("batches_waited"),
        "largest_batch": r.get("largest_batch"),
        "handling_ms": r.get("handling_ms"),
    }


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench throughput", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tokens", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--protocols", default=",".join(PROTOCOLS))
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--profile", action="store_true", help="profile one pyclient run per protocol in Chromium (CDP)")
    ap.add_argument(
        "--pyprofile",
        action="store_true",
        help="one more pyclient run per protocol in Firefox under Python's cProfile, in the page",
    )
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    protocols = [x for x in args.protocols.split(",") if x]
    scenario = {"scenario": "chat", "turns": 1, "tokens": args.tokens, "burst": 0, "pause": 0, "audio": "off"}
    rows: list[dict[str, Any]] = []
    profiles: dict[str, list[dict[str, Any]]] = {}
    pyprofiles: dict[str, str] = {}
    versions: dict[str, str] = {}
    server = start_server("--session-rate", "1000")  # every run mints a token (OpenAI, Gemini)
    try:
        with sync_playwright() as p:
            for browser_name, transport, browser in configs(p, versions):
                page = browser.new_page()
                for protocol in protocols:
                    for client, path in CLIENTS:
                        url = page_url(server.url, path, protocol, {**scenario, "transport": transport})
                        runs = []
                        for k in range(args.runs):
                            print(f"{protocol} / {browser_name} / {transport} / {client} run {k + 1} ...", flush=True)
                            runs.append(run_once(page, url))
                        rows.append(
                            {
                                "protocol": protocol,
                                "browser": browser_name,
                                "transport": transport,
                                "client": client,
                                "messages_per_s_median": median([r["messages_per_s"] for r in runs]),
                                "runs": runs,
                            }
                        )
                    if args.profile and browser_name == "chromium" and transport == "websocketstream":
                        print(f"{protocol} / chromium / websocketstream / pyclient under the CPU profiler ...")
                        url = page_url(server.url, CLIENTS[1][1], protocol, {**scenario, "transport": transport})
                        profiles[protocol] = profile_run(page, url)
                    if args.pyprofile and browser_name == "firefox":
                        print(f"{protocol} / firefox / websocket / pyclient under cProfile ...", flush=True)
                        q = {**scenario, "transport": transport}
                        pyprofiles[protocol] = pyprofile_run(page, page_url(server.url, CLIENTS[1][1], protocol, q))
    finally:
        server.stop()
    results = {"versions": versions, "rows": rows, "profiles": profiles, "pyprofiles": pyprofiles}
    write_results(args.out, "throughput", report(rows, profiles, pyprofiles, protocols, versions, args), results, args)
    _plot(args.out / "throughput.png", rows, protocols)
    return 0


def report(
    rows: list[dict[str, Any]],
    profiles: dict[str, list[dict[str, Any]]],
    pyprofiles: dict[str, str],
    protocols: list[str],
    versions: dict[str, str],
    args: argparse.Namespace,
) -> str:
    by = {(r["protocol"], r["browser"], r["transport"], r["client"]): r for r in rows}
    lines = [
        "# Throughput: pyclient against a JavaScript reference client",
        "",
        f"`chat` scenario, {args.tokens:,} tokens, one message per token, as fast as the client reads; median "
        f"of {args.runs} runs each, side by side in one run of `bench/throughput.py`. Messages per second "
        "between the first and the last message the client handled. The reference (`web/lab/reference.html`) "
        "does the same work in JavaScript: parse, route, incremental UTF-8 (pyclient.v1), text rendered once "
        "per animation frame, tool calls answered. pyclient runs alone in `web/lab/pyclient.html`.",
        "",
        machine(versions),
        "",
        "| protocol | browser | transport | JS reference (msg/s) | pyclient (msg/s) | pyclient / JS "
        "| pyclient batches (largest) |",
        "|---|---|---|---|---|---|---|",
    ]
    for protocol in protocols:
        for browser_name, transport in CONFIGS:
            js_row = by.get((protocol, browser_name, transport, "js reference"))
            py_row = by.get((protocol, browser_name, transport, "pyclient"))
            js_rate = js_row and js_row["messages_per_s_median"]
            py_rate = py_row and py_row["messages_per_s_median"]
            batches = "n/a"
            if py_row and py_row["runs"] and py_row["runs"][0].get("batches") is not None:
                first = py_row["runs"][0]
                batches = f"{first['batches']:,} ({first['largest_batch']})"
            lines.append(
                f"| {protocol} | {browser_name} | {transport} | {f'{js_rate:,.0f}' if js_rate else 'n/a'} | "
                f"{f'{py_rate:,.0f}' if py_rate else 'n/a'} | {ratio(py_rate, js_rate)} | {batches} |"
            )
    for protocol, profile in profiles.items():
        total = sum(p["self_ms"] for p in profile) or 1
        lines += [
            "",
            f"## Where pyclient's time goes: {protocol} (Chromium, WebSocketStream, V8 CPU profile of one run)",
            "",
            "Self time by function over the whole run (page idle time excluded); `wasm-function[...]` and "
            "C names are Pyodide's interpreter, compiled to WebAssembly.",
            "",
            "| function | self ms | share |",
            "|---|---|---|",
        ]
        for p in profile[:12]:
            lines.append(f"| `{p['function'][:70]}` | {p['self_ms']:,.0f} | {p['self_ms'] / total:.1%} |")
    for protocol, text in pyprofiles.items():
        title = f"Where pyclient's Python time goes: {protocol} (Firefox, classic WebSocket, cProfile in the page)"
        lines += pyprofile_section(title, text)
    lines += [
        "",
        "Both clients rendered the same text in every run (characters: the reference counts UTF-16 code units, "
        "pyclient code points; the scenario's text has characters outside the BMP). Raw runs: `throughput.json`.",
        "",
        f"Reproduce: `./dev bench throughput --tokens {args.tokens} --runs {args.runs}"
        + (" --profile" if args.profile else "")
        + (" --pyprofile" if args.pyprofile else "")
        + "`",
        "",
    ]
    return "\n".join(lines)


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


def _plot(path: Path, rows: list[dict[str, Any]], protocols: list[str]) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, len(protocols), figsize=(5 * len(protocols), 3.6), squeeze=False)
    width = 0.38
    for ax, protocol in zip(axes[0], protocols, strict=True):
        for k, (client, _) in enumerate(CLIENTS):
            rates = {
                (r["browser"], r["transport"]): r["messages_per_s_median"] or 0
                for r in rows
                if r["client"] == client and r["protocol"] == protocol
            }
            values = [rates.get(config, 0) for config in CONFIGS]
            ax.bar([i + (k - 0.5) * width for i in range(len(CONFIGS))], values, width, label=client)
        ax.set_xticks(range(len(CONFIGS)), [f"{b}\n{t}" for b, t in CONFIGS], fontsize=8)
        ax.set_title(protocol)
        ax.set_ylabel("messages per second")
        ax.legend(fontsize=8)
    fig.suptitle("chat scenario, one message per token, as fast as the client reads")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
