"""Tool calls: streaming argument assembly, a registry of Python functions, and execution.

Sans-I/O except for ``ToolExecutor.execute``, which is plain ``asyncio`` (no browser APIs).

Every way a call can fail ends in a structured error ``{"type": ..., "message": ...}`` that is
sent back to the server as a failed tool result; nothing is silently dropped:

=======================  ===========================================================
``unknown_tool``         no function registered under that name
``invalid_arguments``    arguments are not a JSON object (bad JSON, NaN, nested deeper than 64, not valid
                         Unicode such as a lone surrogate), or do not fit the signature
``arguments_too_large``  the streamed arguments exceeded ``max_argument_bytes``
``too_many_open_calls``  more than ``max_open_calls`` calls were streaming at once
``missing_name``         the first fragment of a call did not name the tool
``invalid_name``         the name is longer than 128 characters or not valid Unicode
``open_calls_too_large`` the open calls together would hold more than ``max_open_bytes``
``arguments_timeout``    the call was still open (no FIN) ``open_call_timeout`` s after it began
``timeout``              the function ran longer than its timeout
``tool_error``           the function raised
``result_not_json``      the function returned something JSON cannot encode
``denied_by_user``       a tool that needs approval was denied (``pyclient.approval``)
``approval_timeout``     nobody decided within the tool's ``approval_timeout``
=======================  ===========================================================
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import EncodeError, ToolError, UsageError
from .events import ToolCallArgumentsDelta, ToolCallInvalid, ToolCallReady, ToolCallStarted
from .frames import MAX_TOOL_NAME_CHARS, ToolCallFrame, decode_json, encode_json

DEFAULT_MAX_OPEN_CALLS = 32
DEFAULT_MAX_ARGUMENT_BYTES = 256 * 1024
DEFAULT_MAX_OPEN_BYTES = 1024 * 1024  # ids + names + arguments of all open calls together
DEFAULT_OPEN_CALL_TIMEOUT = 120.0  # seconds from a call's first fragment to its FIN
DEFAULT_TOOL_TIMEOUT = 10.0

ToolEvent = ToolCallStarted | ToolCallArgumentsDelta | ToolCallReady | ToolCallInvalid


@dataclass
class _OpenCall:
    name: str
    parts: list[str]
    started: float
    size: int = 0  # UTF-8 bytes of arguments held
    held: int = 0  # UTF-8 bytes held in all: call_id + name + arguments
    failed: bool = False  # reported already; swallows its remaining fragments until FIN


class ToolCallAssembler:
    """Joins streamed argument fragments into whole calls, with bounds on count, bytes and time.

    Bounds, each a parameter with a safe default: at most ``max_open_calls`` calls streaming at
    once; at most ``max_argument_bytes`` of arguments per call; at most ``max_open_bytes`` held
    by all open calls together, counting call ids and names as well as arguments (UTF-8 bytes;
    the decoder already limits a call_id to 256 characters, and a name over 128 fails the call);
    and a call still without FIN ``open_call_timeout`` seconds after its first fragment fails
    with ``arguments_timeout`` when ``expire()`` runs (``Demux`` runs it on every feed; it costs
    one clock read while calls are open). Each failure is one ``ToolCallInvalid`` (one failed
    result); a call that failed while open keeps only its id and name until its FIN, so its
    later fragments are swallowed instead of answered twice.

    Never raises on what the peer sent: fragments that are not valid Unicode (lone surrogates)
    fail their call with ``invalid_arguments``; nested or non-JSON arguments fail it at FIN.
    """

    def __init__(
        self,
        max_open_calls: int = DEFAULT_MAX_OPEN_CALLS,
        max_argument_bytes: int = DEFAULT_MAX_ARGUMENT_BYTES,
        *,
        max_open_bytes: int = DEFAULT_MAX_OPEN_BYTES,
        open_call_timeout: float = DEFAULT_OPEN_CALL_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if open_call_timeout <= 0:
            raise UsageError(f"open_call_timeout must be positive, got {open_call_timeout}")
        self.max_open_calls = max_open_calls
        self.max_argument_bytes = max_argument_bytes
        self.max_open_bytes = max_open_bytes
        self.open_call_timeout = open_call_timeout
        self._clock = clock
        self._open: dict[str, _OpenCall] = {}  # in order of opening: the first is the oldest
        self.open_by_id: Mapping[str, object] = self._open  # read-only view of the same dict (truthy: any open)
        self._held = 0

    @property
    def open_calls(self) -> int:
        return len(self._open)

    @property
    def open_bytes(self) -> int:
        """UTF-8 bytes held by open calls (ids, names and arguments)."""
        return self._held

    @property
    def next_expiry(self) -> float | None:
        """Clock time at which the oldest open call times out (None: no call open)."""
        for call in self._open.values():
            return call.started + self.open_call_timeout
        return None

    def expire(self, now: float | None = None) -> list[ToolCallInvalid]:
        """Fail the calls open longer than ``open_call_timeout`` (cheap when none is)."""
        out: list[ToolCallInvalid] = []
        if not self._open:
            return out
        now = self._clock() if now is None else now
        while self._open:
            call_id, call = next(iter(self._open.items()))
            age = now - call.started
            if age < self.open_call_timeout:
                break
            self._close(call_id, call)
            if not call.failed:
                msg = (
                    f"no FIN {age:.1f} s after the call began, limit is {self.open_call_timeout:g} s "
                    f"({call.size} bytes of arguments received)"
                )
                out.append(ToolCallInvalid(call_id, call.name, _err("arguments_timeout", msg)))
        return out

    def feed(self, frame: ToolCallFrame) -> list[ToolEvent]:
        out: list[ToolEvent] = []
        call_id = frame.call_id
        call = self._open.get(call_id)
        if call is None:
            call = self._start(frame, out)
            if call is None:
                return out
        delta = frame.arguments_delta
        if not call.failed and delta:
            self._add(call_id, call, delta, out)
        if frame.final:
            self._close(call_id, call)
            if not call.failed:
                out.append(_finish(call_id, call.name, "".join(call.parts)))
        return out

    # ------------------------------------------------------------------ internals

    def _start(self, frame: ToolCallFrame, out: list[ToolEvent]) -> _OpenCall | None:
        call_id, name = frame.call_id, frame.name
        if not name:
            out.append(ToolCallInvalid(call_id, None, _err("missing_name", "first fragment has no 'name'")))
            return None
        id_bytes = len(call_id.encode("utf-8", "surrogatepass"))
        name_bytes = _utf8_len(name)
        problem = None
        if len(name) > MAX_TOOL_NAME_CHARS:
            problem = f"name of {len(name)} characters, limit is {MAX_TOOL_NAME_CHARS}"
        elif name_bytes is None:
            at = next(i for i, ch in enumerate(name) if "\ud800" <= ch <= "\udfff")
            problem = f"name holds a lone surrogate U+{ord(name[at]):04X} at character {at}: not valid Unicode"
        if problem is not None:
            out.append(ToolCallInvalid(call_id, _shown(name), _err("invalid_name", problem)))
            return self._tombstone(frame, _shown(name), id_bytes)
        if len(self._open) >= self.max_open_calls:
            msg = f"{len(self._open)} calls already open, limit is {self.max_open_calls}"
            out.append(ToolCallInvalid(call_id, name, _err("too_many_open_calls", msg)))
            return None
        held = id_bytes + name_bytes
        if self._held + held > self.max_open_bytes:
            msg = (
                f"open calls hold {self._held} bytes, this call's id and name {held} more, "
                f"limit is {self.max_open_bytes}"
            )
            out.append(ToolCallInvalid(call_id, name, _err("open_calls_too_large", msg)))
            return None
        call = self._open[call_id] = _OpenCall(name, [], self._clock(), held=held)
        self._held += held
        out.append(ToolCallStarted(call_id, name))
        return call

    def _tombstone(self, frame: ToolCallFrame, name: str, id_bytes: int) -> _OpenCall | None:
        """Keep a call that failed on its first fragment open (failed) to swallow the rest."""
        if frame.final or len(self._open) >= self.max_open_calls or self._held + id_bytes > self.max_open_bytes:
            return None
        self._open[frame.call_id] = _OpenCall(name, [], self._clock(), held=id_bytes, failed=True)
        self._held += id_bytes
        return None

    def _add(self, call_id: str, call: _OpenCall, delta: str, out: list[ToolEvent]) -> None:
        try:
            n = len(delta.encode("utf-8"))
        except UnicodeEncodeError as exc:
            msg = (
                f"arguments_delta holds a lone surrogate U+{ord(delta[exc.start]):04X} at character "
                f"{exc.start} of {len(delta)}: not valid Unicode"
            )
            self._fail(call_id, call, "invalid_arguments", msg, out)
            return
        if call.size + n > self.max_argument_bytes:
            msg = f"arguments reached {call.size + n} bytes, limit is {self.max_argument_bytes}"
            self._fail(call_id, call, "arguments_too_large", msg, out)
        elif self._held + n > self.max_open_bytes:
            msg = f"open calls would hold {self._held + n} bytes, limit is {self.max_open_bytes}"
            self._fail(call_id, call, "open_calls_too_large", msg, out)
        else:
            call.size += n
            call.held += n
            self._held += n
            call.parts.append(delta)
            out.append(ToolCallArgumentsDelta(call_id, delta))

    def _fail(self, call_id: str, call: _OpenCall, kind: str, msg: str, out: list[ToolEvent]) -> None:
        call.failed = True
        call.parts.clear()
        call.held -= call.size
        self._held -= call.size
        call.size = 0
        out.append(ToolCallInvalid(call_id, call.name, _err(kind, msg)))

    def _close(self, call_id: str, call: _OpenCall) -> None:
        del self._open[call_id]
        self._held -= call.held


def _utf8_len(text: str) -> int | None:
    """UTF-8 length of ``text``; None if it is not valid Unicode (holds a lone surrogate)."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return None


