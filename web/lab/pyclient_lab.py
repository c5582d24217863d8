"""The benchmark pages' Python: pyclient alone, with web/lab/reference.html's query parameters
(web/lab/pyclient.html runs it with PyScript, web/lab/pyclient-lean.html with js/boot.js).

``pyprofile=1`` runs the session under ``cProfile`` and leaves the top entries in
``window.pyclientProfile``. ``performance.mark``s: python-started, pyclient-imported,
client-created, connected. ``window.pyclientBytecode``: how many of pyclient's modules were
loaded from the bytecode /pyclient.zip ships (``bytecode=0`` on the lean page: none).
"""

import js

js.performance.mark("python-started")  # Pyodide booted (by PyScript or js/boot.js): this code runs

import asyncio  # noqa: E402
import datetime  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402

import pyclient  # noqa: E402
from pyclient.browser.jsutil import js_object  # noqa: E402

js.performance.mark("pyclient-imported")


def from_bytecode(module) -> bool:
    """Whether ``module`` was loaded from the bytecode /pyclient.zip ships (devserver/bytecode.py),
    not compiled in the page: its .pyc is this interpreter's (magic number) and still the
    shipped one (unchecked hash; one the import system wrote itself would be timestamped)."""
    cached = getattr(module, "__cached__", None)
    try:
        with open(cached, "rb") as f:
            header = f.read(8)
    except (OSError, TypeError):
        return False
    return header[:4] == importlib.util.MAGIC_NUMBER and int.from_bytes(header[4:8], "little") == 0b01


def report_bytecode():  # at the end: the browser modules and the protocol's codec too
    names = sorted(n for n in sys.modules if n == "pyclient" or n.startswith("pyclient."))
    js.window.pyclientBytecode = js_object(
        modules=len(names), from_bytecode=sum(from_bytecode(sys.modules[n]) for n in names)
    )


PAGE_PARAMS = ("protocol", "transport", "audio", "autostart", "pyprofile", "early", "bytecode")
PROVIDERS = {"openai-realtime": "openai", "gemini-live": "gemini"}

params = js.URLSearchParams.new(js.location.search)
protocol = params.get("protocol") or "pyclient"
audio = params.get("audio") or "auto"
scenario = js.URLSearchParams.new()
for name in params.keys():  # noqa: SIM118 (a JS URLSearchParams)
    if name not in PAGE_PARAMS:
        scenario.set(name, params.get(name))


async def mint():
    resp = await js.fetch(f"/session?provider={PROVIDERS[protocol]}&{scenario.toString()}", js_object(method="POST"))
    data = json.loads(await resp.text())
    return {"token": data["token"], "url": data["url"]}


client = pyclient.Client(
    protocol=protocol,
    token=None if protocol == "pyclient" else mint,
    transport=params.get("transport") or "auto",
    transcript="transcript",
    tool_cards="tools",
    audio=audio != "off",
    audio_mode=audio if audio != "off" else "auto",
)
js.performance.mark("client-created")  # pyclient.browser imported


@client.tool
def calculator(expression: str) -> float:
    "Multiplies: 'a * b' only."
    a, b = expression.split("*")
    return float(a) * float(b)


@client.tool
def clock() -> str:
    "The time, as the page sees it."
    return datetime.datetime.now().isoformat()


async def main():
    profile = None
    if params.get("pyprofile"):
        import cProfile

        profile = cProfile.Profile()
        profile.enable()
    js.document.body.dataset.pyclient = "ready"
    try:
        await client.connect(f"/ws?{scenario.toString()}" if protocol == "pyclient" else None)
        js.performance.mark("connected")
        await client.wait_closed()
    finally:  # however it ended (a failed connect too): the page says so, and the profile is left
        report_bytecode()
        js.document.body.dataset.ended = client.state  # cheap to poll (bench/mainthread.py): not stats()
        if profile is not None:
            import io
            import pstats

            profile.disable()
            out = io.StringIO()
            pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(25)
            js.window.pyclientProfile = out.getvalue() + f"\nsession ended: {client.state} {client.error or ''}\n"


client.expose_stats()
main_task = asyncio.ensure_future(main())  # noqa: RUF006 (a module global: kept)
