"""Main-thread budget at voice load: how much of the page's main thread the client takes.

    python -m bench mainthread [--seconds S] [--runs R]

Scenario: ``voice`` with ``tps=200``: 24 kHz PCM16 in 20 ms frames at real time, plus text
at 200 tokens per second in bursts (every 250 ms, 50 tokens at once), and a tool call.
pyclient plays the audio through its AudioWorklet ring; the JavaScript reference
(``web/lab/reference.html``) copies it into a ring (it does not play it).

Measured from the first text in the page to the end of the session (waited for on a DOM
attribute: polling pyclient's ``stats()`` would add Python work of the bench's own):

* script time: Chromium's own accounting (CDP ``Performance.getMetrics``: ``ScriptDuration``
  over the wall time between two readings), main thread only; Chromium only;
* long tasks over 50 ms: Chromium's ``PerformanceObserver`` (``longtask``) entries;
* stalls: a 10 ms timer that fired more than 50 ms late, in every browser (Firefox has no
  long-task entries and no CDP).

``--pyprofile``: one more pyclient session per transport under ``cProfile`` (its top entries go
in the doc). Writes docs/benchmarks/mainthread.{json,md,png}.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

from devserver.harness import start_server

from .pagetools import (
    CLIENTS,
    OBSERVE_PAGE,
    OUT,
    SESSION_TIMEOUT_MS,
    configs,
    machine,
    median,
    page_url,
    pyplot,
    pyprofile_run,
    pyprofile_section,
    write_results,
)


def metrics(cdp: Any) -> dict[str, float]:
    return {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}


def run_one(page: Any, url: str, cdp: Any | None) -> dict[str, Any]:
    page.goto(url)
    page.wait_for_function("document.body.dataset.pyclient === 'ready'", timeout=120_000)
    page.wait_for_function("window.__dom && window.__dom.at.length > 0", timeout=SESSION_TIMEOUT_MS, polling=20)
    start_ms = page.evaluate("performance.now()")
    before = metrics(cdp) if cdp else None
    # Polled on a DOM attribute: pyclient's stats() is Python work the measure must not include.
    page.wait_for_function("document.body.dataset.ended !== undefined", timeout=SESSION_TIMEOUT_MS, polling=250)
    after = metrics(cdp) if cdp else None
    s = page.evaluate("pyclientStats()")
    dom = page.evaluate("window.__dom")
    r = s.get("receive") or {}
    out: dict[str, Any] = {
        "state": s["state"],
        "messages": s["messages_in"],
        "batches": r.get("batches_taken"),  # batches the client took (a call into its receive path each)
        "handling_ms": r.get("handling_ms"),  # pyclient's own clock: the receive path's Python
    }
    if before and after:
        wall = after["Timestamp"] - before["Timestamp"]
        out["wall_s"] = wall
        out["script_share"] = (after["ScriptDuration"] - before["ScriptDuration"]) / wall
        out["task_share"] = (after["TaskDuration"] - before["TaskDuration"]) / wall
        if out["handling_ms"] is not None:
            out["handling_share"] = out["handling_ms"] / 1000 / wall  # (from the first message on)
    long_tasks = dom["longTasks"]
    out["long_tasks"] = None if long_tasks is None else [t for t in long_tasks if t[0] >= start_ms]
    out["stalls"] = [t for t in dom["stalls"] if t[0] >= start_ms]
    out["audio_underruns"] = (s.get("audio") or {}).get("underruns")
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench mainthread", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument(
        "--pyprofile", action="store_true", help="one more pyclient session per transport under cProfile (in the doc)"
    )
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    query = {"scenario": "voice", "seconds": args.seconds, "tps": 200}
    rows: list[dict[str, Any]] = []
    versions: dict[str, str] = {}
    pyprofiles: dict[str, str] = {}
    server = start_server()
    try:
        with sync_playwright() as p:
            for browser_name, transport, browser in configs(p, versions):
                page = browser.new_page()
                page.add_init_script(OBSERVE_PAGE)
                cdp = None
                if browser_name == "chromium":
                    cdp = page.context.new_cdp_session(page)
                    cdp.send("Performance.enable", {"timeDomain": "timeTicks"})
                for client, path in CLIENTS:
                    runs = []
                    for k in range(args.runs):
                        print(f"{browser_name} / {transport} / {client} run {k + 1} ...", flush=True)
                        url = page_url(server.url, path, "pyclient", {**query, "transport": transport})
                        runs.append(run_one(page, url, cdp))
                    rows.append(
                        {
                            "browser": browser_name,
                            "transport": transport,
                            "client": client,
                            "script_share": median([r.get("script_share") for r in runs]),
                            "task_share": median([r.get("task_share") for r in runs]),
                            "handling_share": median([r.get("handling_share") for r in runs]),
                            "messages_per_batch": median(
                                [r["messages"] / r["batches"] for r in runs if r.get("batches")]
                            ),
                            "long_tasks": None
                            if any(r["long_tasks"] is None for r in runs)
                            else sum(len(r["long_tasks"]) for r in runs),
                            "longest_task_ms": max((t[1] for r in runs for t in (r["long_tasks"] or [])), default=None),
                            "stalls": sum(len(r["stalls"]) for r in runs),
                            "longest_stall_ms": max((t[1] for r in runs for t in r["stalls"]), default=None),
                            "runs": runs,
                        }
                    )
                if args.pyprofile:
                    print(f"{browser_name} / {transport} / pyclient under cProfile ...", flush=True)
                    url = page_url(server.url, CLIENTS[1][1], "pyclient", {**query, "transport": transport})
                    pyprofiles[f"{browser_name} / {transport}"] = pyprofile_run(page, url)
    finally:
        server.stop()
    results = {"versions": versions, "rows": rows, "pyprofiles": pyprofiles}
    write_results(args.out, "mainthread", report(rows, pyprofiles, versions, args), results, args)
    plot(args.out / "mainthread.png", rows)
    return 0


def plot(path: Path, rows: list[dict[str, Any]]) -> None:
    plt = pyplot()
    if plt is None:
        return
    measured = [r for r in rows if r["script_share"] is not None]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    labels = [f"{r['client']}\n{r['transport']}" for r in measured]
    ax.bar(range(len(measured)), [100 * r["script_share"] for r in measured], label="script")
    ax.bar(
        range(len(measured)),
        [100 * ((r["task_share"] or 0) - r["script_share"]) for r in measured],
        bottom=[100 * r["script_share"] for r in measured],
        label="other main-thread tasks",
        alpha=0.5,
    )
    ax.axhline(3, color="grey", linestyle=":", linewidth=1)
    ax.set_xticks(range(len(measured)), labels, fontsize=8)
    ax.set_ylabel("% of the main thread (Chromium, CDP)")
    ax.set_title("voice load: 24 kHz audio + 200 tokens/s")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(
    rows: list[dict[str, Any]], pyprofiles: dict[str, str], versions: dict[str, str], args: argparse.Namespace
) -> str:
    def share(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.1%}"

    def count(n: int | None, longest: float | None) -> str:
        if n is None:
            return "n/a (no API)"
        return f"{n}" + (f" (longest {longest:.0f} ms)" if longest else "")

    lines = [
        "# Main thread at voice load",
        "",
        f"`voice` scenario, {args.seconds:g} s of 24 kHz PCM16 in 20 ms frames at real time plus 200 tokens/s "
        f"of text in bursts every 250 ms and a tool call; {args.runs} runs per row, side by side in one run "
        "of `bench/mainthread.py`, measured from the first message to the end of the session. pyclient plays "
        "the audio through its AudioWorklet ring; the JavaScript reference copies it into a ring. Script and "
        "task time: Chromium's CDP `Performance.getMetrics` (main thread) over wall time. Long tasks: "
        "Chromium's `longtask` entries over 50 ms. Stalls: a 10 ms timer that fired more than 50 ms late "
        "(every browser).",
        "",
        machine(versions),
        "",
        "| browser | transport | client | script time | all tasks | long tasks > 50 ms | stalls > 50 ms "
        "| receive path (Python) | messages per batch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        per_batch = r.get("messages_per_batch")
        lines.append(
            f"| {r['browser']} | {r['transport']} | {r['client']} | {share(r['script_share'])} | "
            f"{share(r['task_share'])} | {count(r['long_tasks'], r['longest_task_ms'])} | "
            f"{count(r['stalls'], r['longest_stall_ms'])} | {share(r.get('handling_share'))} | "
            f"{'n/a' if per_batch is None else f'{per_batch:.2f}'} |"
        )
    lines += [
        "",
        "Receive path: the time pyclient's own clock puts in handling received batches (parse, route, "
        "the sinks' synchronous part) over the same wall time (Chromium); the rest of its script time is the "
        "crossings into Python, asyncio, the renderer's frames, the audio ring and timers.",
    ]
    for config, text in pyprofiles.items():
        title = f"Where pyclient's Python time goes at voice load: {config} (cProfile in the page)"
        lines += pyprofile_section(title, text, 20)
    lines += [
        "",
        f"Reproduce: `./dev bench mainthread --seconds {args.seconds:g} --runs {args.runs}"
        + (" --pyprofile" if args.pyprofile else "")
        + "`",
        "",
    ]
    return "\n".join(lines)
