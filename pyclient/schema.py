"""JSON Schema from a Python function's signature, and a small validator for exactly that subset.

Sans-I/O, stdlib only. ``tool_schema(fn)`` describes a tool's parameters for a server
(OpenAI Realtime ``tools[].parameters``, Gemini ``functionDeclarations[].parameters`` after
``gemini_live.gemini_schema``); ``validate(value, schema)`` checks the arguments a server sent
before the tool runs, so a bad call gets a structured ``invalid_arguments`` error and nothing runs.

What each annotation becomes:

==============================  ==============================================================
``str`` / ``int`` / ``float``    ``{"type": "string" | "integer" | "number"}``
``bool``                         ``{"type": "boolean"}``
``None``                         ``{"type": "null"}``
``Literal["a", "b"]``            ``{"type": "string", "enum": ["a", "b"]}`` (type only when all alike)
``enum.Enum`` subclass           ``{"enum": [member values]}`` (+ type when all alike)
``X | None`` / ``Optional[X]``   ``{"anyOf": [<X>, {"type": "null"}]}``
``X | Y``                        ``{"anyOf": [<X>, <Y>]}``
``list[X]`` / ``tuple[X, ...]``  ``{"type": "array", "items": <X>}``
``dict[str, X]``                 ``{"type": "object", "additionalProperties": <X>}``
dataclass / TypedDict            ``{"type": "object", "properties", "required", "additionalProperties": false}``
``Annotated[X, "text"]``         ``<X>`` with ``"description": "text"``
anything else (``Any``...)       ``{}``: no constraint (never an error)
==============================  ==============================================================

Parameters with a default are not required; ``*args`` and positional-only parameters are left
out (a tool is called with keyword arguments); ``**kwargs`` turns ``additionalProperties`` on.
A type that refers to itself, or nesting deeper than ``MAX_SCHEMA_DEPTH``, ends in ``{}``.

``validate`` understands ``type`` (a name or a list of names), ``enum``, ``properties``,
``required``, ``additionalProperties`` (false or a schema), ``items`` and ``anyOf``, and returns
messages such as ``city: expected string, got int`` (at most ``MAX_ERRORS`` of them). Integers
written as ``3.0`` count as integers, as JSON Schema says; booleans are never numbers.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .protocols.base import ToolSpec
from .tools import Tool

MAX_SCHEMA_DEPTH = 16
MAX_ERRORS = 20

_SCALARS: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}
_ARRAYS = (list, tuple, set, frozenset, Sequence, typing.List, typing.Tuple, typing.Set)  # noqa: UP006
_MAPPINGS = (dict, Mapping, typing.Dict)  # noqa: UP006


# --------------------------------------------------------------------------- generation


def tool_schema(fn: Callable[..., Any]) -> dict[str, Any]:
    """The object schema of ``fn``'s keyword-callable parameters (description is the caller's)."""
    sig = _signature(fn)
    if sig is None:
        return {"type": "object", "properties": {}, "required": [], "additionalProperties": True}
    hints = _hints(fn)
    properties: dict[str, Any] = {}
    required: list[str] = []
    extra = False
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            extra = True
            continue
        if p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            continue
        ann = hints.get(p.name, p.annotation)
        properties[p.name] = {} if ann is inspect.Parameter.empty else schema_for(ann, _globals(fn))
        if p.default is inspect.Parameter.empty:
            required.append(p.name)
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": extra}


def schema_for(annotation: Any, globalns: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON Schema of one annotation (``{}`` for what this module does not describe)."""
    return _schema(annotation, globalns or {}, (), 0)


def spec_for(tool: Tool) -> ToolSpec:
    """A registered tool as a server sees it: name, description, parameter schema."""
    return ToolSpec(tool.name, tool.description, tool_schema(tool.fn))


def _globals(obj: Any) -> dict[str, Any]:
    fn = inspect.unwrap(obj) if callable(obj) else obj
    return getattr(fn, "__globals__", None) or {}


def _signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None  # not introspectable (a builtin...)
    except Exception:  # Python 3.14's deferred annotations: a name that does not resolve raises here
        try:
            import annotationlib  # type: ignore[import-not-found]  # Python 3.14+

            return inspect.signature(fn, annotation_format=annotationlib.Format.FORWARDREF)  # type: ignore[call-arg]
        except Exception:
            return None


