"""Tool calls: streaming argument assembly, a registry of Python functions, and execution.

Sans-I/O except for ``ToolExecutor.execute``, which is plain ``asyncio`` (no browser APIs).

Every way a call can fail ends in a structured error ``{"type": ..., "message": ...}`` that is
sent back to the server as a failed tool result; nothing is silently dropped:

=======================  ===========================================================
``unknown_tool``         no function registered under that name
``invalid_arguments``    arguments are not a JSON object, or do not fit the signature
``arguments_too_large``  the streamed arguments exceeded ``max_argument_bytes``
``too_many_open_calls``  more than ``max_open_calls`` calls were streaming at once
``missing_name``         the first fragment of a call did not name the tool
``timeout``              the function ran longer than its timeout
``tool_error``           the function raised
``result_not_json``      the function returned something JSON cannot encode
=======================  ===========================================================
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .errors import ToolError, UsageError
from .events import ToolCallArgumentsDelta, ToolCallInvalid, ToolCallReady, ToolCallStarted
from .frames import ToolCallFrame

DEFAULT_MAX_OPEN_CALLS = 32
DEFAULT_MAX_ARGUMENT_BYTES = 256 * 1024
DEFAULT_TOOL_TIMEOUT = 10.0

ToolEvent = ToolCallStarted | ToolCallArgumentsDelta | ToolCallReady | ToolCallInvalid


@dataclass
class _OpenCall:
    name: str
    parts: list[str]
    size: int = 0
    failed: bool = False


class ToolCallAssembler:
    """Joins streamed argument fragments into whole calls, with bounds on count and size."""

    def __init__(
        self,
        max_open_calls: int = DEFAULT_MAX_OPEN_CALLS,
        max_argument_bytes: int = DEFAULT_MAX_ARGUMENT_BYTES,
    ) -> None:
        self.max_open_calls = max_open_calls
        self.max_argument_bytes = max_argument_bytes
        self._open: dict[str, _OpenCall] = {}

    @property
    def open_calls(self) -> int:
        return len(self._open)

    def feed(self, frame: ToolCallFrame) -> list[ToolEvent]:
        out: list[ToolEvent] = []
        call = self._open.get(frame.call_id)
        if call is None:
            if not frame.name:
                out.append(ToolCallInvalid(frame.call_id, None, _err("missing_name", "first fragment has no 'name'")))
                return out
            if len(self._open) >= self.max_open_calls:
                msg = f"{len(self._open)} calls already open, limit is {self.max_open_calls}"
                out.append(ToolCallInvalid(frame.call_id, frame.name, _err("too_many_open_calls", msg)))
                return out
            call = self._open[frame.call_id] = _OpenCall(frame.name, [])
            out.append(ToolCallStarted(frame.call_id, frame.name))
        if not call.failed and frame.arguments_delta:
            call.size += len(frame.arguments_delta.encode())
            if call.size > self.max_argument_bytes:
                call.failed = True
                call.parts.clear()
                msg = f"arguments reached {call.size} bytes, limit is {self.max_argument_bytes}"
                out.append(ToolCallInvalid(frame.call_id, call.name, _err("arguments_too_large", msg)))
            else:
                call.parts.append(frame.arguments_delta)
                out.append(ToolCallArgumentsDelta(frame.call_id, frame.arguments_delta))
        if frame.final:
            del self._open[frame.call_id]
            if not call.failed:
                out.append(_finish(frame.call_id, call.name, "".join(call.parts)))
        return out


def _err(kind: str, message: str) -> dict[str, str]:
    return {"type": kind, "message": message}


def _finish(call_id: str, name: str, raw: str) -> ToolCallReady | ToolCallInvalid:
    if not raw.strip():
        return ToolCallReady(call_id, name, {})
    try:
        args = json.loads(raw)
    except ValueError as exc:
        return ToolCallInvalid(call_id, name, _err("invalid_arguments", f"arguments are not JSON: {exc}"))
    if not isinstance(args, dict):
        msg = f"arguments are a JSON {type(args).__name__}, expected an object"
        return ToolCallInvalid(call_id, name, _err("invalid_arguments", msg))
    return ToolCallReady(call_id, name, args)


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Tool:
    name: str
    fn: Callable[..., Any]
    description: str
    timeout: float

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
    ) -> Any:
        """Register ``fn`` (usable bare, ``@register``, or with options, ``@register(name=...)``)."""

        def add(f: Callable[..., Any]) -> Callable[..., Any]:
            tool_name = name or f.__name__
            if tool_name in self._tools:
                raise UsageError(f"a tool named {tool_name!r} is already registered")
            if timeout <= 0:
                raise UsageError(f"timeout must be positive, got {timeout}")
            desc = description if description is not None else inspect.getdoc(f) or ""
            self._tools[tool_name] = Tool(tool_name, f, desc, timeout)
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


class ToolExecutor:
    """Runs ready calls against a registry; always returns an outcome, never raises."""

    def __init__(self, registry: ToolRegistry, max_concurrent: int = 4) -> None:
        self.registry = registry
        self._slots = asyncio.Semaphore(max_concurrent)

    async def execute(self, call: ToolCallReady | ToolCallInvalid) -> ToolOutcome:
        if isinstance(call, ToolCallInvalid):
            return ToolOutcome(call.call_id, call.name, False, error=call.error)
        started = time.perf_counter()
        try:
            async with self._slots:
                result = await self._run(call)
            json.dumps(result)
        except ToolError as exc:
            return self._outcome(call, started, error=exc.payload)
        except (TypeError, ValueError) as exc:
            return self._outcome(call, started, error=_err("result_not_json", str(exc)))
        return self._outcome(call, started, result=result)

    def _outcome(
        self, call: ToolCallReady, started: float, *, result: Any = None, error: dict[str, str] | None = None
    ) -> ToolOutcome:
        ms = (time.perf_counter() - started) * 1000
        return ToolOutcome(call.call_id, call.name, error is None, result, error, ms)

    async def _run(self, call: ToolCallReady) -> Any:
        tool = self.registry.get(call.name)
        if tool is None:
            raise ToolError("unknown_tool", f"no tool named {call.name!r} is registered")
        try:
            bound = tool.signature.bind(**call.arguments)
        except TypeError as exc:
            raise ToolError("invalid_arguments", f"{call.name}: {exc}") from exc
        try:
            value = tool.fn(*bound.args, **bound.kwargs)
            if isinstance(value, Awaitable):
                value = await asyncio.wait_for(value, tool.timeout)
        except TimeoutError as exc:
            raise ToolError("timeout", f"{call.name} ran longer than {tool.timeout} s") from exc
        except ToolError:
            raise
        except Exception as exc:  # the tool's own failure is reported, not raised
            raise ToolError("tool_error", f"{type(exc).__name__}: {exc}") from exc
        return value
