"""Tool calls a person approves before they run: the pending queue, its bound, its timeouts.

Plain ``asyncio``, no browser APIs (the dialog that shows the queue is
``pyclient.browser.approval``), so it runs and is tested under CPython.

A tool registered with ``needs_approval=True`` (or a policy ``needs_approval=lambda call:
...``) does not run when its arguments are complete: its call waits here until someone
approves or denies it. Each request ends exactly one way:

===============  ================================================================  ===========
decision         how                                                               sent
===============  ================================================================  ===========
``approved``     ``request.approve()``: the tool runs, its result is sent          its result
``denied``       ``request.deny()``: nothing runs                                  ``denied_by_user``
``timeout``      no decision within the tool's ``approval_timeout``                ``approval_timeout``
``cancelled``    the server withdrew the call, or the connection ended             nothing
===============  ================================================================  ===========

Waiting for a person never stalls the stream: text, audio and other tools go on while calls
wait. The queue is bounded (``max_pending``); only a call that arrives while it is full waits
for room, which stalls the stream (counted in ``stalls``).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import UsageError
from .events import ToolCallReady

DEFAULT_MAX_PENDING_APPROVALS = 8

APPROVED = "approved"
DENIED = "denied"
TIMEOUT = "timeout"
CANCELLED = "cancelled"

ApprovalPolicy = bool | Callable[[ToolCallReady], bool]


@dataclass(eq=False)
class ApprovalRequest:
    """One call waiting for a decision. A page with its own UI calls ``approve()`` or
    ``deny()``; the first decision counts, later ones are ignored."""

    call_id: str
    name: str
    arguments: dict[str, Any]
    timeout: float | None  # seconds to decide; None: no limit
    arrived: float  # the queue's clock
    decision: str | None = None
    reason: str = ""
    _decided: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _queue: ApprovalQueue | None = field(default=None, repr=False)

    @property
    def pending(self) -> bool:
        return self.decision is None

    def approve(self) -> bool:
        """Let the call run. Returns False if it was already decided (nothing changes)."""
        return self._decide(APPROVED, "approved by the user")

    def deny(self, reason: str = "the user denied this call") -> bool:
        """Refuse the call: nothing runs, the server gets ``denied_by_user`` with ``reason``."""
        return self._decide(DENIED, reason)

    def error(self) -> dict[str, str] | None:
        """The structured error sent to the server for a refused call (None if approved)."""
        if self.decision == DENIED:
            return {"type": "denied_by_user", "message": self.reason}
        if self.decision == TIMEOUT:
            return {"type": "approval_timeout", "message": self.reason}
        return None

    def _decide(self, decision: str, reason: str) -> bool:
        if self.decision is not None:
            return False
        self.decision = decision
        self.reason = reason
        self._decided.set()
        if self._queue is not None:
            self._queue._settled(self)
        return True


class ApprovalQueue:
    """The calls awaiting a decision, in arrival order, at most ``max_pending`` of them.

    ``on_change(request)`` listeners hear of every request added and every decision (the
    dialog redraws from ``pending``). Counters: ``approved``, ``denied`` (by a person or a
    timeout), ``timeouts``, ``cancelled``, ``stalls`` (calls that had to wait for room).
    """

    def __init__(
        self, max_pending: int = DEFAULT_MAX_PENDING_APPROVALS, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_pending < 1:
            raise UsageError(f"max_pending_approvals must be at least 1, got {max_pending}")
        self.max_pending = max_pending
        self._clock = clock
        self._pending: dict[str, ApprovalRequest] = {}  # insertion order = arrival order
        self._room = asyncio.Event()
        self._room.set()
        self._listeners: list[Callable[[ApprovalRequest], Any]] = []
        self.approved = 0
        self.denied = 0
        self.timeouts = 0
        self.cancelled = 0
        self.stalls = 0
        self.listener_errors: list[str] = []
        self.shut_reason: str | None = None  # set by shut(): nothing is queued any more

    @property
    def pending(self) -> list[ApprovalRequest]:
        return list(self._pending.values())

    @property
    def full(self) -> bool:
        return len(self._pending) >= self.max_pending

    def __len__(self) -> int:
        return len(self._pending)

    def get(self, call_id: str) -> ApprovalRequest | None:
        return self._pending.get(call_id)

    def on_change(self, listener: Callable[[ApprovalRequest], Any]) -> None:
        self._listeners.append(listener)

    async def wait_for_room(self) -> bool:
        """Return at once while the queue has room; else wait (the one place the stream
        stalls on approvals), counted in ``stalls``. False: the queue was shut meanwhile (the
        connection ended): the call cannot be queued, nor answered."""
        if self.full and self.shut_reason is None:
            self.stalls += 1
            while self.full and self.shut_reason is None:
                self._room.clear()
                await self._room.wait()
        return self.shut_reason is None

    def shut(self, reason: str) -> int:
        """The connection ended: every pending request ends ``cancelled`` and a stalled
        ``wait_for_room`` returns False. Returns how many were pending."""
        if self.shut_reason is None:
            self.shut_reason = reason
        n = self.cancel_all(reason)
        self._room.set()
        return n

    def add(self, call: ToolCallReady, timeout: float | None = None) -> ApprovalRequest:
        """Queue ``call`` (call ``wait_for_room`` first: adding to a full queue is a bug)."""
        if self.shut_reason is not None:
            raise UsageError(f"approval queue shut: {self.shut_reason}")
        if self.full:
            raise UsageError(f"approval queue full ({self.max_pending} pending)")
        if call.call_id in self._pending:
            raise UsageError(f"call {call.call_id!r} is already awaiting approval")
        if timeout is not None and timeout <= 0:
            raise UsageError(f"approval_timeout must be positive, got {timeout}")
        request = ApprovalRequest(call.call_id, call.name, call.arguments, timeout, self._clock(), _queue=self)
        self._pending[call.call_id] = request
        self._notify(request)
        return request

    async def decision(self, request: ApprovalRequest) -> str:
        """Wait for ``request`` to be decided; past its timeout it is denied (``timeout``).
        If the waiting task is cancelled (the server withdrew the call), it is ``cancelled``."""
        try:
            if request.timeout is None:
                await request._decided.wait()
            else:
                await asyncio.wait_for(request._decided.wait(), request.timeout)
        except TimeoutError:
            request._decide(TIMEOUT, f"no decision within {request.timeout:g} s")
        except asyncio.CancelledError:
            request._decide(CANCELLED, "withdrawn by the server")
            raise
        return request.decision or CANCELLED

    def cancel(self, call_id: str, reason: str = "withdrawn by the server") -> bool:
        """Take a pending call out of the queue without running it or answering it."""
        request = self._pending.get(call_id)
        return request is not None and request._decide(CANCELLED, reason)

    def cancel_all(self, reason: str) -> int:
        """End every pending request as ``cancelled`` (the connection ended); returns how many."""
        return sum(request._decide(CANCELLED, reason) for request in self.pending)

    def stats(self) -> dict[str, int]:
        return {
            "awaiting_approval": len(self._pending),
            "approved": self.approved,
            "denied": self.denied,
            "approval_timeouts": self.timeouts,
            "approval_cancelled": self.cancelled,
            "approval_stalls": self.stalls,
            "max_pending_approvals": self.max_pending,
        }

    # ------------------------------------------------------------------ internals

    def _settled(self, request: ApprovalRequest) -> None:
        if self._pending.pop(request.call_id, None) is None:
            return
        if request.decision == APPROVED:
            self.approved += 1
        elif request.decision in (DENIED, TIMEOUT):
            self.denied += 1
            self.timeouts += request.decision == TIMEOUT
        else:
            self.cancelled += 1
        self._room.set()
        self._notify(request)

    def _notify(self, request: ApprovalRequest) -> None:
        for listener in self._listeners:
            try:
                listener(request)
            except Exception as exc:  # a broken UI must not lose the decision
                self.listener_errors.append(f"{type(exc).__name__}: {exc}")
                del self.listener_errors[:-20]


async def ask(request: ApprovalRequest, callback: Callable[[ApprovalRequest], Any]) -> None:
    """Let a page's own UI decide ``request``: ``callback(request)`` returns True or False (or
    an awaitable of one), or None when it will call ``request.approve()`` / ``deny()`` later.
    A callback that raises denies the call, saying why: failing safe."""
    try:
        answer = callback(request)
        if inspect.isawaitable(answer):
            answer = await answer
    except Exception as exc:
        request.deny(f"the page's approval callback failed: {type(exc).__name__}: {exc}")
        return
    if answer is None:
        return
    if answer:
        request.approve()
    else:
        request.deny()


def needs_approval(policy: ApprovalPolicy, call: ToolCallReady) -> bool:
    """Apply a tool's policy to a call. A policy that raises counts as 'ask': failing safe."""
    if not callable(policy):
        return bool(policy)
    try:
        return bool(policy(call))
    except Exception:
        return True