def _hints(obj: Any) -> dict[str, Any]:
    """Resolved annotations of a function or class; unresolvable ones stay as written (or as
    ``ForwardRef`` on Python 3.14), and become no constraint."""
    try:
        return typing.get_type_hints(obj, include_extras=True)
    except Exception:  # a forward reference that does not resolve, a bad annotation
        pass
    try:
        import annotationlib  # type: ignore[import-not-found]  # Python 3.14+

        raw = annotationlib.get_annotations(obj, format=annotationlib.Format.FORWARDREF)
    except ImportError:
        raw = getattr(obj, "__annotations__", None)
    except Exception:
        raw = None
    return dict(raw) if isinstance(raw, dict) else {}


def _schema(ann: Any, globalns: dict[str, Any], seen: tuple[Any, ...], depth: int) -> dict[str, Any]:
    if depth > MAX_SCHEMA_DEPTH:
        return {}
    if isinstance(ann, str):  # an annotation left as text: resolve it if we can
        try:
            ann = eval(ann, dict(globalns), {})  # annotations are the module's own code
        except Exception:
            return {}
    if ann is None or ann is type(None):
        return {"type": "null"}
    if ann in _SCALARS:
        return {"type": _SCALARS[ann]}
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if origin is typing.Annotated:
        inner = _schema(args[0], globalns, seen, depth)
        texts = [a for a in args[1:] if isinstance(a, str)]
        return {**inner, "description": texts[0]} if texts else inner
    if origin is typing.Literal:
        return _literal(args)
    if origin is typing.Union or origin is types.UnionType:
        return _union(args, globalns, seen, depth)
    if isinstance(ann, type) and issubclass(ann, enum.Enum):
        return _literal(tuple(m.value for m in ann))
    if origin in _ARRAYS or ann in _ARRAYS:
        out: dict[str, Any] = {"type": "array"}
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(set(map(repr, args))) == 1:  # tuple[int, int]: same items, fixed length
                out["items"] = _schema(args[0], globalns, seen, depth + 1)
            return out
        if args:
            out["items"] = _schema(args[0], globalns, seen, depth + 1)
        return out
    if origin in _MAPPINGS or ann in _MAPPINGS:
        out = {"type": "object"}
        if len(args) == 2 and args[0] is str:
            out["additionalProperties"] = _schema(args[1], globalns, seen, depth + 1)
        return out
    if isinstance(ann, type) and (dataclasses.is_dataclass(ann) or typing.is_typeddict(ann)):
        if ann in seen:
            return {}  # a type that contains itself: no constraint below this point
        return _object(ann, globalns, (*seen, ann), depth)
    return {}


def _literal(values: tuple[Any, ...]) -> dict[str, Any]:
    plain = [v for v in values if v is None or isinstance(v, (str, int, float, bool))]
    if not plain:
        return {}
    kinds = {_json_type(v) for v in plain}
    out: dict[str, Any] = {}
    if len(kinds) == 1:
        out["type"] = kinds.pop()
    elif kinds <= {"integer", "number"}:
        out["type"] = "number"
    out["enum"] = plain
    return out


def _union(args: tuple[Any, ...], globalns: dict[str, Any], seen: tuple[Any, ...], depth: int) -> dict[str, Any]:
    branches = [_schema(a, globalns, seen, depth + 1) for a in args]
    if any(b == {} for b in branches):
        return {}  # one branch takes anything: so does the union
    return {"anyOf": branches}


def _object(cls: type, globalns: dict[str, Any], seen: tuple[Any, ...], depth: int) -> dict[str, Any]:
    hints = _hints(cls)
    ns = {**globalns, **_module_globals(cls)}
    properties: dict[str, Any] = {}
    required: list[str] = []
    if dataclasses.is_dataclass(cls):
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            properties[f.name] = _schema(hints.get(f.name, f.type), ns, seen, depth + 1)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                required.append(f.name)
    else:  # TypedDict
        keys = getattr(cls, "__required_keys__", frozenset(hints))
        for name, ann in hints.items():
            properties[name] = _schema(_strip_required(ann), ns, seen, depth + 1)
            # Required[]/NotRequired[] said here win: with string annotations (``from __future__
            # import annotations``) Python 3.11 cannot see them when it builds __required_keys__
            marker = typing.get_origin(ann)
            if marker is typing.Required or (marker is not typing.NotRequired and name in keys):
                required.append(name)
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def _module_globals(cls: type) -> dict[str, Any]:
    import sys

    module = sys.modules.get(getattr(cls, "__module__", ""), None)
    return dict(vars(module)) if module is not None else {}