def _shown(name: str) -> str:
    """A bad name made safe to show and send: valid Unicode, at most MAX_TOOL_NAME_CHARS."""
    safe = name[:MAX_TOOL_NAME_CHARS].encode("utf-8", "replace").decode("utf-8")
    return safe + "…" if len(name) > MAX_TOOL_NAME_CHARS else safe


def _err(kind: str, message: str) -> dict[str, str]:
    return {"type": kind, "message": message}


def _finish(call_id: str, name: str, raw: str) -> ToolCallReady | ToolCallInvalid:
    if not raw.strip():
        return ToolCallReady(call_id, name, {})
    try:
        args = decode_json(raw)
    except ValueError as exc:
        return ToolCallInvalid(call_id, name, _err("invalid_arguments", f"arguments are not JSON: {exc}"))
    if not isinstance(args, dict):
        msg = f"arguments are a JSON {type(args).__name__}, expected an object"
        return ToolCallInvalid(call_id, name, _err("invalid_arguments", msg))
    if "\\u" in raw:  # a \udXXX escape can decode to a lone surrogate
        try:
            encode_json(args)
        except EncodeError as exc:
            return ToolCallInvalid(call_id, name, _err("invalid_arguments", f"arguments are not valid Unicode: {exc}"))
    return ToolCallReady(call_id, name, args)


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Tool:
    name: str
    fn: Callable[..., Any]
    description: str
    timeout: float
    needs_approval: bool | Callable[[ToolCallReady], bool] = False  # see pyclient.approval
    approval_timeout: float | None = None  # seconds a call may wait for a decision

    @property
    def signature(self) -> inspect.Signature:
        return inspect.signature(self.fn)

    def describe(self) -> dict[str, Any]:
        params = [
            p.name for p in self.signature.parameters.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        return {"name": self.name, "description": self.description, "parameters": params}


class ToolRegistry:
    """Python functions the server may call by name.

    >>> tools = ToolRegistry()
    >>> @tools.register
    ... def add(a: float, b: float) -> float:
    ...     "Add two numbers."
    ...     return a + b
    """

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    def register(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float = DEFAULT_TOOL_TIMEOUT,
        needs_approval: bool | Callable[[ToolCallReady], bool] = False,
        approval_timeout: float | None = None,
    ) -> Any:
        """Register ``fn`` (usable bare, ``@register``, or with options, ``@register(name=...)``).

        ``needs_approval``: True, or a policy ``lambda call: ...`` (a ``ToolCallReady``), makes
        each call wait for a person's decision before it runs (``pyclient.approval``);
        ``approval_timeout`` (s) denies a call nobody decided on in time.
        """

        def add(f: Callable[..., Any]) -> Callable[..., Any]:
            tool_name = name or f.__name__
            if tool_name in self._tools:
                raise UsageError(f"a tool named {tool_name!r} is already registered")
            if timeout <= 0:
                raise UsageError(f"timeout must be positive, got {timeout}")
            if approval_timeout is not None and approval_timeout <= 0:
                raise UsageError(f"approval_timeout must be positive, got {approval_timeout}")
            if not isinstance(needs_approval, bool) and not callable(needs_approval):
                raise UsageError(f"needs_approval must be True, False or a callable, got {needs_approval!r}")
            desc = description if description is not None else inspect.getdoc(f) or ""
            self._tools[tool_name] = Tool(tool_name, f, desc, timeout, needs_approval, approval_timeout)
            return f

        return add(fn) if fn is not None else add

    def unregister(self, name: str) -> None:
        self._tools.pop(name, None)

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    def __iter__(self) -> Iterator[Tool]:
        return iter(list(self._tools.values()))

    def describe(self) -> list[dict[str, Any]]:
        return [t.describe() for t in self._tools.values()]


# --------------------------------------------------------------------------- execution


@dataclass(frozen=True)
class ToolOutcome:
    call_id: str
    name: str | None
    ok: bool
    result: Any = None
    error: dict[str, str] | None = None
    duration_ms: float = 0.0
    sync: bool = False  # a plain function: it ran on the caller's thread (the page's main thread)
    blocking_ms: float = 0.0  # time spent inside a sync function (the page could not run)
    over_timeout: bool = False  # a sync function ran past its timeout (it could not be stopped)


MAX_ERROR_MESSAGE_CHARS = 2000


def _safe_error(error: dict[str, Any]) -> dict[str, str]:
    """An error payload that always encodes: str values, lone surrogates escaped, bounded."""
    out = {}
    for key, value in error.items():
        text = str(value).encode("utf-8", "backslashreplace").decode("utf-8")
        if len(text) > MAX_ERROR_MESSAGE_CHARS:
            text = text[:MAX_ERROR_MESSAGE_CHARS] + f"… ({len(text)} characters)"
        out[str(key).encode("utf-8", "backslashreplace").decode("utf-8")] = text
    return out


@dataclass
class _Timing:
    sync: bool = False
    blocking_ms: float = 0.0
    over_timeout: bool = False


class ToolExecutor:
    """Runs ready calls against a registry; always returns an outcome, never raises.

    Arguments are validated against the JSON Schema generated from the tool's signature and
    type hints (``pyclient.schema``) before it runs: a call that does not fit gets an
    ``invalid_arguments`` error naming each problem, and nothing runs.

    Only async tools can be timed out: a synchronous function runs to its end on the thread
    that calls it (in the browser, the page's main thread), so its time is measured and
    reported (``blocking_ms``, ``over_timeout``) instead. Make slow tools ``async``.

    The result is encoded here, before it is numbered and sent: a result that JSON cannot
    carry (a lone surrogate, NaN, a set...) or that is larger than the peer accepts becomes a
    structured error result, so the server always gets an answer.
    """

    def __init__(self, registry: ToolRegistry, max_concurrent: int = 4) -> None:
        self.registry = registry
        self._slots = asyncio.Semaphore(max_concurrent)
        self._schemas: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {}
        self.executed = 0  # tool functions actually called (a denied or invalid call never is)

    def _validate(self, tool: Tool, arguments: dict[str, Any]) -> list[str]:
        """Check the arguments against the JSON Schema of the tool's signature (the schema the
        server was given): a call that does not fit runs nothing."""
        from .schema import tool_schema, validate  # schema imports this module

        cached = self._schemas.get(tool.name)
        if cached is None or cached[0] is not tool.fn:
            cached = self._schemas[tool.name] = (tool.fn, tool_schema(tool.fn))
        return validate(arguments, cached[1])

    def check(self, call: ToolCallReady) -> dict[str, str] | None:
        """The error a call would fail with before running (unknown tool, arguments that do
        not fit), or None: a call that cannot run is answered at once, nobody is asked."""
        try:
            self._prepare(call)
        except ToolError as exc:
            return _safe_error(exc.payload)
        return None

    def refused(self, call: ToolCallReady, error: dict[str, str]) -> ToolOutcome:
        """The outcome of a call that was not allowed to run (denied, or not decided in time)."""
        return self._outcome(call, time.perf_counter(), _Timing(), error=error)

    async def execute(self, call: ToolCallReady | ToolCallInvalid, max_payload: int | None = None) -> ToolOutcome:
        """Run ``call``; ``max_payload`` is the largest tool-result payload the peer accepts."""
        if isinstance(call, ToolCallInvalid):
            return ToolOutcome(call.call_id, call.name, False, error=_safe_error(call.error))
        timing = _Timing()
        started = time.perf_counter()
        try:
            async with self._slots:
                result = await self._run(call, timing)
            size = len(encode_json({"call_id": call.call_id, "ok": True, "result": result}))
        except ToolError as exc:
            return self._outcome(call, started, timing, error=exc.payload)
        except EncodeError as exc:
            return self._outcome(call, started, timing, error=_err("result_not_json", str(exc)))
        if max_payload is not None and size > max_payload:
            msg = f"the result encodes to {size} bytes, the server accepts at most {max_payload}"
            return self._outcome(call, started, timing, error=_err("result_too_large", msg))
        return self._outcome(call, started, timing, result=result)

    def _outcome(
        self,
        call: ToolCallReady,
        started: float,
        timing: _Timing,
        *,
        result: Any = None,
        error: dict[str, str] | None = None,
    ) -> ToolOutcome:
        ms = (time.perf_counter() - started) * 1000
        error = None if error is None else _safe_error(error)
        return ToolOutcome(
            call.call_id,
            call.name,
            error is None,
            result,
            error,
            ms,
            timing.sync,
            timing.blocking_ms,
            timing.over_timeout,
        )

    def _prepare(self, call: ToolCallReady) -> tuple[Tool, inspect.BoundArguments]:
        tool = self.registry.get(call.name)
        if tool is None:
            raise ToolError("unknown_tool", f"no tool named {call.name!r} is registered")
        problems = self._validate(tool, call.arguments)
        if problems:
            raise ToolError("invalid_arguments", f"{call.name}: {'; '.join(problems)}")
        try:
            return tool, tool.signature.bind(**call.arguments)
        except TypeError as exc:
            raise ToolError("invalid_arguments", f"{call.name}: {exc}") from exc

    async def _run(self, call: ToolCallReady, timing: _Timing) -> Any:
        tool, bound = self._prepare(call)
        self.executed += 1
        t0 = time.perf_counter()
        try:
            value = tool.fn(*bound.args, **bound.kwargs)
        except Exception as exc:  # raised synchronously (a sync tool, or before its first await)
            _time_sync(timing, tool, t0)
            raise _tool_failure(exc) from exc
        if not isinstance(value, Awaitable):
            _time_sync(timing, tool, t0)
            return value
        try:
            return await asyncio.wait_for(value, tool.timeout)
        except TimeoutError as exc:
            raise ToolError("timeout", f"{call.name} ran longer than {tool.timeout} s") from exc
        except Exception as exc:
            raise _tool_failure(exc) from exc


def _time_sync(timing: _Timing, tool: Tool, t0: float) -> None:
    timing.sync = True
    timing.blocking_ms = (time.perf_counter() - t0) * 1000
    timing.over_timeout = timing.blocking_ms > tool.timeout * 1000


def _tool_failure(exc: Exception) -> ToolError:
    """The tool's own failure, reported to the server (a ToolError it raised passes as is)."""
    return exc if isinstance(exc, ToolError) else ToolError("tool_error", f"{type(exc).__name__}: {exc}")
