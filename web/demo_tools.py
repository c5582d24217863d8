"""Harmless tools the demo registers: a clock and a calculator.

Plain Python (no browser imports), so the unit tests exercise them under CPython.
"""

from __future__ import annotations

import ast
import datetime
import operator
from typing import Any

MAX_EXPRESSION_CHARS = 200
MAX_EXPONENT = 64
MAX_REPEAT_CHARS = 1 << 20

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


def _eval(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ValueError(f"exponent {right} is above the limit of {MAX_EXPONENT}")
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    raise ValueError(f"unsupported syntax: {type(node).__name__}")


def repeat(text: str, times: int) -> str:
    """``text`` repeated ``times`` times (at most 1 MiB): exercises large tool results."""
    if times < 0 or len(text) * times > MAX_REPEAT_CHARS:
        raise ValueError(f"{len(text)} x {times} characters, limit is {MAX_REPEAT_CHARS}")
    return text * times


def register(registry: Any) -> None:
    """Register the demo tools on a ``pyclient.ToolRegistry``."""
    registry.register(clock)
    registry.register(calculator)
    registry.register(repeat)
