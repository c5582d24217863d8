"""When a lost connection is worth another try, and when: the reconnect policy, sans-I/O.

The first building block of reconnect and resume (issue 10). It decides; the browser shell
(not wired yet) will act: close, wait ``delay`` seconds, ask the token provider again, open.

How a connection ended decides whether to try again:

=========================  =========  =================================================
how it ended               verdict    why
=========================  =========  =================================================
1006 (no close frame)      retry      the network dropped or the server died
1011 "unavailable"         retry      the service said it is temporarily unavailable
1012, 1013                 retry      service restart, try again later
Gemini ``goAway``          retry      at once: the server announced the end
1011 (other reasons)       final      an internal error a new connection will not fix
1007, 1008, 1002, 1003     final      the client sent something wrong, or was refused
4000-4999                  final      application codes: auth and quota (OpenAI, Gemini)
OpenAI ``session_expired`` final      handled by opening a *new* session, not a retry
1000, 1001, 1005           final      a clean end, or a server that went away on purpose
=========================  =========  =================================================

Delays are exponential with full jitter (AWS's "full jitter": uniformly random in
``[0, min(cap, base * 2**attempt)]``), so that many clients that lost the same server do not
come back in step; after ``max_attempts`` failed attempts in a row the policy gives up. A
successful connection resets the count. ``history`` keeps the last ``max_history``
connections with their codes and reasons (``stats()["connections"]``).
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import UsageError

RETRY = "retry"
FINAL = "final"

RETRYABLE_CODES = {1006, 1012, 1013}
FINAL_CODES = {1000, 1001, 1002, 1003, 1005, 1007, 1008, 1009, 1010, 1011, 1014, 1015}
UNAVAILABLE = ("unavailable", "overloaded", "try again")  # 1011 reasons that are worth a retry

DEFAULT_BASE_DELAY_S = 0.25
DEFAULT_MAX_DELAY_S = 10.0
DEFAULT_MAX_ATTEMPTS = 10  # with full jitter, about 30 s on average before giving up: a server restart fits
DEFAULT_MAX_HISTORY = 20


def classify(code: int | None, reason: str = "", *, go_away: bool = False) -> tuple[str, str]:
    """``(RETRY | FINAL, why)`` for a connection that ended with ``code``/``reason``."""
    if go_away:
        return RETRY, "the server announced the end of this connection (goAway)"
    if code is None or code == 1006:
        return RETRY, "the connection was lost without a closing handshake"
    if code == 1011:
        if any(word in reason.lower() for word in UNAVAILABLE):
            return RETRY, f"the server is temporarily unavailable ({reason})"
        return FINAL, f"the server failed ({reason or 'internal error'}): a new connection will not fix it"
    if code in RETRYABLE_CODES:
        return RETRY, f"the server went away or asked to try again later (code {code})"
    if 4000 <= code <= 4999:
        return FINAL, f"refused by the application (code {code}{': ' + reason if reason else ''})"
    if code in FINAL_CODES:
        return FINAL, f"code {code}{': ' + reason if reason else ''}"
    return FINAL, f"an unknown close code {code}"


@dataclass
class ConnectionRecord:
    """One connection of a session, for ``stats()["connections"]``."""

    index: int
    opened_at: float
    closed_at: float | None = None
    code: int | None = None
    reason: str = ""
    verdict: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "opened_at": round(self.opened_at, 3),
            "closed_at": None if self.closed_at is None else round(self.closed_at, 3),
            "code": self.code,
            "reason": self.reason[:123],
            "verdict": self.verdict,
        }


@dataclass
class ReconnectPolicy:
    """Backoff and attempts across the connections of one session (see the module docstring)."""

    base_delay: float = DEFAULT_BASE_DELAY_S
    max_delay: float = DEFAULT_MAX_DELAY_S
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    max_history: int = DEFAULT_MAX_HISTORY
    rng: random.Random = field(default_factory=random.Random, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    attempts: int = 0  # failed attempts in a row since the last connection that opened
    reconnects: int = 0  # connections opened after the first
    history: deque[ConnectionRecord] = field(init=False, repr=False)
    _count: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.base_delay <= 0 or self.max_delay < self.base_delay:
            raise UsageError(f"need 0 < base_delay <= max_delay, got {self.base_delay} and {self.max_delay}")
        if self.max_attempts < 0:
            raise UsageError(f"max_attempts must be >= 0, got {self.max_attempts}")
        self.history = deque(maxlen=max(1, self.max_history))

    def opened(self) -> ConnectionRecord:
        """A connection opened (recorded; attempts count on until it is ``confirmed``)."""
        if self._count:
            self.reconnects += 1
        record = ConnectionRecord(self._count, self.clock())
        self._count += 1
        self.history.append(record)
        return record

    def confirmed(self) -> None:
        """The connection works (a first message arrived): the count of failed attempts starts
        again. A socket that opens and fails at once (a resume refused) does not reset it, so
        the policy still gives up."""
        self.attempts = 0

    def closed(self, code: int | None, reason: str = "", *, go_away: bool = False) -> tuple[str, str]:
        """The current connection ended: record it; returns ``classify``'s verdict."""
        verdict, why = classify(code, reason, go_away=go_away)
        if self.history and self.history[-1].closed_at is None:
            record = self.history[-1]
            record.closed_at, record.code, record.reason, record.verdict = self.clock(), code, reason, verdict
        return verdict, why

    def next_delay(self, *, immediate: bool = False) -> float | None:
        """Seconds to wait before the next attempt, or None: give up (``max_attempts`` failed
        attempts in a row). ``immediate``: the server announced the end (goAway), no wait."""
        if self.attempts >= self.max_attempts:
            return None
        ceiling = min(self.max_delay, self.base_delay * 2 ** min(self.attempts, 60))
        self.attempts += 1
        return 0.0 if immediate else self.rng.uniform(0, ceiling)

    def stats(self) -> dict[str, Any]:
        return {
            "reconnects": self.reconnects,
            "attempts": self.attempts,
            "connections": [r.as_dict() for r in self.history],
        }
