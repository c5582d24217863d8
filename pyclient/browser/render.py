"""DOM sinks: the token renderer (text channel) and tool preview cards (tools channel).

Both only ever create text nodes / set ``textContent``: server text is never parsed as HTML.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import js

from .jsutil import ProxyOwner, paint_scheduler

DEFAULT_MAX_PENDING_CHARS = 64 * 1024
MAX_NODES_SINCE_MARK = 4096  # text nodes a rollback can take back; past it the mark is lost
FALLBACK_FLUSH_MS = 100  # requestAnimationFrame does not run in hidden tabs
DEFAULT_MAX_TOOL_CARDS = 100
MAX_RESULT_PREVIEW_CHARS = 4000  # a card shows the start of a large result
REFUSALS = {  # calls that never ran: what their card says
    "denied_by_user": "denied · did not run · error result sent",
    "approval_timeout": "not approved in time · did not run · error result sent",
}


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
        self.waits = 0  # writes that had to wait for a paint (the text channel stalled the stream)
        self._pending: list[str] = []
        self.pending_chars = 0
        self.pending_bytes = 0
        self.chars_rendered = 0
        self.flushes = 0
        self._scheduled = False
        self._drained = asyncio.Event()
        self._drained.set()
        self._owner = ProxyOwner()
        self._paint = paint_scheduler(self._owner.proxy(self._flush), FALLBACK_FLUSH_MS)
        self._arm_paint = self._paint.arm  # (kept: one crossing per paint, not two)
        self._mark: int | None = 0  # where a rollback returns to (None: too far back to return)
        self._since_mark: list[tuple[Any, int]] = []  # (text node, chars) appended since the mark
        self.rolled_back_chars = 0

    @property
    def total_chars(self) -> int:
        """Characters written so far: rendered plus waiting to be painted."""
        return self.chars_rendered + self.pending_chars

    def mark(self) -> None:
        """Remember this point: ``rollback()`` returns the transcript to it."""
        self.flush_now()
        self._mark = self.chars_rendered
        self._since_mark.clear()

    def rollback(self) -> int:
        """Take back the text written since ``mark()`` (a turn a server will send again after a
        reconnect); returns how many characters went, or -1 if the mark was lost (more than
        ``MAX_NODES_SINCE_MARK`` paints ago), when nothing is taken back."""
        self.flush_now()
        if self._mark is None:
            return -1
        removed = 0
        for node, n in reversed(self._since_mark):
            node.remove()
            removed += n
        self._since_mark.clear()
        self.chars_rendered -= removed
        self.rolled_back_chars += removed
        return removed

    async def write(self, text: str) -> None:
        if self.pending_chars >= self.max_pending_chars:
            self.waits += 1
        while self.pending_chars >= self.max_pending_chars:
            self._drained.clear()
            await self._drained.wait()
        self.write_now(text)

    def write_now(self, text: str) -> bool:
        """Queue ``text`` for the next paint unless too much waits already (then False:
        ``write`` waits for room)."""
        if self.pending_chars >= self.max_pending_chars:
            return False
        self._pending.append(text)
        self.pending_chars += len(text)
        self.pending_bytes += len(text.encode())
        self._schedule()
        return True

    def _schedule(self) -> None:
        if self._scheduled:
            return
        self._scheduled = True
        self._arm_paint()

    def _flush(self, *_: Any) -> None:  # the paint scheduler's: a frame, or the fallback timer
        if not self._scheduled:
            return
        self._scheduled = False
        self.flush_now()

    def flush_now(self) -> None:
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        if self.element is not None:
            node = js.document.createTextNode(text)
            self.element.appendChild(node)
            if self._mark is not None:
                if len(self._since_mark) < MAX_NODES_SINCE_MARK:
                    self._since_mark.append((node, len(text)))
                else:  # too much to keep track of: this turn can no longer be taken back
                    self._mark = None
                    self._since_mark.clear()
        self.chars_rendered += len(text)
        self.pending_chars = 0
        self.pending_bytes = 0
        self.flushes += 1
        self._drained.set()

    def close(self) -> None:
        if self._scheduled:
            self._scheduled = False
            self._paint.cancel()
        self.flush_now()
        self._owner.close()


class ToolCards:
    """One card per tool call: name, streaming arguments, status, result or error.

    Bounded: at most ``max_cards`` cards stay in the page; the oldest are removed.
    """

    def __init__(self, container: Any, max_cards: int = DEFAULT_MAX_TOOL_CARDS) -> None:
        if max_cards < 1:
            raise ValueError(f"max_cards must be at least 1, got {max_cards}")
        self.container = container
        self.max_cards = max_cards
        self._cards: dict[str, dict[str, Any]] = {}  # insertion order = age
        self.removed = 0

    @property
    def count(self) -> int:
        return len(self._cards)

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
        while len(self._cards) > self.max_cards:
            oldest = self._cards.pop(next(iter(self._cards)))
            oldest["card"].remove()
            self.removed += 1

    def arguments(self, call_id: str, delta: str) -> None:
        c = self._cards.get(call_id)
        if c is not None:
            c["args"].append(js.document.createTextNode(delta))

    def awaiting(self, call_id: str, name: str) -> None:
        """The call's arguments are complete and it waits for a person's decision."""
        if call_id not in self._cards:
            self.started(call_id, name)
        self._status(call_id, "awaiting", "awaiting approval")

    def approved(self, call_id: str) -> None:
        self._status(call_id, "running", "approved · running")

    def cancelled(self, call_id: str, ran: bool = False, why: str = "cancelled by the server") -> None:
        """The server withdrew the call: the card says so, and that no result was sent. A card
        whose result already went out is left as it is."""
        c = self._cards.get(call_id)
        if c is not None and (ran or any(s in str(c["card"].className) for s in ("running", "awaiting"))):
            self._status(call_id, "cancelled", f"{why} · no result sent")

    def _status(self, call_id: str, cls: str, text: str) -> None:
        c = self._cards.get(call_id)
        if c is not None:
            c["card"].className = "tool-card " + cls
            c["status"].textContent = text

    def finished(self, outcome: Any, payload: Any) -> None:
        """Show a ``ToolOutcome``: status, time (and how long a sync tool blocked the page)."""
        if self.container is None:
            return
        if outcome.call_id not in self._cards:
            self.started(outcome.call_id, outcome.name)
        c = self._cards[outcome.call_id]
        c["card"].className = "tool-card " + ("ok" if outcome.ok else "failed")
        kind = (outcome.error or {}).get("type")
        if kind in REFUSALS:
            self._status(outcome.call_id, "denied", REFUSALS[kind])
            c["result"].textContent = json.dumps(payload, ensure_ascii=False)
            return
        status = f"{'done' if outcome.ok else 'error'} · {outcome.duration_ms:.1f} ms"
        if outcome.sync:
            status += " · sync: blocked the page"
            if outcome.over_timeout:
                status += " past its timeout (only async tools can be stopped)"
        c["status"].textContent = status
        text = json.dumps(payload, ensure_ascii=False)
        if len(text) > MAX_RESULT_PREVIEW_CHARS:
            text = text[:MAX_RESULT_PREVIEW_CHARS] + f"… ({len(text):,} characters)"
        c["result"].textContent = text


class AudioUnlock:
    """A "Click to enable audio" button, shown while the AudioContext waits for a user gesture
    (Safari requires one on every platform; so can any browser's autoplay policy).

    A click calls ``on_click`` (the client resumes whichever context is current) from inside
    the gesture. The button leaves as soon as ``ctx`` runs (its ``statechange``), and its two
    proxies are destroyed then (or by ``close()``: a new context replaces the button). Placed
    just before ``anchor`` (the transcript), else at the top of the body.
    """

    def __init__(self, ctx: Any, on_click: Any, anchor: Any = None) -> None:
        self.ctx = ctx
        self._on_click = on_click
        self._owner = ProxyOwner()
        button = js.document.createElement("button")
        button.type = "button"
        button.className = "pyclient-audio-unlock"
        button.textContent = "Click to enable audio"
        button.setAttribute("aria-live", "polite")
        button.addEventListener("click", self._owner.proxy(self._click))
        self._state = self._owner.proxy(self._state_changed)
        ctx.addEventListener("statechange", self._state)
        if anchor is not None and anchor.parentNode is not None:
            anchor.before(button)
        else:
            js.document.body.prepend(button)
        self.button: Any = button

    @property
    def shown(self) -> bool:
        return self.button is not None

    def _click(self, *_: Any) -> None:
        self._on_click()  # synchronously, inside the user gesture

    def _state_changed(self, *_: Any) -> None:
        if self.ctx.state == "running":
            self.close()

    def close(self) -> None:
        if self.button is None:
            return
        self.ctx.removeEventListener("statechange", self._state)
        self.button.remove()
        self.button = None
        self._owner.close()
