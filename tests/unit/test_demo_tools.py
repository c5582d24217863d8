"""The demo page's tools run under CPython too."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "web"))
import demo_tools

from pyclient.tools import ToolRegistry

from .aio import run


def test_calculator_does_arithmetic() -> None:
    assert demo_tools.calculator("17 * 23") == 391
    assert demo_tools.calculator("-(2 + 3) ** 2 / 5") == -5.0


@pytest.mark.parametrize("expr", ["__import__('os')", "a + 1", "[1] * 3", "2 ** 1000", "1" * 300])
def test_calculator_refuses_anything_else(expr: str) -> None:
    with pytest.raises((ValueError, SyntaxError)):
        demo_tools.calculator(expr)


def test_clock_is_iso8601() -> None:
    assert datetime.datetime.fromisoformat(demo_tools.clock()).tzinfo is not None


def test_repeat_is_bounded() -> None:
    assert demo_tools.repeat("ab", 3) == "ababab"
    with pytest.raises(ValueError, match="limit is 1048576"):
        demo_tools.repeat("x" * 1024, 1025)


@pytest.mark.parametrize(
    "expr",
    [
        "(((9**64)**64)**64)**64",  # spent 54.6 s of main thread before the size check
        "(9**64)**64",
        "(2**60)**60 * (2**60)**60",
        "((7**60)**60)",
    ],
)
def test_calculator_refuses_results_too_large_before_computing_them(expr: str) -> None:
    # Only the size check can refuse these: each exponent is within MAX_EXPONENT.
    with pytest.raises(ValueError, match="bits, limit is 4096"):
        demo_tools.calculator(expr)


def test_calculator_still_computes_large_but_bounded_numbers() -> None:
    assert demo_tools.calculator("2 ** 64 * 3") == 3 * 2**64
    assert demo_tools.calculator("(2**60)**60") == 2**3600


def test_slow_lookup_is_async_and_bounded() -> None:
    # In a thread of its own (tests/unit/aio.py): the browser tests may own this thread's loop.
    assert run(demo_tools.slow_lookup("x", 0)) == "no results for 'x'"
    with pytest.raises(ValueError, match="limit is 30"):
        run(demo_tools.slow_lookup("x", 31))


def test_register_marks_the_named_tools_for_approval() -> None:
    registry = ToolRegistry()
    demo_tools.register(registry, approve=frozenset({"calculator"}), approval_timeout=5)
    calc, clock = registry.get("calculator"), registry.get("clock")
    assert calc.needs_approval is True and calc.approval_timeout == 5
    assert clock.needs_approval is False and clock.approval_timeout is None
    with pytest.raises(ValueError, match="launch_rockets"):
        demo_tools.register(ToolRegistry(), approve=frozenset({"launch_rockets"}))
