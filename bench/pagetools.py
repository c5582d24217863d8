"""What the browser benchmarks share: which pages they compare, how they run one session,
the machine they ran on, and where results go.

Every benchmark compares pyclient (the demo page) with ``web/lab/reference.html``, a
pure-JavaScript client doing the same work, side by side in one run of the program.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from devserver.harness import ROOT, launch_args

OUT = ROOT / "docs" / "benchmarks"
# (browser, transport): Firefox has no WebSocketStream.
CONFIGS = [("chromium", "websocketstream"), ("chromium", "websocket"), ("firefox", "websocket")]
CLIENTS = [("js reference", "lab/reference.html"), ("pyclient", "lab/pyclient.html")]
LEAN = ("pyclient, lean start", "lab/pyclient-lean.html")  # js/boot.js + js/early.js, no PyScript
PROTOCOLS = ["pyclient", "openai-realtime", "gemini-live"]
SESSION_TIMEOUT_MS = 600_000

# Records, from the first paint on, every text node added to #transcript: its UTF-8 bytes so
# far and the wall clock (ms) right then; and every stall of the main thread over 50 ms
# (a timer that fires late: works in every browser, unlike the long-task API).
OBSERVE_PAGE = """
(() => {
  const dom = window.__dom = { bytes: 0, at: [], stalls: [], longTasks: [] };
  const enc = new TextEncoder();
  const now = () => performance.timeOrigin + performance.now();
  document.addEventListener("DOMContentLoaded", () => {
    const el = document.getElementById("transcript");
    if (!el) return;
    new MutationObserver((records) => {
      const t = now();
      for (const r of records) for (const n of r.addedNodes) {
        if (n.nodeType === Node.TEXT_NODE) dom.bytes += enc.encode(n.data).length;
      }
      if (dom.at.length < 200000) dom.at.push([dom.bytes, t]);
    }).observe(el, { childList: true });
  });
  let last = performance.now();
  setInterval(() => {
    const t = performance.now();
    if (t - last > 60) dom.stalls.push([Math.round(t), Math.round(t - last - 10)]);
    last = t;
  }, 10);
  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) dom.longTasks.push([Math.round(e.startTime), Math.round(e.duration)]);
    }).observe({ type: "longtask", buffered: true });
  } catch (e) { dom.longTasks = null; }  // Firefox has no long-task entries
})();
"""


def page_url(server_url: str, client_path: str, protocol: str, query: dict[str, Any]) -> str:
    # OpenAI's and Gemini's sessions have no "done": the emulation hangs up after the scenario.
    ending = {} if protocol == "pyclient" else {"hangup": 0.5}
    return server_url + client_path + "?" + urlencode({**ending, **query, "protocol": protocol, "autostart": 1})


def run_session(page: Any, url: str) -> dict[str, Any]:
    """Open ``url`` (a page that autostarts one session) and wait for its end; its stats."""
    page.goto(url)
    page.wait_for_function("document.body.dataset.pyclient === 'ready'", timeout=120_000)
    page.wait_for_function(
        "window.pyclientStats && ['closed', 'error'].includes(pyclientStats().state)",
        timeout=SESSION_TIMEOUT_MS,
        polling=200,
    )
    return page.evaluate("pyclientStats()")


def pyprofile_run(page: Any, url: str) -> str:
    """One session of ``url`` with ``pyprofile=1`` (``web/lab/pyclient_lab.py``): the page's
    ``cProfile`` table, by self time."""
    run_session(page, url + "&pyprofile=1")
    try:
        page.wait_for_function("window.pyclientProfile !== undefined", timeout=60_000)
    except Exception as exc:
        st = page.evaluate("[pyclientStats().state, pyclientStats().error]")
        raise RuntimeError(f"no profile 60 s after the session ended ({st})") from exc
    return str(page.evaluate("window.pyclientProfile"))


def pyprofile_section(title: str, text: str, rows: int = 16) -> list[str]:
    """A ``pyprofile_run`` table's head as a markdown section (paths shortened)."""
    short = text.replace("/home/pyodide/", "").replace("/lib/python314.zip/", "")
    table = [line for line in short.splitlines() if line.strip()]
    start = next((i for i, line in enumerate(table) if line.lstrip().startswith("ncalls")), 0)
    return [
        "",
        f"## {title}",
        "",
        "One more session under Python's `cProfile` (`web/lab/pyclient.html?pyprofile=1`), by self time; "
        "the profiler slows every call (calls into JavaScript most), so read the ranking, not the totals.",
        "",
        "```",
        *table[:1],
        *table[start : start + rows],
        "```",
    ]


def clock_offset_ms(page: Any, rounds: int = 15) -> dict[str, float]:
    """The server's wall clock minus the page's, from ``rounds`` fetches of ``/clock``: the
    round trip with the smallest delay gives the estimate (NTP's rule); its half-delay is the
    most it can be off."""
    samples = page.evaluate(
        """async (rounds) => {
          const out = [];
          for (let i = 0; i < rounds; i++) {
            const t0 = performance.timeOrigin + performance.now();
            const r = await fetch("/clock", { cache: "no-store" });
            const { ms } = await r.json();
            const t1 = performance.timeOrigin + performance.now();
            out.push([t0, ms, t1]);
          }
          return out;
        }""",
        rounds,
    )
    t0, server, t1 = min(samples, key=lambda s: s[2] - s[0])
    return {"offset_ms": server - (t0 + t1) / 2, "uncertainty_ms": (t1 - t0) / 2}


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def machine(versions: dict[str, str]) -> str:
    return (
        f"Machine: {platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}; browsers: "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + "."
    )


def ratio(ours: float | None, theirs: float | None, higher_is_better: bool = True) -> str:
    if not ours or not theirs:
        return "n/a"
    return f"{(ours / theirs if higher_is_better else theirs / ours):.2f}x"


def configs(p: Any, versions: dict[str, str]) -> Any:
    """Each (browser, transport) of CONFIGS with its launched browser (closed after); the
    browsers' versions go into ``versions``."""
    for browser_name, transport in CONFIGS:
        browser = getattr(p, browser_name).launch(**launch_args(browser_name))
        versions[browser_name] = browser.version
        try:
            yield browser_name, transport, browser
        finally:
            browser.close()


def write_results(out: Path, name: str, md: str, results: dict[str, Any], args: Any) -> None:
    """``name``.md and ``name``.json (with the arguments) in ``out``; prints the report."""
    (out / f"{name}.md").write_text(md)
    (out / f"{name}.json").write_text(json.dumps({"args": vars(args) | {"out": str(out)}, **results}, indent=1))
    print(md)


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend, or None (no plot) where it is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot", flush=True)
        return None
    return plt
