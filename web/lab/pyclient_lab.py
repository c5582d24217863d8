"""The benchmark pages' Python: pyclient alone, with web/lab/reference.html's query parameters
(web/lab/pyclient.html runs it with PyScript, web/lab/pyclient-lean.html with js/boot.js).

``pyprofile=1`` runs the session under ``cProfile`` and leaves the top entries in
``window.pyclientProfile``. ``performance.mark``s: python-started, pyclient-imported, connected.
"""

import js

js.performance.mark("python-started")  # Pyodide booted (by PyScript or js/boot.js): this code runs

import asyncio  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402

import pyclient  # noqa: E402
from pyclient.browser.jsutil import js_object  # noqa: E402

js.performance.mark("pyclient-imported")

PAGE_PARAMS = ("protocol", "transport", "audio", "autostart", "pyprofile", "early")
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
