"""Small helpers at the Python/JS boundary: proxy ownership, JS objects, byte sources.

Rule (STYLE.md): every proxy has an owner that destroys it. A ``ProxyOwner`` creates the
proxies a component hands to JavaScript and destroys all of them in ``close()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import js
from pyodide.ffi import JsProxy, create_proxy, to_js


def js_object(**fields: Any) -> Any:
    """A plain JS object (not a Map) from keyword arguments."""
    return to_js(fields, dict_converter=js.Object.fromEntries)


def to_js_plain(value: Any) -> Any:
    """Convert nested dicts/lists to plain JS objects/arrays."""
    return to_js(value, dict_converter=js.Object.fromEntries)


class ProxyOwner:
    """Creates proxies for JS callbacks and destroys them all on ``close()``.

    ``ProxyOwner.live`` counts the proxies all owners hold right now (``stats()["proxies"]``):
    a count that does not return to its level after a connection ended is a leak.
    """

    live = 0

    def __init__(self) -> None:
        self._proxies: list[Any] = []

    def proxy(self, fn: Callable[..., Any]) -> Any:
        p = create_proxy(fn)
        self._proxies.append(p)
        ProxyOwner.live += 1
        return p

    def close(self) -> None:
        proxies, self._proxies = self._proxies, []
        ProxyOwner.live -= len(proxies)
        for p in proxies:
            try:
                p.destroy()
            except Exception:  # already destroyed
                pass


class ArrayBufferSource:
    """``pyclient.frames.ByteSource`` over a received JS ArrayBuffer (or typed array).

    Headers, text and JSON are copied into Python (``bytes_at``); audio payloads stay in JS
    as zero-copy ``Uint8Array`` views (``view_at``).
    """

    __slots__ = ("_base", "_buf", "_len")

    def __init__(self, data: JsProxy) -> None:
        if js.ArrayBuffer.isView(data):
            self._buf, self._base, self._len = data.buffer, data.byteOffset, data.byteLength
        else:
            self._buf, self._base, self._len = data, 0, data.byteLength

    def __len__(self) -> int:
        return self._len

    def bytes_at(self, offset: int, length: int) -> bytes:
        return js.Uint8Array.new(self._buf, self._base + offset, length).to_bytes()

    def view_at(self, offset: int, length: int) -> Any:
        return js.Uint8Array.new(self._buf, self._base + offset, length)


def bytes_to_js(data: bytes) -> Any:
    """Python bytes -> a fresh JS Uint8Array (one copy)."""
    return to_js(memoryview(data))


_importer: Any = None


async def import_module(url: str) -> Any:
    """Dynamic ``import(url)`` of an ES module from Python."""
    global _importer
    if _importer is None:
        from pyodide.code import run_js

        _importer = run_js("(url) => import(url)")
    return await _importer(url)
