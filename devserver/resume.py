"""pyclient.v1 sessions that outlive their sockets: resume tokens, a replay buffer, links.

A ``/ws`` session (``ResumableSession``) is the scenario, its sequence numbers and its
accounting; a ``Link`` is one socket carrying it. The scenario runs in its own task, not in
a socket's handler, so a lost socket does not end it::

    scenario ──send(frame)──▶ ReplayBuffer (every frame, in order, bounded in bytes)
                                  │ pumped in order by whoever sends next, under one lock
                                  ▼
                             current Link ──▶ socket (credit per link)

* The server's ``hello`` carries ``resume_token`` and ``resume_window_s``. When a socket is lost
  without a clean close (1006, or a client-side close with a code other than 1000/1001) the
  session waits ``resume_window`` s for the client to come back; meanwhile sends wait (the
  scenario stalls, as on a full TCP buffer), so nothing piles up.
* The client comes back on ``/ws?resume=<token>&last_seq=<n>``: the last sequence number it
  consumed (absent: none). The new link replays every buffered frame after it, then a
  ``resumed`` control frame, then the session goes on. Sequence numbers are the session's, so
  the client's decoder sees no gap.
* An unknown or ended session, or a ``last_seq`` whose successors were already evicted from
  the buffer, is refused with close code ``RESUME_FAILED`` (4410) and a reason.
* A server restart loses every session, yet the token is signed (devserver/secret.py) and
  names the session's first connection, and the resume URL carries the scenario's parameters:
  a restarted server *restores* the session by running its seeded scenario again, taking the
  frames up to ``last_seq`` as delivered (accounted, not sent, not paced), and goes on live.
  Calls sent before ``last_seq`` are listed in ``awaiting``: the client answers them again.
* The client's tool results are idempotent by ``call_id``: the ``resumed`` frame lists the
  calls still awaiting a result (``awaiting``; a result may have died with the old socket),
  and a second result for an answered call is counted (``tool_results_duplicate``), never
  matched twice.

Heartbeat: a client's ``ping`` control is answered with a ``pong`` carrying the same ``id``,
numbered and sent in order like every other frame (so it cannot overtake one).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from pyclient.flow import CreditBalance
from pyclient.frames import DEFAULT_MAX_PAYLOAD, HEADER, ControlFrame, CreditFrame

from .secret import sign, verify
from .session import YIELD_EVERY_S, ClosedEarly, Session, close_first, log
from .stats import ConnectionStats

RESUME_FAILED = 4410  # close code: the session cannot be resumed (unknown, ended, replay evicted)
DEFAULT_REPLAY_BYTES = 8 * 1024 * 1024
DEFAULT_RESUME_WINDOW_S = 30.0
MAX_AWAITING_LISTED = 256  # call ids listed in 'resumed'
MAX_ANSWERED_REMEMBERED = 4096  # call ids whose result arrived (duplicate detection)
MAX_LINKS_KEPT = 20
MAX_UNSENT_PONGS = 8
CLEAN_CLIENT_CLOSE = (1000, 1001)  # the client ended the session on purpose


RESUME_QUERY = ("resume", "last_seq")


def canonical(params: dict[str, str]) -> str:
    """A session's scenario parameters as signed in its token (resume parameters aside)."""
    return "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k not in RESUME_QUERY)


