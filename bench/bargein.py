"""Barge-in benchmark: interrupt-to-silence latency and position exactness.

Runs the ``voice`` scenario with ``--items`` utterances; about ``--after`` s into each one it
presses the demo's Interrupt button (``Client.interrupt()``). For every cut it records the
wall-clock time from the flush request to the worklet applying it (woken by Atomics.notify
where ``Atomics.waitAsync`` exists, else polled), the fade-out tail (frames, always inside the
render quantum that saw the cut) and the output latency the AudioContext reports. Exactness:
the positions reported to the server must add up to the samples the worklet rendered.
Writes docs/benchmarks/bargein.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from playwright.sync_api import sync_playwright

from devserver import webkit
from devserver.harness import ROOT, launch_args, start_server

OUT = ROOT / "docs" / "benchmarks"
CONFIGS = [("chromium", "sab"), ("chromium", "postmessage"), ("firefox", "sab"), ("webkit", "postmessage")]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(page: Any, url: str, items: int, after: float) -> dict[str, Any]:
    page.goto(url)
    page.wait_for_function("window.pyclientStats && pyclientStats().state === 'open'", timeout=60_000)
    played_before = 0
    for k in range(1, items + 1):
        page.wait_for_function(
            f"(() => {{ const a = pyclientStats().audio; return a.playing && a.samples_played > {played_before} + "
            f"a.sample_rate * {after}; }})()",
            timeout=60_000,
            polling=10,
        )
        page.click("#interrupt")
        page.wait_for_function(f"pyclientStats().audio.cuts.length >= {k}", timeout=10_000)
        played_before = page.evaluate("pyclientStats().audio.samples_played")
    page.wait_for_function("pyclientStats().state === 'closed'", timeout=60_000)
    page.wait_for_function("pyclientStats().audio.ring_fill === 0", timeout=30_000)
    return page.evaluate("pyclientStats()")


def run_webkit(url: str, items: int, after: float) -> dict[str, Any] | None:
    """The same in WebKitGTK (Selenium; no SharedArrayBuffer there, so postMessage), playing
    into a private PulseAudio null sink after a real click on "Click to enable audio"."""
    from selenium.webdriver.common.by import By

    if webkit.missing():
        print(f"webkit skipped: {webkit.missing()}", flush=True)
        return None
    with webkit.display() as display, webkit.audio_output() as env:
        if not env:
            print("webkit skipped: no PulseAudio (apt-get install pulseaudio gstreamer1.0-pulseaudio)", flush=True)
            return None
        with webkit.session(display, env) as driver:
            driver.get(url)
            webkit.enable_audio(driver)
            played_before = 0
            for k in range(1, items + 1):
                webkit.wait_for(
                    driver,
                    f"s.audio.playing && s.audio.samples_played > {played_before} + s.audio.sample_rate * {after}",
                )
                driver.find_element(By.ID, "interrupt").click()
                played_before = webkit.wait_for(driver, f"s.audio.cuts.length >= {k}")["audio"]["samples_played"]
            webkit.wait_for(driver, "s.state === 'closed' && s.audio.ring_fill === 0")
            return webkit.stats(driver)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench bargein", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--items", type=int, default=20)
    ap.add_argument("--after", type=float, default=0.6, help="seconds of an item played before the cut")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    server = start_server()
    try:
        with sync_playwright() as p:
            for browser_name, mode in CONFIGS:
                print(f"{browser_name} / {mode} ...", flush=True)
                query = {"autostart": 1, "scenario": "voice", "items": args.items, "seconds": 2.5, "audio": mode}
                url = server.url + "?" + urlencode(query)
                if browser_name == "webkit":
                    s = run_webkit(url, args.items, args.after)
                    if s is None:
                        continue
                else:
                    browser = getattr(p, browser_name).launch(**launch_args(browser_name))
                    s = run(browser.new_page(), url, args.items, args.after)
                    browser.close()
                cuts = s["audio"]["cuts"][-args.items :]
                reported = sum(i["played_samples"] for c in cuts for i in c["items"])
                lat = [c["latency_wall_ms"] for c in cuts]
                results.append(
                    {
                        "browser": browser_name,
                        "mode": mode,
                        "cuts": len(cuts),
                        "latency_ms_median": statistics.median(lat),
                        "latency_ms_p95": pct(lat, 0.95),
                        "latency_ms_max": max(lat),
                        "wake": cuts[0]["wake"],
                        "tail_frames_max": max(c["tail_frames"] for c in cuts),
                        "output_latency_ms": cuts[0]["output_latency_ms"],
                        "context_rate": s["audio"]["context_rate"],
                        "samples_played": s["audio"]["samples_played"],
                        "samples_reported": reported,
                        "position_error_samples": s["audio"]["samples_played"] - reported,
                        "raw": cuts,
                    }
                )
    finally:
        server.stop()
    lines = [
        "# Barge-in benchmark",
        "",
        f"`voice` scenario, {args.items} utterances per run, each cut about {args.after:g} s in by the demo's "
        "Interrupt button. Latency: flush request → the worklet applied the cut (it outputs a fade of "
        "`tail` frames, then silence, inside that same render quantum). Output latency is what the "
        "AudioContext reports (`baseLatency + outputLatency`) and comes on top at the speaker. Position "
        "error: samples the worklet rendered minus the sum of the positions reported to the server.",
        "",
        "| browser | audio mode | cuts | latency median | p95 | max | woken by | tail (frames) "
        "| output latency | position error |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['browser']} | {r['mode']} | {r['cuts']} | {r['latency_ms_median']:.2f} ms "
            f"| {r['latency_ms_p95']:.2f} ms | {r['latency_ms_max']:.2f} ms | {r['wake']} | ≤ {r['tail_frames_max']} "
            f"| {r['output_latency_ms']:.1f} ms | {r['position_error_samples']} samples |"
        )
    lines += ["", f"Reproduce: `./dev bench bargein --items {args.items}`", ""]
    md = "\n".join(lines)
    (args.out / "bargein.md").write_text(md)
    (args.out / "bargein.json").write_text(
        json.dumps({"args": {"items": args.items, "after": args.after}, "results": results}, indent=1)
    )
    print(md)
    return 0
