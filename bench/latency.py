"""Token latency: from the server sending a text frame to its text being in the page's DOM.

    python -m bench latency [--runs R] [--turns T]

Scenario: ``chat`` in bursts (200 tokens per second-long turn, streamed in bursts of 5-25
tokens, a half-second pause between turns), with ``stamp=1``: the dev server records, for
every text frame, the UTF-8 bytes of text sent so far and its wall clock when it handed the
frame to the socket. The page records, with a ``MutationObserver`` on ``#transcript``, the
bytes of text in the DOM and the wall clock at each append. A frame's latency is the time
from its stamp to the first append that holds all of its bytes.

Clock offset: server and browser run on one machine, but their clocks are read differently
(Python's ``time.time()``, the page's ``performance.timeOrigin + now()``), so the program
measures the offset with 15 round trips to ``GET /clock`` before each session and takes
the one with the shortest round trip (its half round trip bounds the error: reported).

Both clients batch text per animation frame, so a token waits up to one frame (16.7 ms at
60 Hz) by design. pyclient and the JavaScript reference (``web/lab/reference.html``) run
side by side in one run; writes docs/benchmarks/latency.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any
from urllib.request import urlopen

from playwright.sync_api import sync_playwright

from devserver.harness import start_server

from .pagetools import (
    CLIENTS,
    OBSERVE_PAGE,
    OUT,
    clock_offset_ms,
    configs,
    machine,
    page_url,
    pct,
    pyplot,
    run_session,
    write_results,
)


def latencies(stamps: list[list[float]], dom: list[list[float]], offset_ms: float) -> list[float]:
    """Each stamped frame's latency (ms): server stamp to the first DOM append holding it."""
    out: list[float] = []
    j = 0
    for sent_bytes, sent_ms in stamps:
        while j < len(dom) and dom[j][0] < sent_bytes:
            j += 1
        if j == len(dom):
            break  # never rendered (the session failed): not a latency
        out.append(dom[j][1] - (sent_ms - offset_ms))
    return out


def run_one(page: Any, server_url: str, url: str) -> dict[str, Any]:
    page.goto(server_url + "style.css")  # same origin, nothing running: measure the offset
    clock = clock_offset_ms(page)
    s = run_session(page, url)
    dom = page.evaluate("window.__dom.at")
    conn = s["server"]["connection_id"]
    with urlopen(f"{server_url}stats?id={conn}") as resp:
        server = json.load(resp)
    lat = latencies(server.get("text_stamps", []), dom, clock["offset_ms"])
    return {
        "state": s["state"],
        "frames": len(lat),
        "p50_ms": pct(lat, 50),
        "p90_ms": pct(lat, 90),
        "p99_ms": pct(lat, 99),
        "max_ms": max(lat) if lat else None,
        **clock,
        "latencies_ms": [round(x, 2) for x in lat],
    }


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench latency", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--turns", type=int, default=5)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    query = {"scenario": "chat", "turns": args.turns, "tokens": 200, "burst": 1, "pause": 0.5, "stamp": 1}
    rows: list[dict[str, Any]] = []
    versions: dict[str, str] = {}
    server = start_server()
    try:
        with sync_playwright() as p:
            for browser_name, transport, browser in configs(p, versions):
                page = browser.new_page()
                page.add_init_script(OBSERVE_PAGE)
                for client, path in CLIENTS:
                    q = {**query, "transport": transport, "audio": "off"}
                    runs = []
                    for k in range(args.runs):
                        print(f"{browser_name} / {transport} / {client} run {k + 1} ...", flush=True)
                        runs.append(run_one(page, server.url, page_url(server.url, path, "pyclient", q)))
                    every = [x for r in runs for x in r["latencies_ms"]]
                    rows.append(
                        {
                            "browser": browser_name,
                            "transport": transport,
                            "client": client,
                            "frames": len(every),
                            "p50_ms": pct(every, 50),
                            "p90_ms": pct(every, 90),
                            "p99_ms": pct(every, 99),
                            "max_ms": max(every) if every else None,
                            "runs": runs,
                        }
                    )
    finally:
        server.stop()
    write_results(args.out, "latency", report(rows, versions, args), {"versions": versions, "rows": rows}, args)
    plot(args.out / "latency.png", rows)
    return 0


def report(rows: list[dict[str, Any]], versions: dict[str, str], args: argparse.Namespace) -> str:
    def ms(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.1f}"

    lines = [
        "# Token latency: server send to text in the DOM",
        "",
        f"`chat` in bursts: {args.turns} turns of 200 tokens over a second each, in bursts of 5-25 tokens, "
        f"half a second apart; {args.runs} runs per row, side by side in one run of `bench/latency.py`. A text "
        "frame's latency runs from the dev server's stamp (when it handed the frame to the socket, `stamp=1`) "
        "to the first append to `#transcript` that holds all of its bytes (a `MutationObserver`). The clock "
        "offset between server and page is measured before each session from 15 round trips to `GET /clock` "
        "(the shortest one; its half round trip is the error bound, in `latency.json`). Both clients paint "
        "text once per animation frame: up to 16.7 ms of waiting is by design.",
        "",
        machine(versions),
        "",
        "| browser | transport | client | frames | p50 ms | p90 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['browser']} | {r['transport']} | {r['client']} | {r['frames']:,} | {ms(r['p50_ms'])} | "
            f"{ms(r['p90_ms'])} | {ms(r['p99_ms'])} | {ms(r['max_ms'])} |"
        )
    bounds = [r["uncertainty_ms"] for row in rows for r in row["runs"]]
    lines += [
        "",
        f"Clock offset error bound (half the shortest `/clock` round trip): at most {max(bounds):.2f} ms."
        if bounds
        else "",
        "",
        f"Reproduce: `./dev bench latency --runs {args.runs} --turns {args.turns}`",
        "",
    ]
    return "\n".join(lines)


def plot(path: Path, rows: list[dict[str, Any]]) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(8, 4))
    for r in rows:
        every = sorted(x for run in r["runs"] for x in run["latencies_ms"])
        if every:
            label = f"{r['client']}, {r['browser']} {r['transport']}"
            ax.plot(every, [i / len(every) for i in range(len(every))], label=label)
    ax.axvline(20, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("server send to text in the DOM (ms)")
    ax.set_ylabel("share of text frames")
    ax.set_xlim(left=0)
    ax.legend(fontsize=7)
    ax.set_title("token latency under bursts (CDF)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
