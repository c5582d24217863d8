"""Tool calls: streamed assembly with bounds, registry, execution outcomes."""

from __future__ import annotations

import asyncio

import pytest

from pyclient.errors import UsageError
from pyclient.events import ToolCallArgumentsDelta, ToolCallInvalid, ToolCallReady, ToolCallStarted
from pyclient.frames import Flag, ToolCallFrame
from pyclient.tools import ToolCallAssembler, ToolExecutor, ToolRegistry

from .aio import run


def frag(call_id: str, delta: str, name: str | None = None, final: bool = False) -> ToolCallFrame:
    return ToolCallFrame(0, call_id, name, delta, Flag.FIN if final else 0)


def test_fragments_assemble_into_a_call() -> None:
    a = ToolCallAssembler()
    out = a.feed(frag("c1", '{"expre', name="calc"))
    out += a.feed(frag("c1", 'ssion": "1+1"}', final=True))
    assert out == [
        ToolCallStarted("c1", "calc"),
        ToolCallArgumentsDelta("c1", '{"expre'),
        ToolCallArgumentsDelta("c1", 'ssion": "1+1"}'),
        ToolCallReady("c1", "calc", {"expression": "1+1"}),
    ]
    assert a.open_calls == 0


def test_interleaved_calls_stay_separate() -> None:
    a = ToolCallAssembler()
    a.feed(frag("a", '{"x":', name="f"))
    a.feed(frag("b", '{"y":', name="g"))
    ready_b = a.feed(frag("b", "2}", final=True))[-1]
    ready_a = a.feed(frag("a", "1}", final=True))[-1]
    assert ready_a == ToolCallReady("a", "f", {"x": 1})
    assert ready_b == ToolCallReady("b", "g", {"y": 2})


def test_empty_arguments_mean_no_arguments() -> None:
    assert ToolCallAssembler().feed(frag("c", "", name="clock", final=True))[-1] == ToolCallReady("c", "clock", {})


@pytest.mark.parametrize("raw", ["{bad", "[1,2]", '"s"'])
def test_bad_arguments_become_invalid_calls(raw: str) -> None:
    (last,) = ToolCallAssembler().feed(frag("c", raw, name="f", final=True))[-1:]
    assert isinstance(last, ToolCallInvalid) and last.error["type"] == "invalid_arguments"


def test_missing_name_and_limits() -> None:
    a = ToolCallAssembler(max_open_calls=1, max_argument_bytes=10)
    assert a.feed(frag("x", "{}"))[0].error["type"] == "missing_name"
    a.feed(frag("c1", "", name="f"))
    assert a.feed(frag("c2", "", name="g"))[0].error["type"] == "too_many_open_calls"
    out = a.feed(frag("c1", "0123456789ABC"))
    assert out[0].error["type"] == "arguments_too_large"
    assert "13 bytes, limit is 10" in out[0].error["message"]
    assert a.feed(frag("c1", "more", final=True)) == []  # already failed once; nothing more
    assert a.open_calls == 0


def test_registry_rejects_duplicates_and_describes_tools() -> None:
    reg = ToolRegistry()

    @reg.register
    def add(a: float, b: float = 0) -> float:
        """Add numbers."""
        return a + b

    with pytest.raises(UsageError, match="already registered"):
        reg.register(add)
    reg.register(lambda: 1, name="one", description="always one")
    assert reg.describe() == [
        {"name": "add", "description": "Add numbers.", "parameters": ["a", "b"]},
        {"name": "one", "description": "always one", "parameters": []},
    ]
    assert "add" in reg and len(reg) == 2


def test_executor_outcomes() -> None:
    reg = ToolRegistry()
    reg.register(lambda a, b: a * b, name="mul")

    async def slow() -> str:
        await asyncio.sleep(5)
        return "late"

    async def fast(x: int) -> int:
        await asyncio.sleep(0)
        return x + 1

    reg.register(slow, timeout=0.05)
    reg.register(fast)
    reg.register(lambda: 1 / 0, name="boom")
    reg.register(lambda: object(), name="weird")

    async def main():
        ex = ToolExecutor(reg)
        return [
            await ex.execute(ToolCallReady("1", "mul", {"a": 6, "b": 7})),
            await ex.execute(ToolCallReady("2", "fast", {"x": 1})),
            await ex.execute(ToolCallReady("3", "nope", {})),
            await ex.execute(ToolCallReady("4", "mul", {"a": 1})),
            await ex.execute(ToolCallReady("5", "slow", {})),
            await ex.execute(ToolCallReady("6", "boom", {})),
            await ex.execute(ToolCallReady("7", "weird", {})),
            await ex.execute(ToolCallInvalid("8", "x", {"type": "invalid_arguments", "message": "m"})),
        ]

    out = run(main())
    assert (out[0].ok, out[0].result) == (True, 42)
    assert (out[1].ok, out[1].result) == (True, 2)
    assert [o.error["type"] for o in out[2:]] == [
        "unknown_tool",
        "invalid_arguments",
        "timeout",
        "tool_error",
        "result_not_json",
        "invalid_arguments",
    ]
    assert "ZeroDivisionError" in out[5].error["message"]
