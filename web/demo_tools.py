"""Harmless tools the demo registers: a clock, a calculator and ``repeat``.

Plain Python (no browser imports), so the unit tests exercise them under CPython.

They are synchronous, so they run on the page's main thread and cannot be timed out
(pyclient measures and reports their time instead): each one bounds its own work. The
calculator refuses any step whose result would exceed ``MAX_RESULT_BITS`` before computing it,
so ``(((9**64)**64)**64)**64`` fails in microseconds instead of blocking the page for a minute.
"""

from __future__ import annotations

import ast
import asyncio
import datetime
import operator
from typing import Any

MAX_EXPRESSION_CHARS = 200
MAX_EXPONENT = 64
MAX_RESULT_BITS = 4096  # integers up to about 1,233 decimal digits
MAX_REPEAT_CHARS = 1 << 20
MAX_LOOKUP_SECONDS = 30.0

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def clock() -> str:
    """The current local date and time on the user's machine (ISO 8601)."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def calculator(expression: str) -> float:
    """Evaluate an arithmetic expression: numbers, + - * / // % ** and parentheses."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"expression of {len(expression)} characters, limit is {MAX_EXPRESSION_CHARS}")
    tree = ast.parse(expression, mode="eval")
    return _eval(tree.body)


def _bits(value: Any) -> int:
    return abs(value).bit_length() if isinstance(value, int) else 0


def _check_size(op: ast.operator, left: Any, right: Any) -> None:
    """Refuse a step whose integer result would be too large, before computing it."""
    if isinstance(op, ast.Pow):
        if abs(right) > MAX_EXPONENT:
            raise ValueError(f"exponent {right} is above the limit of {MAX_EXPONENT}")
        if isinstance(right, int) and right > 0 and _bits(left) * right > MAX_RESULT_BITS:
            raise ValueError(f"the result would have about {_bits(left) * right} bits, limit is {MAX_RESULT_BITS}")
    elif isinstance(op, ast.Mult) and _bits(left) + _bits(right) > MAX_RESULT_BITS:
        raise ValueError(f"the result would have about {_bits(left) + _bits(right)} bits, limit is {MAX_RESULT_BITS}")


def _eval(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        if _bits(node.value) > MAX_RESULT_BITS:
            raise ValueError(f"a number of {_bits(node.value)} bits, limit is {MAX_RESULT_BITS}")
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        _check_size(node.op, left, right)
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    raise ValueError(f"unsupported syntax: {type(node).__name__}")


def repeat(text: str, times: int) -> str:
    """``text`` repeated ``times`` times (at most 1 MiB): exercises large tool results."""
    if times < 0 or len(text) * times > MAX_REPEAT_CHARS:
        raise ValueError(f"{len(text)} x {times} characters, limit is {MAX_REPEAT_CHARS}")
    return text * times


async def slow_lookup(query: str, seconds: float = 2.0) -> str:
    """A pretend lookup that takes ``seconds`` (at most 30): async, so it can be timed out and
    cancelled while it runs (Gemini withdraws calls with toolCallCancellation)."""
    if not 0 <= seconds <= MAX_LOOKUP_SECONDS:
        raise ValueError(f"seconds={seconds}, limit is {MAX_LOOKUP_SECONDS}")
    await asyncio.sleep(seconds)
    return f"no results for {query!r}"


def register(registry: Any, approve: frozenset[str] = frozenset(), approval_timeout: float | None = None) -> None:
    """Register the demo tools on a ``pyclient.ToolRegistry``; those named in ``approve`` wait
    for a person's approval (denied after ``approval_timeout`` s, if given)."""
    unknown = approve - {"clock", "calculator", "repeat", "slow_lookup"}
    if unknown:
        raise ValueError(f"approve names tools the demo does not have: {', '.join(sorted(unknown))}")

    def add(fn: Any, **options: Any) -> None:
        if fn.__name__ in approve:
            options.update(needs_approval=True, approval_timeout=approval_timeout)
        registry.register(fn, **options)

    add(clock)
    add(calculator)
    add(repeat)
    add(slow_lookup, timeout=MAX_LOOKUP_SECONDS + 5)
