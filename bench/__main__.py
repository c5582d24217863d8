"""``python -m bench NAME [options]`` -- see bench/__init__.py for the list."""

from __future__ import annotations

import importlib
import sys

PROGRAMS = {
    "backpressure": "bench.backpressure",
    "bargein": "bench.bargein",
    "load": "bench.load",
    "reconnect": "bench.reconnect",
    "fuzz": "bench.fuzz",
    "latency": "bench.latency",
    "mainthread": "bench.mainthread",
    "screenshot": "bench.screenshot",
    "soak": "bench.soak",
    "startup": "bench.startup",
    "throughput": "bench.throughput",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in PROGRAMS:
        print(f"usage: python -m bench {{{'|'.join(PROGRAMS)}}} [options]", file=sys.stderr)
        return 2
    return importlib.import_module(PROGRAMS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
