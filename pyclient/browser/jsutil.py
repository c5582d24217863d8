"""Small helpers at the Python/JS boundary: proxy ownership, JS objects, byte sources.

Rule (STYLE.md): every proxy has an owner that destroys it. A ``ProxyOwner`` creates the
proxies a component hands to JavaScript and destroys all of them in ``close()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import js
from pyodide.ffi import create_proxy, to_js


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


class BatchSource:
    """``pyclient.frames.ByteSource`` over one binary message of a batch (``js/batch.js``).

    The batch's bytes were copied into Python once: headers, text and JSON are read from
    there; audio payloads are zero-copy views of the batch's JS ``Uint8Array`` (``view_at``).
    """

    __slots__ = ("_end", "_js", "_mv", "_start")

    def __init__(self, mv: memoryview, js_data: Any, start: int, end: int) -> None:
        self._mv, self._js, self._start, self._end = mv, js_data, start, end

    def __len__(self) -> int:
        return self._end - self._start

    def bytes_at(self, offset: int, length: int) -> bytes:
        start = self._start + offset
        return bytes(self._mv[start : min(start + length, self._end)])

    def view_at(self, offset: int, length: int) -> Any:
        start = self._start + offset
        return self._js.subarray(start, min(start + length, self._end))

    def span(self) -> tuple[memoryview, int, int]:
        """The batch's buffer and where this message lies in it (start, end)."""
        return self._mv, self._start, self._end


def unpack_batch(layout: Any, data: Any, texts: Any, own: bool = False) -> tuple[list[Any], int]:
    """A batch from ``js/batch.js`` as messages (``str`` or ``BatchSource``) and their bytes:
    three crossings for the whole batch, none per message. ``own``: each binary message gets
    storage of its own (``bytes``), for messages that outlive the batch in a queue (a
    BatchSource keeps the whole batch alive)."""
    sizes = memoryview(layout.to_bytes()).cast("i").tolist()
    strings = texts.to_py() if -1 in sizes else []
    mv = memoryview(data.to_bytes()) if len(strings) < len(sizes) else memoryview(b"")
    messages: list[Any] = []
    off = text = nbytes = 0
    for n in sizes:
        if n < 0:
            message = strings[text]
            text += 1
            nbytes += len(message)
            messages.append(message)
        else:
            messages.append(mv[off : off + n].tobytes() if own else BatchSource(mv, data, off, off + n))
            off += n
            nbytes += n
    return messages, nbytes


def bytes_to_js(data: bytes) -> Any:
    """Python bytes -> a fresh JS Uint8Array (one copy)."""
    return to_js(memoryview(data))


_importer: Any = None


async def import_module(url: str) -> Any:
    """Dynamic ``import(url)`` of an ES module from Python."""
    global _importer
    if _importer is None:
        _importer = _js_function("(url) => import(url)")
    return await _importer(url)


# The next animation frame, or a timer where frames do not run (hidden tabs), whichever comes
# first (the other is cancelled): arming it is one call from Python, firing it one call into
# Python, where requestAnimationFrame + setTimeout and their cancels took eight crossings.
_PAINT_SCHEDULER_JS = """(flush, fallbackMs) => {
  let raf = 0, timer = 0, armed = false;
  const cancel = () => {
    if (!armed) return false;
    armed = false;
    cancelAnimationFrame(raf);
    clearTimeout(timer);
    return true;
  };
  const fire = () => { if (cancel()) flush(); };
  const arm = () => {
    if (armed) return;
    armed = true;
    raf = requestAnimationFrame(fire);
    timer = setTimeout(fire, fallbackMs);
  };
  return { arm, cancel };
}"""
_paint_scheduler: Any = None


def paint_scheduler(flush: Any, fallback_ms: int) -> Any:
    """``{arm, cancel}``: ``arm()`` has ``flush`` (a proxy) called once, at the next animation
    frame or after ``fallback_ms``, whichever is first; more ``arm()`` calls until then change
    nothing; ``cancel()`` calls it off."""
    global _paint_scheduler
    if _paint_scheduler is None:
        _paint_scheduler = _js_function(_PAINT_SCHEDULER_JS)
    return _paint_scheduler(flush, fallback_ms)


def _js_function(source: str) -> Any:
    from pyodide.code import run_js

    return run_js(source)
