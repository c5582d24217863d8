"""Flow control, sans-I/O: watermarks, the bounded receive queue, and credit windows.

Three mechanisms, one per situation (docs/PROTOCOL.md has the wire side):

``Watermarks``
    Send side. Writes wait once the transport's buffered amount reaches ``high`` and resume
    when it falls to ``low`` (hysteresis avoids waking for every byte).

``ReceiveQueue``
    Receive side of a classic WebSocket, which cannot stop reading. Holds whole messages up to
    ``max_bytes``. Overflow policy: audio is dropped oldest-first (counted in frames, bytes and
    samples); text, tool and control messages are never dropped -- if no audio is left to drop
    they are admitted over the bound and counted in ``over_bound``.

``CreditWindow`` / ``CreditBalance``
    Credit-based flow control (in the spirit of HTTP/2 WINDOW_UPDATE): the client grants the
    server a byte window and tops it up as its sinks consume; the server never sends a frame
    larger than its remaining credit. Then the receive queue can never overflow.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .errors import UsageError

T = TypeVar("T")

DEFAULT_SEND_HIGH = 256 * 1024
DEFAULT_SEND_LOW = 64 * 1024
DEFAULT_RECEIVE_QUEUE_BYTES = 1024 * 1024
DEFAULT_CREDIT_WINDOW = 512 * 1024


class Watermarks:
    """High/low water marks with hysteresis."""

    def __init__(self, high: int = DEFAULT_SEND_HIGH, low: int | None = None) -> None:
        low = high // 4 if low is None else low
        if not 0 <= low <= high:
            raise UsageError(f"need 0 <= low <= high, got low={low} high={high}")
        self.high = high
        self.low = low
        self.paused = False

    def must_wait(self, level: int) -> bool:
        """Whether a writer seeing ``level`` buffered bytes must wait before writing."""
        if self.paused:
            if level <= self.low:
                self.paused = False
        elif level >= self.high:
            self.paused = True
        return self.paused


@dataclass(slots=True, eq=False)
class _Entry(Generic[T]):
    item: T | None
    nbytes: int
    droppable: bool | None  # None: not asked yet (the queue asks ``classify`` when it must drop)
    seq: int | None
    order: int  # arrival number
    gone: bool = False  # dropped (its item released; skipped when it reaches the head)


MIN_RECEIVE_QUEUE_BYTES = 16
MIN_CREDIT_WINDOW = 64 * 1024  # it must carry the largest frame the server sends


class ReceiveQueue(Generic[T]):
    """A bounded FIFO of received messages with a drop-oldest-audio overflow policy.

    It knows nothing of any wire format: which messages are droppable audio is given with each
    ``push``, or left to ``classify(item)`` (the protocol codec's: ``(droppable, sequence
    number)``), asked only once the queue must make room, so a queue that never overflows
    never looks inside a message; ``samples_of(item)`` (the codec's ``audio_samples``) says
    how many samples a dropped message held, asked only when one is dropped.
    """

    def __init__(
        self,
        max_bytes: int = DEFAULT_RECEIVE_QUEUE_BYTES,
        samples_of: Callable[[T], int] | None = None,
        classify: Callable[[T], tuple[bool, int | None]] | None = None,
    ) -> None:
        if max_bytes < MIN_RECEIVE_QUEUE_BYTES:
            raise UsageError(f"max_bytes={max_bytes} is below the {MIN_RECEIVE_QUEUE_BYTES}-byte minimum")
        self.max_bytes = max_bytes
        self._samples_of = samples_of
        self._classify = classify or (lambda item: (False, None))
        self._q: deque[_Entry[T]] = deque()  # arrival order, dropped entries included (marked gone)
        self._unknown: deque[_Entry[T]] = deque()  # live entries not classified yet, in arrival order
        self._audio: list[tuple[int, _Entry[T]]] = []  # live droppable entries: a heap by arrival
        self._live = 0
        self._gone = 0  # dropped entries still in _q (compacted when they outnumber the live)
        self._order = 0
        self.bytes = 0
        self.bytes_max = 0
        self.dropped_frames = 0
        self.dropped_bytes = 0
        self.dropped_samples = 0
        self.over_bound = 0
        self._dropped_seqs: list[int] = []

    def __len__(self) -> int:
        return self._live

    def push(self, item: T, nbytes: int, *, droppable: bool | None = None, seq: int | None = None) -> None:
        """Queue ``item``; ``droppable`` marks a message made of one audio frame (None: ask
        ``classify`` if it comes to that)."""
        if self.bytes + nbytes > self.max_bytes:
            while self.bytes + nbytes > self.max_bytes and self._drop_oldest_audio():
                pass
            if self.bytes + nbytes > self.max_bytes:
                if droppable is None:
                    droppable, seq = self._classify(item)
                if droppable:
                    self._count_drop(item, nbytes, seq)
                    return
                self.over_bound += 1
        self._order += 1
        e = _Entry(item, nbytes, droppable, seq, self._order)
        self._q.append(e)
        if droppable is None:
            self._unknown.append(e)
        elif droppable:
            heapq.heappush(self._audio, (e.order, e))
        self._live += 1
        self.bytes += nbytes
        self.bytes_max = max(self.bytes_max, self.bytes)

    def push_all(self, items: Iterable[T]) -> None:
        """``push(item, len(item))`` for each item in turn, nothing told about them (a batch as
        a socket delivered it): one call for the lot."""
        q, unknown = self._q, self._unknown
        for item in items:
            n = len(item)  # type: ignore[arg-type]
            if self.bytes + n > self.max_bytes:  # room must be made: the general way
                self.bytes_max = max(self.bytes_max, self.bytes)
                self.push(item, n)
                q = self._q  # a compaction may have replaced it
                continue
            self._order += 1
            e = _Entry(item, n, None, None, self._order)
            q.append(e)
            unknown.append(e)
            self._live += 1
            self.bytes += n
        self.bytes_max = max(self.bytes_max, self.bytes)

    def popping(self) -> Iterator[T]:
        """The queued items, oldest first, each taken off the queue only when asked for (until
        then it may still be dropped, and it counts in ``bytes``): ``pop`` without a call per
        item. It ends when the queue is empty."""
        unknown, audio = self._unknown, self._audio
        while self._live:
            e = self._q.popleft()  # not kept across a yield: a compaction replaces it
            if e.gone:
                self._gone -= 1
                continue
            if e.droppable is None:
                unknown.popleft()
            elif e.droppable:
                heapq.heappop(audio)
            self._live -= 1
            self.bytes -= e.nbytes
            yield e.item  # type: ignore[misc]

    def pop(self) -> tuple[T, int]:
        """The oldest message and its size. Raises IndexError when empty."""
        if not self._live:
            raise IndexError("pop from an empty ReceiveQueue")
        e = self._q.popleft()
        while e.gone:
            self._gone -= 1
            e = self._q.popleft()
        # The oldest live entry is also the oldest of its kind: the head of its index.
        if e.droppable is None:
            self._unknown.popleft()
        elif e.droppable:
            heapq.heappop(self._audio)
        self._live -= 1
        self.bytes -= e.nbytes
        return e.item, e.nbytes  # type: ignore[return-value]

    def take_dropped_seqs(self) -> list[int]:
        """Sequence numbers of dropped frames since the last call (for gap accounting)."""
        seqs, self._dropped_seqs = self._dropped_seqs, []
        return seqs

    def _drop_oldest_audio(self) -> bool:
        """Drop the oldest queued audio message: O(log n), each message classified at most once
        (a queue held over its bound by text must not rescan itself on every push)."""
        while self._unknown:
            e = self._unknown.popleft()
            e.droppable, e.seq = self._classify(e.item)  # type: ignore[arg-type]
            if e.droppable:
                heapq.heappush(self._audio, (e.order, e))
        if not self._audio:
            return False
        _, e = heapq.heappop(self._audio)
        e.gone = True
        self._live -= 1
        self.bytes -= e.nbytes
        self._count_drop(e.item, e.nbytes, e.seq)  # type: ignore[arg-type]
        e.item = None  # released now; its place in the line goes at the head, or in a compaction
        self._gone += 1
        if self._gone > self._live + 64:  # a queue nobody takes from must not grow by drops
            self._q = deque(x for x in self._q if not x.gone)
            self._gone = 0
        return True

    def _count_drop(self, item: T, nbytes: int, seq: int | None) -> None:
        self.dropped_frames += 1
        self.dropped_bytes += nbytes
        if self._samples_of is not None:
            self.dropped_samples += self._samples_of(item)
        if seq is not None:
            self._dropped_seqs.append(seq)

    def stats(self) -> dict[str, Any]:
        return {
            "queued_bytes": self.bytes,
            "queued_bytes_max": self.bytes_max,
            "max_bytes": self.max_bytes,
            "dropped_frames": self.dropped_frames,
            "dropped_bytes": self.dropped_bytes,
            "dropped_samples": self.dropped_samples,
            "over_bound": self.over_bound,
        }


class CreditWindow:
    """Client side of credit flow control.

    Grants ``window`` bytes up front, then returns consumed bytes to the server in batches of
    at least ``threshold`` so that updates stay rare. Invariant: the server can have at most
    ``window`` bytes in flight towards us.
    """

    def __init__(self, window: int = DEFAULT_CREDIT_WINDOW, threshold: int | None = None) -> None:
        if window < MIN_CREDIT_WINDOW:
            raise UsageError(f"credit window of {window} bytes, the minimum is {MIN_CREDIT_WINDOW}")
        self.window = window
        self.threshold = window // 4 if threshold is None else threshold
        self.granted = 0
        self.received = 0
        self._unreported = 0

    def initial(self) -> int:
        self.granted = self.window
        return self.window

    def on_received(self, nbytes: int) -> None:
        self.received += nbytes

    def on_consumed(self, nbytes: int) -> int:
        """Record bytes the sinks took; returns a grant to send now, or 0."""
        self._unreported += nbytes
        if self._unreported < self.threshold:
            return 0
        grant, self._unreported = self._unreported, 0
        self.granted += grant
        return grant

    @property
    def in_flight(self) -> int:
        return self.granted - self.received


class CreditBalance:
    """Server side of credit flow control: what may still be sent."""

    def __init__(self) -> None:
        self.balance = 0
        self.granted = 0
        self.spent = 0

    def grant(self, nbytes: int) -> None:
        self.granted += nbytes
        self.balance += nbytes

    def can_send(self, nbytes: int) -> bool:
        return nbytes <= self.balance

    def spend(self, nbytes: int) -> None:
        if nbytes > self.balance:
            raise UsageError(f"sending {nbytes} bytes with only {self.balance} bytes of credit")
        self.balance -= nbytes
        self.spent += nbytes
