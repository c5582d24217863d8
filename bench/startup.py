"""Start-up: page open to the first token in the DOM, against a bare Pyodide boot.

    python -m bench startup [--runs R]

Pages from the same dev server, each opened in a fresh browser context (first visit: empty
HTTP cache) and then again in the same context (second visit: what the cache kept):

* ``web/lab/bare-pyodide.html``: ``loadPyodide()`` and one line of Python, nothing else
  (``window.__bootMs``): the floor any Python page pays;
* ``web/lab/pyclient.html``: PyScript, pyclient, one ``chat`` session; the time of the first
  text node in ``#transcript`` (a ``MutationObserver``);
* ``web/lab/pyclient-lean.html``: the same without PyScript (``js/boot.js``, ``js/early.js``),
  and once more with ``bytecode=0`` (the package's sources only, compiled in the page);
* ``web/lab/reference.html``: the JavaScript reference, same session, same measure.

All times are from navigation start (``performance.now()``). Median of ``--runs``. Writes
docs/benchmarks/startup.{json,md,png}.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

from devserver.harness import launch_args, start_server

from .pagetools import LEAN, OBSERVE_PAGE, OUT, SESSION_TIMEOUT_MS, machine, median, page_url, pyplot, write_results

BROWSERS = ["chromium", "firefox"]
QUERY = {"scenario": "chat", "turns": 1, "tokens": 50, "burst": 0, "pause": 0, "audio": "off"}
HANDSHAKE_MS = 300  # a far provider's TCP + TLS + upgrade round trips, emulated by the dev server
SOURCES_ONLY = f"{LEAN[0]}, no bytecode: first token"
PAGES = [  # name, path, the mark that ends it (None: the first token), more query
    ("bare Pyodide boot", "lab/bare-pyodide.html", "window.__bootMs", {}),
    ("pyclient (PyScript): first token", "lab/pyclient.html", None, {}),
    (f"{LEAN[0]}: first token", LEAN[1], None, {}),
    (SOURCES_ONLY, LEAN[1], None, {"bytecode": 0}),  # what shipping bytecode saves
    ("JS reference: first token", "lab/reference.html", None, {}),
]


# js/boot.js's (the lean page), then web/lab/pyclient_lab.py's
MARKS = ["pyodide-ready", "package-unpacked", "python-started", "pyclient-imported", "client-created", "connected"]


def measure(page: Any, url: str, mark: str | None, marks: dict[str, list[float]]) -> float:
    page.goto(url)
    if mark:
        page.wait_for_function(f"{mark} !== undefined", timeout=120_000)
        return float(page.evaluate(mark))
    page.wait_for_function("window.__dom && window.__dom.at.length > 0", timeout=120_000, polling=20)
    seen = page.evaluate("Object.fromEntries(performance.getEntriesByType('mark').map((m) => [m.name, m.startTime]))")
    for name, at in seen.items():
        marks.setdefault(name, []).append(at)
    if "python-started" in seen:  # a pyclient_lab.py page: how many modules came as bytecode
        page.wait_for_function("window.pyclientBytecode !== undefined", timeout=SESSION_TIMEOUT_MS)
        loaded = page.evaluate("pyclientBytecode")
        marks.setdefault("bytecode", []).append(f"{loaded['from_bytecode']}/{loaded['modules']}")
    return float(page.evaluate("window.__dom.at[0][1] - performance.timeOrigin"))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench startup", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    versions: dict[str, str] = {}
    server = start_server()
    try:
        with sync_playwright() as p:
            for browser_name in BROWSERS:
                browser = getattr(p, browser_name).launch(**launch_args(browser_name))
                versions[browser_name] = browser.version
                for (name, path, mark, extra), handshake in [(page, 0) for page in PAGES] + [
                    (page, HANDSHAKE_MS) for page in PAGES if page[2] is None and page[0] != SOURCES_ONLY
                ]:
                    first: list[float] = []
                    second: list[float] = []
                    marks: dict[str, list[float]] = {}
                    for k in range(args.runs):
                        print(f"{browser_name} / {name} / handshake {handshake} ms run {k + 1} ...", flush=True)
                        context = browser.new_context()
                        context.add_init_script(OBSERVE_PAGE)
                        page = context.new_page()
                        url = page_url(server.url, path, "pyclient", {**QUERY, **extra, "handshake_ms": handshake})
                        first.append(measure(page, url, mark, marks))
                        page.goto("about:blank")
                        second.append(measure(page, url, mark, {}))
                        context.close()
                    rows.append(
                        {
                            "browser": browser_name,
                            "page": name,
                            "handshake_ms": handshake,
                            "first_visit_ms": median(first),
                            "second_visit_ms": median(second),
                            "first_runs": first,
                            "second_runs": second,
                            "first_visit_marks_ms": {k: median(v) for k, v in marks.items() if k != "bytecode"},
                            "bytecode_modules": sorted(set(marks.get("bytecode", []))),
                        }
                    )
                browser.close()
    finally:
        server.stop()
    write_results(args.out, "startup", report(rows, versions, args), {"versions": versions, "rows": rows}, args)
    plot(args.out / "startup.png", rows)
    return 0


def plot(path: Path, rows: list[dict[str, Any]]) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, len(BROWSERS), figsize=(11, 4), squeeze=False)
    for ax, browser_name in zip(axes[0], BROWSERS, strict=True):
        mine = [r for r in rows if r["browser"] == browser_name]
        labels = [f"{r['page'].replace(': first token', '')}\n{r['handshake_ms']} ms handshake" for r in mine]
        y = range(len(mine))
        ax.barh([i - 0.2 for i in y], [r["first_visit_ms"] for r in mine], 0.4, label="first visit")
        ax.barh([i + 0.2 for i in y], [r["second_visit_ms"] for r in mine], 0.4, label="second visit")
        ax.set_yticks(list(y), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("ms from navigation start")
        ax.set_title(browser_name)
        ax.legend(fontsize=7)
    fig.suptitle("page open to first token (bare Pyodide: to Python ready)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(rows: list[dict[str, Any]], versions: dict[str, str], args: argparse.Namespace) -> str:
    lines = [
        "# Start-up: page open to first token",
        "",
        f"Median of {args.runs} runs, each in a fresh browser context (first visit) and again in the same "
        "context (second visit), side by side in one run of `bench/startup.py`. Loopback costs nothing, so "
        f"each page runs again with the dev server answering the WebSocket upgrade {HANDSHAKE_MS} ms late "
        "(`handshake_ms`), as a far provider would: the lean page opens its socket while Pyodide boots "
        "(`js/early.js`) and pyclient adopts it. Times from navigation start.",
        "",
        machine(versions),
        "",
        "| browser | page | handshake | first visit (ms) | second visit (ms) | over bare Pyodide (first / second) |",
        "|---|---|---|---|---|---|",
    ]
    for browser_name in BROWSERS:
        mine = [r for r in rows if r["browser"] == browser_name]
        bare = next((r for r in mine if r["page"] == "bare Pyodide boot"), None)
        for r in mine:
            over = "—"
            if bare and r is not bare and r["page"].startswith("pyclient"):
                over = (
                    f"+{r['first_visit_ms'] - bare['first_visit_ms']:,.0f} / "
                    f"+{r['second_visit_ms'] - bare['second_visit_ms']:,.0f} ms"
                )
            lines.append(
                f"| {browser_name} | {r['page']} | {r['handshake_ms']} ms | {r['first_visit_ms']:,.0f} | "
                f"{r['second_visit_ms']:,.0f} | {over} |"
            )
    lines += [
        "",
        "Where pyclient's first visit goes (median ms from navigation start; `performance.mark` in "
        "`js/boot.js` and `web/lab/pyclient_lab.py`): on the lean page, `loadPyodide()` done "
        "(`pyodide-ready`) and `/pyclient.zip` unpacked (`package-unpacked`); PyScript or "
        "`js/boot.js` done and the page's Python began (`python-started`), `import pyclient` done "
        "(`pyclient-imported`), `pyclient.Client(...)` "
        "made (`client-created`: the browser modules imported), the socket open (`connected`), the "
        "first token in the DOM. The last column: how many of pyclient's modules the page loaded "
        "from the bytecode `/pyclient.zip` ships (`devserver/bytecode.py`) rather than compiling them.",
        "",
        "| browser | page | " + " | ".join(MARKS) + " | first token | from bytecode |",
        "|---|---|" + "---|" * (len(MARKS) + 2),
    ]
    for r in rows:
        m = r.get("first_visit_marks_ms") or {}
        if r["page"].startswith("pyclient") and m and not r["handshake_ms"]:
            cells = " | ".join(f"{m[k]:,.0f}" if m.get(k) is not None else "n/a" for k in MARKS)
            loaded = ", ".join(r.get("bytecode_modules") or ["n/a"])
            lines.append(f"| {r['browser']} | {r['page']} | {cells} | {r['first_visit_ms']:,.0f} | {loaded} |")
    lines += ["", f"Reproduce: `./dev bench startup --runs {args.runs}`", ""]
    return "\n".join(lines)
