"""Screenshots of the running demo (Chromium): docs/screenshots/{chat,voice,backpressure}.png."""

from __future__ import annotations

import argparse
from pathlib import Path
from urllib.parse import urlencode

from playwright.sync_api import sync_playwright

from devserver.harness import ROOT, launch_args, start_server

OUT = ROOT / "docs" / "screenshots"
SHOTS = {
    # name: (query, JS condition on s = pyclientStats() to wait for before the shot)
    "chat": ({"scenario": "chat", "turns": 3, "pause": 0.5}, "s.server.turns >= 2"),
    "voice": ({"scenario": "voice", "seconds": 8}, "s.audio.samples_played > 24000 * 4"),
    "backpressure": (
        {"scenario": "flood", "throttle": 0.25, "transport": "websocket"},
        "s.audio.samples_played > 24000 * 2",
    ),
}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench screenshot", description=__doc__)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    server = start_server()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(**launch_args("chromium"))
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            for name, (query, ready) in SHOTS.items():
                page.goto(server.url + "?" + urlencode({"autostart": 1, **query}))
                page.wait_for_function(
                    f"(() => {{ const s = window.pyclientStats && pyclientStats(); return !!s && ({ready}); }})()",
                    timeout=60_000,
                )
                page.wait_for_timeout(300)  # let the 250 ms stats readout refresh once
                path = args.out / f"{name}.png"
                page.screenshot(path=str(path))
                print(f"wrote {path.relative_to(ROOT)}")
            browser.close()
    finally:
        server.stop()
    return 0
