"""Tool calls: streamed assembly with bounds, registry, execution outcomes."""

from __future__ import annotations

import asyncio

import pytest

from pyclient.errors import UsageError
from pyclient.events import ToolCallArgumentsDelta, ToolCallInvalid, ToolCallReady, ToolCallStarted
from pyclient.frames import Flag, ToolCallFrame
from pyclient.tools import DEFAULT_MAX_OPEN_BYTES, ToolCallAssembler, ToolExecutor, ToolRegistry

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


# ------------------------------------------------------------------ assembler: hostile input and bounds (issue 7)


class FakeClock:
    def __init__(self, now: float = 500.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_lone_surrogate_fragment_fails_the_call_once() -> None:
    a = ToolCallAssembler()
    out = a.feed(frag("c", '{"a": "', name="f"))
    out += a.feed(frag("c", "x\ud800"))
    out += a.feed(frag("c", '"}', final=True))
    assert [type(e) for e in out] == [ToolCallStarted, ToolCallArgumentsDelta, ToolCallInvalid]
    assert out[2].error == {
        "type": "invalid_arguments",
        "message": "arguments_delta holds a lone surrogate U+D800 at character 1 of 2: not valid Unicode",
    }
    assert a.open_calls == 0 and a.open_bytes == 0


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ('{"a": ' + "[" * 1000 + "]" * 1000 + "}", "JSON nested 1001 deep, limit is 64"),
        ('{"a": NaN}', "NaN is not JSON"),
        ('{"a": "\\ud800"}', "not valid Unicode"),
    ],
)
def test_hostile_arguments_fail_at_fin(raw: str, reason: str) -> None:
    (last,) = ToolCallAssembler().feed(frag("c", raw, name="f", final=True))[-1:]
    assert isinstance(last, ToolCallInvalid) and last.error["type"] == "invalid_arguments"
    assert reason in last.error["message"]


@pytest.mark.parametrize(
    ("name", "shown", "reason"),
    [
        ("n" * 129, "n" * 128 + "…", "name of 129 characters, limit is 128"),
        ("calc\ud800", "calc?", "name holds a lone surrogate U+D800 at character 4: not valid Unicode"),
    ],
)
def test_a_bad_name_fails_the_call_and_swallows_its_fragments(name: str, shown: str, reason: str) -> None:
    a = ToolCallAssembler()
    (bad,) = a.feed(frag("c", "{", name=name))
    assert bad == ToolCallInvalid("c", shown, {"type": "invalid_name", "message": reason})
    assert a.feed(frag("c", '"x": 1')) == []  # no second failed result for the same call
    assert a.feed(frag("c", "}", final=True)) == []
    assert a.open_calls == 0 and a.open_bytes == 0


def test_ids_and_names_are_counted_in_what_open_calls_hold() -> None:
    a = ToolCallAssembler()
    a.feed(frag("id-1", '{"é":', name="calc"))
    assert a.open_bytes == 4 + 4 + 6
    a.feed(frag("id-2", "", name="clock"))
    assert a.open_bytes == 14 + 4 + 5
    a.feed(frag("id-1", "1}", final=True))
    assert a.open_bytes == 9


def test_open_calls_together_are_bounded() -> None:
    a = ToolCallAssembler(max_argument_bytes=100, max_open_bytes=260)
    out = []
    for i in range(4):
        out += a.feed(frag(f"c{i}", "x" * 80, name="f"))
    assert [type(e).__name__ for e in out][-1] == "ToolCallInvalid"
    assert out[-1].call_id == "c3" and out[-1].error == {
        "type": "open_calls_too_large",
        "message": "open calls would hold 332 bytes, limit is 260",
    }
    assert a.open_bytes == 3 * 83 + 3  # the failed call holds its id and name only
    (refused,) = a.feed(frag("big" * 20, "", name="g" * 20))
    assert refused.error["type"] == "open_calls_too_large"
    assert refused.error["message"] == "open calls hold 252 bytes, this call's id and name 80 more, limit is 260"


def test_the_reported_34_mib_attack_is_held_to_the_bound() -> None:
    """32 x (400 KiB id + 400 KiB name + 256 KiB arguments) held 34 MiB before."""
    a = ToolCallAssembler()
    big_name = "n" * (400 * 1024)
    for i in range(32):
        a.feed(frag(f"{i:0256d}", "", name=big_name))  # longest id the decoder lets through
        a.feed(frag(f"{i:0256d}", "", name="f"))
        a.feed(frag(f"{i:0256d}", "a" * (256 * 1024 - 1)))
    assert a.open_bytes <= DEFAULT_MAX_OPEN_BYTES


def test_expire_fails_calls_open_too_long_with_the_numbers() -> None:
    clock = FakeClock()
    a = ToolCallAssembler(open_call_timeout=30.0, clock=clock)
    assert a.expire() == [] and a.next_expiry is None
    a.feed(frag("old", '{"a":', name="f"))
    clock.now += 10
    a.feed(frag("new", "", name="g"))
    a.feed(frag("broken", "\ud800", name="h"))  # failed already: expires silently
    assert a.next_expiry == 530.0
    assert a.expire(529.9) == []
    (late,) = a.expire(531.0)
    assert late == ToolCallInvalid(
        "old",
        "f",
        {
            "type": "arguments_timeout",
            "message": "no FIN 31.0 s after the call began, limit is 30 s (5 bytes of arguments received)",
        },
    )
    clock.now = 600.0
    assert [e.call_id for e in a.expire()] == ["new"]
    assert a.open_calls == 0 and a.open_bytes == 0
    assert a.feed(frag("old", "1}", final=True))[0].error["type"] == "missing_name"


def test_open_call_timeout_must_be_positive() -> None:
    with pytest.raises(UsageError, match="open_call_timeout must be positive, got 0"):
        ToolCallAssembler(open_call_timeout=0)


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
