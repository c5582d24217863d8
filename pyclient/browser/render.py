"""DOM sinks: the token renderer (text channel) and tool preview cards (tools channel).

Both only ever create text nodes / set ``textContent``: server text is never parsed as HTML.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import js

from .jsutil import ProxyOwner

DEFAULT_MAX_PENDING_CHARS = 64 * 1024
FALLBACK_FLUSH_MS = 100  # requestAnimationFrame does not run in hidden tabs


def resolve_element(target: Any) -> Any:
    """An element, or an element id / CSS selector string, or None."""
    if target is None or not isinstance(target, str):
        return target
    el = js.document.getElementById(target.lstrip("#"))
    if el is None:
        el = js.document.querySelector(target)
    return el


class TokenRenderer:
    """Appends streamed text to an element, batched per animation frame.

    ``write`` is the backpressure point of the text channel: it waits while more than
    ``max_pending_chars`` are waiting to be painted. Text is never dropped.
    """

    def __init__(self, element: Any, max_pending_chars: int = DEFAULT_MAX_PENDING_CHARS) -> None:
        self.element = element
        self.max_pending_chars = max_pending_chars
        self._pending: list[str] = []
        self.pending_chars = 0
        self.pending_bytes = 0
        self.chars_rendered = 0
        self.flushes = 0
        self._scheduled = False
        self._drained = asyncio.Event()
        self._drained.set()
        self._owner = ProxyOwner()
        self._flush_proxy = self._owner.proxy(self._flush)
        self._raf_id: Any = None
        self._timer_id: Any = None

    async def write(self, text: str) -> None:
        while self.pending_chars >= self.max_pending_chars:
            self._drained.clear()
            await self._drained.wait()
        self._pending.append(text)
        self.pending_chars += len(text)
        self.pending_bytes += len(text.encode())
        self._schedule()

    def _schedule(self) -> None:
        if self._scheduled:
            return
        self._scheduled = True
        self._raf_id = js.requestAnimationFrame(self._flush_proxy)
        self._timer_id = js.setTimeout(self._flush_proxy, FALLBACK_FLUSH_MS)

    def _flush(self, *_: Any) -> None:
        if not self._scheduled:
            return
        self._scheduled = False
        js.cancelAnimationFrame(self._raf_id)
        js.clearTimeout(self._timer_id)
        self.flush_now()

    def flush_now(self) -> None:
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        if self.element is not None:
            self.element.appendChild(js.document.createTextNode(text))
        self.chars_rendered += len(text)
        self.pending_chars = 0
        self.pending_bytes = 0
        self.flushes += 1
        self._drained.set()

    def close(self) -> None:
        if self._scheduled:
            self._scheduled = False
            js.cancelAnimationFrame(self._raf_id)
            js.clearTimeout(self._timer_id)
        self.flush_now()
        self._owner.close()


class ToolCards:
    """One card per tool call: name, streaming arguments, status, result or error."""

    def __init__(self, container: Any) -> None:
        self.container = container
        self._cards: dict[str, dict[str, Any]] = {}

    def _el(self, tag: str, cls: str, text: str = "") -> Any:
        el = js.document.createElement(tag)
        el.className = cls
        el.textContent = text
        return el

    def started(self, call_id: str, name: str | None) -> None:
        if self.container is None or call_id in self._cards:
            return
        card = self._el("div", "tool-card running")
        card.dataset.callId = call_id
        head = self._el("div", "tool-head")
        head.append(self._el("span", "tool-name", name or "?"), self._el("span", "tool-status", "running"))
        args = self._el("pre", "tool-args")
        result = self._el("pre", "tool-result")
        card.append(head, args, result)
        self.container.prepend(card)
        self._cards[call_id] = {"card": card, "args": args, "result": result, "status": head.lastChild}

    def arguments(self, call_id: str, delta: str) -> None:
        c = self._cards.get(call_id)
        if c is not None:
            c["args"].append(js.document.createTextNode(delta))

    def finished(self, call_id: str, name: str | None, ok: bool, payload: Any, ms: float) -> None:
        if self.container is None:
            return
        if call_id not in self._cards:
            self.started(call_id, name)
        c = self._cards[call_id]
        c["card"].className = "tool-card " + ("ok" if ok else "failed")
        c["status"].textContent = f"{'done' if ok else 'error'} · {ms:.1f} ms"
        c["result"].textContent = json.dumps(payload, ensure_ascii=False)
        if len(self._cards) > 200:  # bounded: forget the oldest card's handles
            self._cards.pop(next(iter(self._cards)))
