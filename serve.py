#!/usr/bin/env python3
"""Serve the pyclient demo and simulate a bursty AI server.

    python serve.py [--host 127.0.0.1] [--port 8000]

``--port 0`` picks a free port. The first line printed is the URL to open.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from aiohttp import web

from devserver.app import DEFAULT_SNDBUF, SetupError, make_app


async def _serve(host: str, port: int, sndbuf: int) -> None:
    runner = web.AppRunner(make_app(sndbuf=sndbuf), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # the real port when --port 0
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    print(f"pyclient demo: http://{shown}:{bound}/", flush=True)
    print("  scenarios: /?scenario=chat|voice|flood|faults|upload   stats: /stats   stop: Ctrl+C", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--sndbuf", type=int, default=DEFAULT_SNDBUF, help="per-connection socket send buffer (bytes)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    try:
        asyncio.run(_serve(args.host, args.port, args.sndbuf))
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
