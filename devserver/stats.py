"""Per-connection accounting of the simulated AI server, exposed at ``GET /stats``.

Memory bounds: the registry keeps the open connections and the ``RECENT_CONNECTIONS`` most
recently closed ones, and what each connection records is bounded in count and size whatever
the client sends: the last ``KEEP_TOOL_RESULTS`` tool results, ``KEEP_ERRORS`` errors,
``KEEP_CONTROLS`` controls and playback positions; any client-supplied value whose JSON is
over ``INLINE_JSON_BYTES`` is kept as ``{"bytes", "sha256", "preview"}`` (see ``summarise``).
Totals are counters, never lists. Worst case per connection, with a hostile client: about
0.4 MB of JSON (100 results of up to 2 KiB, 100 controls and positions of up to 1 KiB, the
timeline); 64 results of 1 MB for unknown calls leave ~50 KB (tests/unit/test_server_robustness.py).
"""

from __future__ import annotations

import array
import functools
import hashlib
import itertools
import json
import operator
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

TIMELINE_POINTS = 2_000  # bounded: one point per TIMELINE_STEP_S at most
TIMELINE_STEP_S = 0.1
RECENT_CONNECTIONS = 64
KEEP_TOOL_RESULTS = 100
KEEP_ERRORS = 50
KEEP_CONTROLS = 50
KEEP_MISSING_RESULTS = 50
KEEP_MIC_RATES = 16
MAX_ANSWERED_CALLS = 4096
INLINE_JSON_BYTES = 1024  # a client value larger than this is kept as size + sha256 + preview
PREVIEW_CHARS = 80
ERROR_CHARS = 300


MOD32 = 1 << 32


@functools.lru_cache(maxsize=8)
def _powers(n: int) -> tuple[tuple[int, ...], int]:
    """31**(n-1-i) mod 2**32 for i in 0..n-1, and 31**n mod 2**32."""
    return tuple(pow(31, n - 1 - i, MOD32) for i in range(n)), pow(31, n, MOD32)


def pcm_checksum(previous: int, pcm: bytes) -> int:
    """Continue the running checksum of pyclient/browser/js/ring-layout.js over PCM16LE bytes:
    ``sum = (sum * 31 + (sample & 0xffff)) mod 2**32`` for every sample in order."""
    samples = array.array("H", pcm)
    if sys.byteorder == "big":
        samples.byteswap()
    weights, shift = _powers(len(samples))
    return (previous * shift + sum(map(operator.mul, samples, weights))) % MOD32


def _json_bytes(value: Any) -> bytes:
    # surrogatepass: a lone surrogate from the peer must not make accounting raise
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=repr).encode("utf-8", "surrogatepass")


