#!/usr/bin/env python3
"""Serve the pyclient demo and simulate a bursty AI server.

    python serve.py [--host 127.0.0.1] [--port 8000] [--allow-origin URL ...] [--connect-src URL ...]
                    [--openai-base URL] [--gemini-base URL]

``--port 0`` picks a free port. The first line printed is the URL to open.

Besides ``/ws`` (pyclient.v1) it emulates an OpenAI Realtime server (``/openai/v1/realtime``) and a
Gemini Live server (``/gemini/ws/...``), and ``POST /session?provider=openai|gemini`` gives pages
an ephemeral token (docs/protocols/). With ``OPENAI_API_KEY`` / ``GEMINI_API_KEY`` set in the
environment those tokens are real ones, minted from the provider's REST API at ``--openai-base``
/ ``--gemini-base`` (default: env ``OPENAI_BASE_URL`` / ``GEMINI_BASE_URL``, else the providers'
own); the keys never leave this process. Without keys the tokens open the emulated sockets.

Only this server's own pages may use ``/ws`` and ``/stats``, and every request must name the
server (127.0.0.1, localhost, [::1] or ``--host``, with the port): other pages and DNS
rebinding get 403. ``--allow-origin`` admits another origin (e.g. a bot's page on
``http://localhost:7860``); ``--connect-src`` lets the pages connect to another origin
(an AI provider), added to the Content-Security-Policy.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from aiohttp import web

from devserver.app import DEFAULT_SNDBUF, SetupError, make_app
from devserver.bytecode import package_zip
from devserver.security import normalise_origin
from devserver.tokens import RATE_LIMIT, ProviderConfig


async def _serve(
    host: str,
    port: int,
    sndbuf: int,
    allowed_origins: list[str],
    connect_src: list[str],
    providers: ProviderConfig,
    session_rate: int = RATE_LIMIT[0],
) -> None:
    app = make_app(
        sndbuf=sndbuf,
        host=host,
        allowed_origins=allowed_origins,
        extra_connect_src=connect_src,
        providers=providers,
        session_rate_limit=(session_rate, RATE_LIMIT[1]),
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    # The first page should not wait for the package's bytecode (built once per state of the
    # sources, devserver/bytecode.py): build it now, beside serving.
    warm = asyncio.get_running_loop().run_in_executor(None, package_zip)
    bound = site._server.sockets[0].getsockname()[1]  # the real port when --port 0
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    print(f"pyclient demo: http://{shown}:{bound}/", flush=True)
    print("  scenarios: /?scenario=chat|voice|flood|faults|upload   stats: /stats   stop: Ctrl+C", flush=True)
    for provider, base in (("openai", providers.openai_base), ("gemini", providers.gemini_base)):
        source = f"real tokens from {base}" if providers.key(provider) else "emulated tokens and socket"
        print(f"  POST /session?provider={provider}: {source}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # A restart (SIGTERM) closes every /ws socket with 1012 "service restart": clients come
        # back and resume their sessions on the next server (devserver/resume.py).
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        warm.cancel()  # not started yet: never; under way: the process exits when it ends (seconds)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--sndbuf", type=int, default=DEFAULT_SNDBUF, help="per-connection socket send buffer (bytes)")
    ap.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="URL",
        help="another origin whose pages may use /ws and /stats (scheme://host[:port]); repeatable",
    )
    ap.add_argument(
        "--connect-src",
        action="append",
        default=[],
        metavar="URL",
        help="an origin the pages may connect to (CSP connect-src, e.g. an AI provider); repeatable",
    )
    ap.add_argument(
        "--openai-base",
        metavar="URL",
        help="OpenAI REST base URL to mint client secrets at when OPENAI_API_KEY is set "
        "(default: env OPENAI_BASE_URL, else https://api.openai.com)",
    )
    ap.add_argument(
        "--gemini-base",
        metavar="URL",
        help="Gemini REST base URL to mint auth tokens at when GEMINI_API_KEY is set "
        "(default: env GEMINI_BASE_URL, else https://generativelanguage.googleapis.com)",
    )
    ap.add_argument(
        "--session-rate",
        type=int,
        default=RATE_LIMIT[0],
        metavar="N",
        help=f"tokens POST /session mints per client address per minute (default {RATE_LIMIT[0]}; every "
        "reconnect asks for a new one)",
    )
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    for origin in args.allow_origin:
        try:
            normalise_origin(origin)
        except ValueError as exc:
            ap.error(f"--allow-origin: {exc}")
    try:
        providers = ProviderConfig.from_env(os.environ, args.openai_base, args.gemini_base)
    except ValueError as exc:
        ap.error(str(exc))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    try:
        asyncio.run(
            _serve(args.host, args.port, args.sndbuf, args.allow_origin, args.connect_src, providers, args.session_rate)
        )
    except SetupError as exc:
        print(f"serve.py: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"serve.py: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