def token_ok(token: str, params: dict[str, str]) -> bool:
    """Whether ``token`` is one this server (or its predecessor) gave for these parameters."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[0].isascii() or not parts[0].isdigit() or len(parts[0]) > 12:
        return False
    return verify(f"{parts[0]}.{parts[1]}.{canonical(params)}", parts[2])


class ReplayBuffer:
    """The frames of one session in send order, by absolute index, bounded in bytes.

    Frames a link has not written yet are never evicted; beyond ``limit`` bytes the oldest
    written ones go, and a client that resumes from before them is refused."""

    def __init__(self, limit: int = DEFAULT_REPLAY_BYTES) -> None:
        self.limit = limit
        self._frames: deque[tuple[int, bytes]] = deque()
        self.base = 0  # absolute index of the oldest frame kept
        self.end = 0  # absolute index after the newest
        self.bytes = 0
        self.evicted = 0
        self._evicted_seq: int | None = None  # the sequence number of the newest frame evicted

    def append(self, frame: bytes) -> int:
        seq = HEADER.unpack_from(frame)[4] if len(frame) >= HEADER.size else -1
        self._frames.append((seq, frame))
        self.bytes += len(frame)
        self.end += 1
        return self.end - 1

    def get(self, index: int) -> bytes:
        if not self.base <= index < self.end:
            raise IndexError(f"frame {index} is not buffered ({self.base}..{self.end - 1})")
        return self._frames[index - self.base][1]

    def trim(self, written: int) -> None:
        """Evict the oldest frames below index ``written`` while over the limit."""
        while self.bytes > self.limit and self.base < written and self._frames:
            seq, frame = self._frames.popleft()
            self.bytes -= len(frame)
            self.base += 1
            self.evicted += 1
            self._evicted_seq = seq

    def after(self, last_seq: int | None) -> int | None:
        """The index to resume from for a client that consumed up to ``last_seq`` (None:
        nothing yet), or None when those frames are gone."""
        if last_seq is None:
            return 0 if self.base == 0 else None
        if last_seq == self._evicted_seq:
            return self.base
        for i in range(len(self._frames) - 1, -1, -1):
            if self._frames[i][0] == last_seq:
                return self.base + i + 1
        return None


@dataclass(eq=False)
class Link:
    """One socket carrying a session."""

    number: int
    ws: web.WebSocketResponse
    transport: Any
    credit: CreditBalance | None
    next_index: int
    credit_changed: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    receiver: asyncio.Task | None = None
    dead: bool = False
    closing: bool = False
    frames_sent: int = 0
    replayed: int = 0
    close_code: int | None = None
    opened: float = field(default_factory=time.time)
    ended: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "frames_sent": self.frames_sent,
            "replayed": self.replayed,
            "close_code": self.close_code,
            "opened": self.opened,
            "ended": self.ended,
        }


class ResumableSession(Session):
    """A pyclient.v1 session that survives lost sockets (see the module docstring)."""

    def __init__(
        self,
        stats: ConnectionStats,
        params: dict[str, str],
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        replay_bytes: int = DEFAULT_REPLAY_BYTES,
        resume_window: float = DEFAULT_RESUME_WINDOW_S,
        restore: tuple[str, int | None] | None = None,
    ) -> None:
        super().__init__(None, stats, credit=False, transport=None, max_payload=max_payload)  # type: ignore[arg-type]
        if restore is None:
            nonce = secrets.token_urlsafe(12)
            self.root_id = stats.id
            body = f"{self.root_id}.{nonce}"
            self.token = f"{body}.{sign(body + '.' + canonical(params))}"
            self.restoring: int | None = None
        else:  # a restarted server goes on with a session its predecessor began
            self.token, last_seq = restore
            self.root_id = int(self.token.split(".", 1)[0])
            self.restoring = -1 if last_seq is None else last_seq  # frames up to here: delivered
            stats.restored_from = self.root_id
        self.replay = ReplayBuffer(replay_bytes)
        self.resume_window = resume_window
        self.link: Link | None = None
        self.links: deque[Link] = deque(maxlen=MAX_LINKS_KEPT)
        self.link_count = 0
        self.resumes = 0
        self.drops = 1  # drop_after aborts (freeze_after freezes) this many links
        self.freeze_after = 0
        self.end_reason: str | None = None
        self._write_lock = asyncio.Lock()
        self._link_changed = asyncio.Event()
        self._expiry: asyncio.Task | None = None
        self._answered: dict[str, None] = {}
        self.duplicate_results = 0
        self._pongs: set[asyncio.Task] = set()
        stats.resume = self.resume_stats

    @property
    def resumable(self) -> bool:
        return self.resume_window > 0

    # ------------------------------------------------------------------ links

    def attach(self, ws: web.WebSocketResponse, transport: Any, credit: bool, start: int) -> Link:
        """A socket carries the session from frame index ``start`` on (a resume replays the
        frames from there). A link still attached (half-open to the client) is dropped."""
        old = self.link
        if old is not None:
            self._lose(old)
            if old.transport is not None and not old.finished.is_set():
                old.transport.abort()  # half-open (or frozen): it goes now
        self.link_count += 1
        link = Link(self.link_count, ws, transport, CreditBalance() if credit else None, start)
        link.replayed = self.replay.end - start
        self.links.append(link)
        self.link = link
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if not self._reading.is_set() and transport is not None:
            transport.pause_reading()
        link.receiver = asyncio.ensure_future(self._receive(link))
        self._link_changed.set()
        return link

    def _lose(self, link: Link) -> None:
        """``link`` is gone; unless the session ended, wait ``resume_window`` s for another."""
        if link.dead:
            return
        link.dead = True
        link.ended = time.time()
        link.credit_changed.set()
        if link is not self.link or self.closed.is_set():
            return
        self._link_changed.set()
        if not self.resumable:
            self.end("the connection was lost and this session does not resume")
        elif self._expiry is None:
            self._expiry = asyncio.ensure_future(self._expire())

    async def _expire(self) -> None:
        await asyncio.sleep(self.resume_window)
        if self.link is None or self.link.dead:
            self.end(f"the client did not resume within {self.resume_window:g} s")

    def end(self, reason: str) -> None:
        """The session is over: every wait returns, nothing more is sent."""
        if self.closed.is_set():
            return
        self.end_reason = reason
        self.closed.set()
        self._link_changed.set()
        self._credit_changed.set()
        self._received.set()
        if self.link is not None:
            self.link.credit_changed.set()

    async def _receive(self, link: Link) -> None:
        """Read one link's client messages until its socket ends."""
        ws = link.ws
        try:
            while True:
                await self._reading.wait()
                msg = await ws.receive()
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                    break
                if msg.type == WSMsgType.ERROR:
                    self.stats.error(f"socket error: {ws.exception()!r}")
                    break
                self.last_received = time.monotonic()
                self._received.set()
                if msg.type == WSMsgType.BINARY:
                    self._rx_link = link
                    self._on_message(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    self.stats.error("client sent a text message; the protocol is binary")
        except asyncio.CancelledError:
            raise  # close_first stops the loop before the closing handshake
        except Exception as exc:
            log.exception("receive loop of session %s failed", self.stats.id)
            self.stats.error(f"receive loop failed: {exc!r}")
        finally:
            link.close_code = ws.close_code
            if not link.closing:
                if ws.close_code in CLEAN_CLIENT_CLOSE and link is self.link:
                    link.dead = True
                    link.ended = time.time()
                    self.end(f"the client closed the connection (code {ws.close_code})")
                else:
                    self._lose(link)
                link.finished.set()

    async def close_link(self, code: int, reason: bytes) -> None:
        """Close the current link from the server's side with a closing handshake."""
        link = self.link
        if link is None or link.finished.is_set():
            return
        link.closing = True
        try:
            if not link.ws.closed and not link.dead:
                await close_first(link.ws, link.receiver, code, reason)
            elif link.receiver is not None:
                link.receiver.cancel()
        finally:
            link.dead = True
            link.ended = link.ended or time.time()
            link.close_code = link.ws.close_code or link.close_code
            link.finished.set()

    # ------------------------------------------------------------------ sending

    async def sleep(self, seconds: float) -> None:
        if self.restoring is None:  # restoring: the frames were delivered before the restart
            await asyncio.sleep(seconds)

    async def send(self, frame: bytes) -> None:
        """Append ``frame`` to the session's stream and wait until a link has written it."""
        if self.closed.is_set():
            raise ConnectionResetError(self.end_reason or "the session ended")
        index = self.replay.append(frame)
        if self.restoring is not None:
            seq = HEADER.unpack_from(frame)[4]
            if seq <= self.restoring and self.link is not None:
                self.link.next_index = index + 1  # the client consumed it before the restart
                self.stats.frames_restored += 1
                return
            self._restored()  # the first frame the client has not seen: live from here
        await self._deliver(index + 1)
        link = self.link
        if link is not None and self.drop_after and self.drops > 0 and link.frames_sent >= self.drop_after:
            self.drops -= 1
            self.stats.dropped = True
            self.stats.error(f"dropped on purpose after {link.frames_sent} frames of link {link.number} (drop_after)")
            self._lose(link)
            if link.transport is not None:
                link.transport.abort()
        if link is not None and self.freeze_after and self.drops > 0 and link.frames_sent >= self.freeze_after:
            self.freeze(link)
        if self.close_after and self.stats.frames_sent >= self.close_after:
            raise ClosedEarly(f"closed after {self.stats.frames_sent} frames without 'done' (close_after)")
        if time.monotonic() - self._ran_since >= YIELD_EVERY_S:
            await self.yield_to_loop()

    def _restored(self) -> None:
        """The restored session caught up with the client: tell it (and which calls still
        wait for a result: those sent before the restart are answered again)."""
        if self.restoring is not None:
            self.restoring = None
            self.post(self.seq.control("resumed", restored=True, **self.resumed_fields()))

    async def wait_tool_results(self, idle_s: float, cap_s: float) -> bool:
        self._restored()  # the scenario ended while restoring: the client must hear of it now
        return await super().wait_tool_results(idle_s, cap_s)

    async def _deliver(self, upto: int) -> None:
        """Write the stream up to index ``upto`` on the current link, in order, waiting for a
        link while there is none (a resume replays what the lost one did not deliver)."""
        while True:
            link = await self._wait_link()
            if link.next_index >= upto:
                return
            try:
                async with self._write_lock:
                    while link.next_index < upto and not link.dead:
                        await self._write(link, self.replay.get(link.next_index))
                        link.next_index += 1
                    if link is self.link:  # a link replaced meanwhile must not trim what the new one replays
                        self.replay.trim(link.next_index)
            except (ConnectionResetError, ConnectionError, RuntimeError) as exc:
                if link is self.link and not link.dead:
                    self.stats.error(f"link {link.number} lost: {exc}")
                self._lose(link)

    async def _wait_link(self) -> Link:
        while self.link is None or self.link.dead:
            if self.closed.is_set():
                raise ConnectionResetError(self.end_reason or "the session ended")
            self._link_changed.clear()
            await self._link_changed.wait()
        return self.link

    async def _write(self, link: Link, frame: bytes) -> None:
        credit = link.credit
        if credit is not None and not credit.can_send(len(frame)):
            self.stats.credit_waits += 1
            t0 = self.stats.credit_blocked_since = time.monotonic()
            try:
                while not credit.can_send(len(frame)):
                    if link.dead or self.closed.is_set():
                        raise ConnectionResetError("the link ended while the server waited for credit")
                    link.credit_changed.clear()
                    await link.credit_changed.wait()
            finally:
                self.stats.credit_blocked_since = None
                self.stats.credit_wait_s += time.monotonic() - t0
        if credit is not None:
            credit.spend(len(frame))
        if link.ws.closed or link.dead:
            raise ConnectionResetError("socket closed")
        t0 = self.stats.send_blocked_since = time.monotonic()
        try:
            await link.ws.send_bytes(frame)
        finally:
            self.stats.send_blocked_since = None
        link.frames_sent += 1
        self.stats.on_sent(len(frame), time.monotonic() - t0)

    def freeze(self, link: Link) -> None:
        """``freeze_after``: the link goes silent without closing, as a half-open connection
        (a NAT that forgot it, a peer that lost power) does: nothing more is written or read
        on it, no close comes. The client must find out by itself (heartbeat) and resume."""
        self.drops -= 1
        self.stats.frozen = True
        self.stats.error(f"froze link {link.number} on purpose after {link.frames_sent} frames (freeze_after)")
        self._lose(link)  # the session waits for a resume; the socket itself stays open
        if link.transport is not None:
            link.transport.pause_reading()  # pings go unanswered, a close frame unread

    def drop(self) -> None:  # the base class's drop_after: links drop in send() instead
        raise NotImplementedError

    # ------------------------------------------------------------------ receiving

    def pause_reading(self) -> None:
        self._reading.clear()
        if self.link is not None and self.link.transport is not None:
            self.link.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.link is not None and self.link.transport is not None:
            self.link.transport.resume_reading()
        self._reading.set()

    def _on_frame(self, frame: Any) -> None:
        link = getattr(self, "_rx_link", None)
        if isinstance(frame, CreditFrame):
            self.stats.frames_received += 1
            if link is not None and link.credit is not None and not link.dead:
                link.credit.grant(frame.grant)
                self.stats.credit_granted += frame.grant
                link.credit_changed.set()
            return
        if isinstance(frame, ControlFrame) and frame.type == "ping":
            self.stats.frames_received += 1
            self.stats.pings += 1
            if len(self._pongs) >= MAX_UNSENT_PONGS:  # a client that pings without reading
                self.stats.error("ping ignored: pongs are not being read")
                return
            ping_id = frame.fields.get("id")
            self.post(self.seq.control("pong", id=ping_id if isinstance(ping_id, (int, str)) else None))
            return
        super()._on_frame(frame)

    def post(self, frame: bytes) -> None:
        """Send ``frame`` from outside the scenario (a pong, ``resumed``): it takes its place in
        the stream now, in the order it was numbered, and goes out with the frames before it."""
        if self.closed.is_set():
            return
        index = self.replay.append(frame)
        task = asyncio.ensure_future(self._deliver_quietly(index + 1))
        self._pongs.add(task)
        task.add_done_callback(self._pongs.discard)

    async def _deliver_quietly(self, upto: int) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            await self._deliver(upto)

    def _on_tool_result(self, frame: Any) -> None:
        if frame.call_id in self._answered and frame.call_id not in self._pending:
            self.duplicate_results += 1  # sent again after a resume: idempotent by call_id
            return
        known = frame.call_id in self._pending
        super()._on_tool_result(frame)
        if known:
            self._answered[frame.call_id] = None
            if len(self._answered) > MAX_ANSWERED_REMEMBERED:
                del self._answered[next(iter(self._answered))]

    def resumed_fields(self) -> dict[str, Any]:
        link = self.link
        return {
            "connection_id": self.stats.id,
            "credit": link is not None and link.credit is not None,
            "replayed": link.replayed if link is not None else 0,
            "awaiting": self.awaiting(),
        }

    def awaiting(self) -> list[str]:
        """Call ids sent whose results have not arrived (bounded list)."""
        return list(self._pending)[:MAX_AWAITING_LISTED]

    def release(self) -> None:
        super().release()
        final = self.resume_stats()
        self.stats.resume = lambda: final  # the stats outlive the session: no reference back to it
        for task in list(self._pongs):
            task.cancel()
        if self._expiry is not None:
            self._expiry.cancel()

    # ------------------------------------------------------------------ stats

    def resume_stats(self) -> dict[str, Any]:
        return {
            "resumable": self.resumable,
            "resume_window_s": self.resume_window,
            "connections": self.link_count,
            "resumes": self.resumes,
            "links": [link.as_dict() for link in self.links],
            "replay_bytes": self.replay.bytes,
            "replay_evicted": self.replay.evicted,
            "frames_replayed": sum(link.replayed for link in self.links),
            "tool_results_duplicate": self.duplicate_results,
            "end_reason": self.end_reason,
        }