def summarise(value: Any, limit: int = INLINE_JSON_BYTES) -> Any:
    """``value`` itself if its JSON is at most ``limit`` bytes, else a bounded summary:
    ``{"bytes": N, "sha256": hex of the compact UTF-8 JSON, "preview": first characters}``."""
    if value is None or isinstance(value, (bool, int, float)):
        return value if not isinstance(value, int) or value.bit_length() < 64 else summarise(str(value), limit)
    try:
        raw = _json_bytes(value)
    except (ValueError, RecursionError) as exc:  # circular or too deep: nothing a client can send today
        return {"unencodable": type(exc).__name__}
    if len(raw) <= limit:
        return value
    preview = raw[: PREVIEW_CHARS * 4].decode("utf-8", "replace")[:PREVIEW_CHARS]
    return {"bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest(), "preview": preview}


def _plain(value: Any) -> Any:
    """A JSON-ready copy: deques and sets become lists (``emulation`` records hold both)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, deque)):
        return [_plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    return value


def clip(text: str, limit: int = ERROR_CHARS) -> str:
    """A message for a bounded list: at most ``limit`` characters, saying how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


MAX_TEXT_STAMPS = 100_000


@dataclass
class ConnectionStats:
    id: int
    scenario: str
    params: dict[str, str]
    subprotocol: str | None
    protocol: str = "pyclient"  # the wire protocol: pyclient, openai-realtime, gemini-live
    started: float = field(default_factory=time.time)
    ended: float | None = None
    close_code: int | None = None
    bytes_sent: int = 0
    frames_sent: int = 0
    send_wait_s: float = 0.0
    bytes_received: int = 0
    frames_received: int = 0
    malformed_received: int = 0
    tool_calls_sent: int = 0
    tool_results: deque = field(default_factory=lambda: deque(maxlen=KEEP_TOOL_RESULTS))
    tool_results_received: int = 0
    tool_result_errors: dict[str, int] = field(default_factory=dict)  # failed results by error type (bounded)
    tool_results_unknown: int = 0  # results for call_ids the server never sent (or already had)
    tool_results_as_expected: int = 0
    tool_results_unexpected: int = 0  # results that failed their scenario's check
    tool_wait_s: float = 0.0  # how long the server waited for outstanding results after the scenario
    tool_results_missing: list[dict[str, Any]] = field(default_factory=list)  # never came (bounded)
    tool_results_missing_count: int = 0
    text_frames_sent: int = 0
    text_bytes_sent: int = 0
    text_stamps: list[tuple[int, float]] = field(default_factory=list)
    audio_frames_sent: int = 0
    audio_samples_sent: int = 0
    audio_checksum: int = 0
    credit_granted: int = 0
    credit_waits: int = 0
    credit_wait_s: float = 0.0
    client_hello: Any = None
    controls_received: deque = field(default_factory=lambda: deque(maxlen=KEEP_CONTROLS))
    controls_received_count: int = 0
    mic_samples_received: int = 0
    mic_frames_received: int = 0
    mic_rates: set[int] = field(default_factory=set)
    playback_positions: deque = field(default_factory=lambda: deque(maxlen=KEEP_CONTROLS))
    errors: deque = field(default_factory=lambda: deque(maxlen=KEEP_ERRORS))
    errors_count: int = 0
    dropped: bool = False  # the server aborted the connection on purpose (drop_after)
    pings: int = 0  # heartbeat pings answered (pyclient.v1)
    frozen: bool = False  # a link went silent on purpose (freeze_after)
    restored_from: int | None = None  # /ws: the session (on a server before a restart) this one goes on with
    frames_restored: int = 0  # ... and the frames of it the client had consumed
    tool_results_before_restart: int = 0  # emulations: calls of skipped turns answered to a server before a restart
    resumed_connections: list[int] = field(default_factory=list)  # emulations: earlier connections of the session
    # call_id -> as_expected of every call answered (bounded): a resumed emulated session counts them again
    answered_calls: dict[str, bool | None] = field(default_factory=dict, repr=False)
    # A resumable /ws session's links, resumes and replay buffer (devserver/resume.py).
    resume: Callable[[], dict[str, Any]] | None = field(default=None, repr=False)
    # What an emulated provider socket (devserver/emulation.py) records besides the figures above:
    # bounded by the emulation (lists of at most KEEP_CONTROLS entries, client values summarised).
    emulation: dict[str, Any] | None = None
    _text_sha: Any = field(default_factory=hashlib.sha256, repr=False)
    _audio_sha: Any = field(default_factory=hashlib.sha256, repr=False)
    _mic_sha: Any = field(default_factory=hashlib.sha256, repr=False)
    _timeline: deque = field(default_factory=lambda: deque(maxlen=TIMELINE_POINTS), repr=False)
    _last_point: float = 0.0
    send_blocked_since: float | None = None  # monotonic time a send began waiting, if it is
    credit_blocked_since: float | None = None

    def _live(self, total: float, since: float | None) -> float:
        """A wait total including the wait in progress right now."""
        return total + (time.monotonic() - since if since is not None else 0.0)

    def on_text(self, data: bytes) -> None:
        self.text_frames_sent += 1
        self.text_bytes_sent += len(data)
        self._text_sha.update(data)
        if self.params.get("stamp") == "1" and len(self.text_stamps) < MAX_TEXT_STAMPS:
            # When each text frame went out (``stamp=1``, for bench/latency.py): the text's
            # UTF-8 bytes so far and this server's wall clock in ms (``GET /clock`` gives a
            # page the offset to its own).
            self.text_stamps.append((self.text_bytes_sent, round(time.time() * 1000, 3)))

    def on_audio(self, pcm: bytes) -> None:
        self.audio_frames_sent += 1
        self.audio_samples_sent += len(pcm) // 2
        self.audio_checksum = pcm_checksum(self.audio_checksum, pcm)
        self._audio_sha.update(pcm)

    def on_mic(self, samples: int, rate: int, pcm: bytes) -> None:
        self.mic_frames_received += 1
        self.mic_samples_received += samples
        if len(self.mic_rates) < KEEP_MIC_RATES:
            self.mic_rates.add(rate)
        self._mic_sha.update(pcm)

    def error(self, message: str) -> None:
        """Record an error (the last ``KEEP_ERRORS`` are kept, each clipped; all are counted)."""
        self.errors_count += 1
        self.errors.append(clip(message))

    def on_control(self, type: str, fields: dict[str, Any]) -> None:
        self.controls_received_count += 1
        self.controls_received.append(summarise({"type": type, **fields}))

    @property
    def restored(self) -> bool:
        return self.restored_from is not None

    def count_carried_result(self, call_id: str, as_expected: bool | None) -> None:
        """A result an earlier connection of the session received (a resumed emulation)."""
        self.tool_results_received += 1
        if as_expected is not None:
            self.tool_results_as_expected += as_expected
            self.tool_results_unexpected += not as_expected
        self._remember_answer(call_id, as_expected)

    def _remember_answer(self, call_id: str, as_expected: bool | None) -> None:
        self.answered_calls[call_id] = as_expected
        if len(self.answered_calls) > MAX_ANSWERED_CALLS:
            del self.answered_calls[next(iter(self.answered_calls))]

    def on_tool_result(self, entry: dict[str, Any], known: bool) -> None:
        """``entry``'s client-supplied values must already be summarised."""
        if known:
            self._remember_answer(str(entry["call_id"]), entry.get("as_expected"))
        self.tool_results_received += 1
        self.tool_results_unknown += not known
        if "as_expected" in entry:
            self.tool_results_as_expected += entry["as_expected"]
            self.tool_results_unexpected += not entry["as_expected"]
        self.tool_results.append(entry)
        error = entry.get("error")
        if not entry.get("ok") and isinstance(error, dict):
            kind = str(error.get("type"))[:64]
            if kind in self.tool_result_errors or len(self.tool_result_errors) < 32:
                self.tool_result_errors[kind] = self.tool_result_errors.get(kind, 0) + 1

    def on_missing_results(self, missing: list[dict[str, Any]], waited: float) -> None:
        self.tool_wait_s = waited
        self.tool_results_missing_count = len(missing)
        self.tool_results_missing = missing[:KEEP_MISSING_RESULTS]

    def on_sent(self, nbytes: int, waited: float) -> None:
        self.bytes_sent += nbytes
        self.frames_sent += 1
        self.send_wait_s += waited
        now = time.monotonic()
        if now - self._last_point >= TIMELINE_STEP_S:
            self.sample(now)

    def sample(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._last_point = now
        self._timeline.append(
            (
                round(time.time() - self.started, 3),
                self.bytes_sent,
                round(
                    self._live(self.send_wait_s, self.send_blocked_since)
                    + self._live(self.credit_wait_s, self.credit_blocked_since),
                    4,
                ),
            )
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "scenario": self.scenario,
            "params": self.params,
            "subprotocol": self.subprotocol,
            "protocol": self.protocol,
            "started": self.started,
            "ended": self.ended,
            "open": self.ended is None,
            "close_code": self.close_code,
            "bytes_sent": self.bytes_sent,
            "frames_sent": self.frames_sent,
            "send_wait_s": round(self._live(self.send_wait_s, self.send_blocked_since), 4),
            "bytes_received": self.bytes_received,
            "frames_received": self.frames_received,
            "malformed_received": self.malformed_received,
            "tool_calls_sent": self.tool_calls_sent,
            "tool_results_received": self.tool_results_received,
            "tool_results_unknown": self.tool_results_unknown,
            "tool_results_as_expected": self.tool_results_as_expected,
            "tool_results_unexpected": self.tool_results_unexpected,
            "tool_result_errors": dict(self.tool_result_errors),
            "tool_results": list(self.tool_results),
            "tool_wait_s": round(self.tool_wait_s, 3),
            "tool_results_missing": self.tool_results_missing,
            "tool_results_missing_count": self.tool_results_missing_count,
            "text_frames_sent": self.text_frames_sent,
            "text_bytes_sent": self.text_bytes_sent,
            "text_sha256": self._text_sha.hexdigest(),
            **({"text_stamps": list(self.text_stamps)} if self.text_stamps else {}),
            "audio_frames_sent": self.audio_frames_sent,
            "audio_samples_sent": self.audio_samples_sent,
            "audio_sha256": self._audio_sha.hexdigest(),
            "audio_checksum": self.audio_checksum,
            "credit_granted": self.credit_granted,
            "credit_waits": self.credit_waits,
            "credit_wait_s": round(self._live(self.credit_wait_s, self.credit_blocked_since), 4),
            "client_hello": self.client_hello,
            "controls_received": list(self.controls_received),
            "controls_received_count": self.controls_received_count,
            "mic_samples_received": self.mic_samples_received,
            "mic_frames_received": self.mic_frames_received,
            "mic_rates": sorted(self.mic_rates),
            "mic_sha256": self._mic_sha.hexdigest(),
            "playback_positions": list(self.playback_positions),
            "errors": list(self.errors),
            "errors_count": self.errors_count,
            "dropped": self.dropped,
            "pings": self.pings,
            "frozen": self.frozen,
            "restored_from": self.restored_from,
            "frames_restored": self.frames_restored,
            "tool_results_before_restart": self.tool_results_before_restart,
            "resumed_connections": list(self.resumed_connections),
            **({"resume": self.resume()} if self.resume is not None else {}),
            "timeline": list(self._timeline),
            **({"emulation": _plain(self.emulation)} if self.emulation is not None else {}),
        }


class StatsRegistry:
    """Every open connection plus the ``keep`` most recently closed ones.

    An open connection never drops out of ``/stats`` however many others come and go (each
    record is bounded, see the top of this module); closed ones are forgotten oldest-first.
    """

    def __init__(self, keep: int = RECENT_CONNECTIONS) -> None:
        self._ids = itertools.count(1)
        self._open: dict[int, ConnectionStats] = {}
        self._closed: deque[ConnectionStats] = deque(maxlen=keep)

    def open(
        self, scenario: str, params: dict[str, str], subprotocol: str | None, protocol: str = "pyclient"
    ) -> ConnectionStats:
        st = ConnectionStats(next(self._ids), scenario, params, subprotocol, protocol)
        self._open[st.id] = st
        return st

    def close(self, st: ConnectionStats) -> None:
        """The connection has ended: keep it among the recent closed ones."""
        if self._open.pop(st.id, None) is not None:
            self._closed.append(st)

    def get(self, conn_id: int) -> ConnectionStats | None:
        return self._open.get(conn_id) or next((c for c in self._closed if c.id == conn_id), None)

    def as_dict(self) -> dict[str, Any]:
        connections = sorted([*self._closed, *self._open.values()], key=lambda c: c.id)
        return {"connections": [c.as_dict() for c in connections]}