def _strip_required(ann: Any) -> Any:
    """``Required[X]`` / ``NotRequired[X]`` -> ``X`` (the keys sets already say which is which)."""
    origin = typing.get_origin(ann)
    if origin is typing.Required or origin is typing.NotRequired:
        return typing.get_args(ann)[0]
    return ann


# --------------------------------------------------------------------------- validation


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


_GOT = {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "dict", type(None): "null"}


def _got(value: Any) -> str:
    return _GOT.get(type(value), type(value).__name__)


def _is(value: Any, kind: str) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        if isinstance(value, bool):
            return False
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "null":
        return value is None
    if kind == "array":
        return isinstance(value, list)
    if kind == "object":
        return isinstance(value, dict)
    return True  # a type name we do not know constrains nothing


def validate(value: Any, schema: dict[str, Any]) -> list[str]:
    """Why ``value`` does not fit ``schema`` (empty when it does); at most ``MAX_ERRORS`` messages."""
    errors: list[str] = []
    _check(value, schema, "", errors, 0)
    if len(errors) > MAX_ERRORS:
        errors[MAX_ERRORS:] = [f"... and {len(errors) - MAX_ERRORS} more"]
    return errors


def _at(path: str, message: str) -> str:
    return f"{path}: {message}" if path else message


def _check(value: Any, schema: Any, path: str, errors: list[str], depth: int) -> None:
    if not isinstance(schema, dict) or not schema or len(errors) > MAX_ERRORS:
        return
    if depth > 2 * MAX_SCHEMA_DEPTH + 8:  # schemas we did not generate could be deeper: stop, do not recurse
        return
    any_of = schema.get("anyOf")
    if isinstance(any_of, list) and any_of:
        failures: list[tuple[Any, list[str]]] = []
        for branch in any_of:
            sub: list[str] = []
            _check(value, branch, path, sub, depth + 1)
            if not sub:
                break
            failures.append((branch, sub))
        else:
            # a branch of the value's own type explains best ("address.zip: ..."); else name the types
            fitting = [sub for branch, sub in failures if not isinstance(branch, dict) or _type_fits(value, branch)]
            if fitting:
                errors.extend(fitting[0])
            else:
                kinds = [_type_names(branch) for branch, _ in failures]
                errors.append(_at(path, f"expected {' or '.join(kinds)}, got {_got(value)}"))
            return
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not any(_is(value, k) for k in kinds if isinstance(k, str)):
            errors.append(_at(path, f"expected {' or '.join(map(str, kinds))}, got {_got(value)}"))
            return
    allowed = schema.get("enum")
    if isinstance(allowed, list) and not any(_same(value, a) for a in allowed):
        shown = ", ".join(repr(a) for a in allowed[:10]) + (", ..." if len(allowed) > 10 else "")
        errors.append(_at(path, f"expected one of {shown}, got {value!r}"[:300]))
        return
    if isinstance(value, dict):
        _check_object(value, schema, path, errors, depth)
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict) and items:
            for i, item in enumerate(value):
                _check(item, items, f"{path}[{i}]", errors, depth + 1)
                if len(errors) > MAX_ERRORS:
                    return


def _type_fits(value: Any, schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    if kind is None:
        return True
    kinds = kind if isinstance(kind, list) else [kind]
    return any(_is(value, k) for k in kinds if isinstance(k, str))


def _type_names(schema: Any) -> str:
    kind = schema.get("type") if isinstance(schema, dict) else None
    if isinstance(kind, list):
        return " or ".join(map(str, kind))
    return str(kind) if kind is not None else "a value of another shape"


def _same(value: Any, allowed: Any) -> bool:
    """Enum membership without Python's ``True == 1`` and ``1 == 1.0`` surprises."""
    if isinstance(value, bool) or isinstance(allowed, bool):
        return type(value) is type(allowed) and value == allowed
    return value == allowed


def _check_object(value: dict[str, Any], schema: dict[str, Any], path: str, errors: list[str], depth: int) -> None:
    props = schema.get("properties")
    props = props if isinstance(props, dict) else {}
    required = schema.get("required")
    for name in required if isinstance(required, list) else ():
        if name not in value:
            errors.append(_at(_join(path, name), "required property missing"))
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        sub = props.get(name)
        where = _join(path, name)
        if sub is not None:
            _check(item, sub, where, errors, depth + 1)
        elif extra is False:
            errors.append(_at(where, "unexpected property"))
        elif isinstance(extra, dict):
            _check(item, extra, where, errors, depth + 1)
        if len(errors) > MAX_ERRORS:
            return


def _join(path: str, name: Any) -> str:
    name = str(name)[:64]
    return f"{path}.{name}" if path else name
