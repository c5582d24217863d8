"""Reconnect benchmark: how long a session is without a socket when one is lost.

For each way a connection ends mid-stream (pyclient.v1 drops and a half-open socket, Gemini's
goAway and drops, OpenAI drops and session expiry) it opens the demo in Chromium and Firefox,
lets the session run to its end, checks it ended ``closed`` with the reconnects expected, and
takes from ``stats()["connections"]`` the gap between each socket's loss and the next one's
open. The gap includes the policy's first backoff (uniform in 0-250 ms after a drop, none after
goAway or expiry) and, for OpenAI and Gemini, minting a new token; it does not include finding
a half-open socket dead (about 2 x ``heartbeat_s``). Writes docs/benchmarks/reconnect.{md,json}.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
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
CHAT = {"scenario": "chat", "burst": 0.3, "pause": 0.1}
GEMINI = {**CHAT, "protocol": "gemini-live", "hangup": 0.5}
OPENAI = {**CHAT, "protocol": "openai-realtime", "hangup": 0.5}
CASES: dict[str, tuple[dict[str, Any], int | None]] = {  # name -> (query, reconnects expected)
    "pyclient.v1 drop_after (3 drops)": ({**CHAT, "turns": 2, "tokens": 300, "drop_after": 90, "drops": 3}, 3),
    "pyclient.v1 half-open (heartbeat_s=0.5)": (
        {**CHAT, "turns": 2, "tokens": 200, "freeze_after": 80, "heartbeat_s": 0.5},
        1,
    ),
    "Gemini goAway (lifetime 1.5 s)": (
        {**GEMINI, "turns": 4, "tokens": 60, "pause": 0.2, "lifetime_s": 1.5, "goaway_s": 0.7},
        3,
    ),
    "Gemini drop_after (2 drops)": ({**GEMINI, "turns": 3, "tokens": 80, "drop_after": 100, "drops": 2}, 2),
    "OpenAI drop_after (2 drops)": ({**OPENAI, "turns": 3, "tokens": 80, "drop_after": 150, "drops": 2}, 2),
    "OpenAI session_expired (1.3 s)": ({**OPENAI, "turns": 3, "tokens": 60, "pause": 0.2, "max_session_s": 1.3}, None),
}


def session(page: Any, url: str) -> dict[str, Any]:
    page.goto(url)
    page.wait_for_function(
        "window.pyclientStats && ['closed', 'error'].includes(pyclientStats().state)", timeout=90_000, polling=100
    )
    return page.evaluate("pyclientStats()")


def gaps_ms(stats: dict[str, Any]) -> list[float]:
    c = stats["connections"]
    return [round((b["opened_at"] - a["closed_at"]) * 1000, 1) for a, b in itertools.pairwise(c)]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3, help="sessions per case and browser")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    server = start_server("--session-rate", "1000")
    rows: list[dict[str, Any]] = []
    versions: dict[str, str] = {}
    try:
        with sync_playwright() as p:
            for name in ("chromium", "firefox"):
                browser = getattr(p, name).launch(**launch_args(name))
                versions[name] = browser.version
                for case, (query, expected) in CASES.items():
                    gaps: list[float] = []
                    problems = []
                    for _ in range(args.runs):
                        page = browser.new_page()
                        try:
                            s = session(page, server.url + "?" + urlencode({"autostart": 1, **query}))
                        except Exception as exc:  # "Target crashed": see docs/BROWSER-BUGS.md
                            problems.append(f"page failed: {str(exc).splitlines()[0][:80]}")
                            continue
                        finally:
                            with contextlib.suppress(Exception):
                                page.close()
                        if s["state"] != "closed" or (expected is not None and s["reconnects"] != expected):
                            problems.append(f"{s['state']}, {s['reconnects']} reconnects: {s['error']}")
                        gaps += gaps_ms(s)
                    row = {"case": case, "browser": name, "gaps_ms": gaps, "problems": problems}
                    if gaps:
                        row |= {"median_ms": statistics.median(gaps), "max_ms": max(gaps)}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                browser.close()
    finally:
        server.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    (args.out / "reconnect.json").write_text(
        json.dumps({"runs": args.runs, "machine": machine, "versions": versions, "rows": rows}, indent=1) + "\n"
    )
    lines = [
        "# Reconnect: time without a socket",
        "",
        f"`./dev bench reconnect --runs {args.runs}`: the gap between a socket's loss and the next "
        "socket's open, per reconnect, over every session of the case (loopback). "
        "See bench/reconnect.py for what the gap includes.",
        "",
        f"Machine: {machine}; browsers: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        "",
        "| case | browser | reconnects | median | max | sessions not closed as expected |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        median = f"{r['median_ms']:.0f} ms" if "median_ms" in r else "-"
        worst = f"{r['max_ms']:.0f} ms" if "max_ms" in r else "-"
        lines.append(
            f"| {r['case']} | {r['browser']} | {len(r['gaps_ms'])} | {median} | {worst} | {len(r['problems'])} |"
        )
    problems = [f"- {r['case']}, {r['browser']}: {p}" for r in rows for p in r["problems"]]
    if problems:
        lines += ["", "Sessions not closed as expected (a page that failed: see docs/BROWSER-BUGS.md):", "", *problems]
    (args.out / "reconnect.md").write_text("\n".join(lines) + "\n")
    return 1 if any(r["problems"] for r in rows) else 0
