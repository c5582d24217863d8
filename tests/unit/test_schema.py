"""JSON Schema from signatures and type hints, and the validator for exactly that subset.

The generated shape is what OpenAI Realtime takes as ``tools[].parameters`` (openai-node
``src/resources/realtime/realtime.ts`` ``RealtimeFunctionTool.parameters``: "Parameters of the
function in JSON Schema") and what js-genai converts for Gemini (``src/_transformers.ts``
``processJsonSchema``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, NotRequired, Optional, TypedDict

from hypothesis import given, settings
from hypothesis import strategies as st

from pyclient.protocols.base import ToolSpec
from pyclient.schema import MAX_ERRORS, schema_for, spec_for, tool_schema, validate
from pyclient.tools import ToolRegistry


@dataclass
class Address:
    street: str
    zip: int = 0
    tags: list[str] = field(default_factory=list)


class Options(TypedDict):
    verbose: bool
    level: NotRequired[int]


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass
class Node:
    name: str
    children: list[Node]


def weather(city: str, unit: Literal["celsius", "fahrenheit"] = "celsius", days: int | None = None) -> str:
    "The weather in a city."
    return city


def test_scalars_literal_optional_and_defaults() -> None:
    assert tool_schema(weather) == {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
        },
        "required": ["city"],
        "additionalProperties": False,
    }


def test_each_annotation() -> None:
    assert schema_for(float) == {"type": "number"}
    assert schema_for(bool) == {"type": "boolean"}
    assert schema_for(None) == {"type": "null"}
    assert schema_for(Optional[str]) == {"anyOf": [{"type": "string"}, {"type": "null"}]}  # noqa: UP045
    assert schema_for(int | str) == {"anyOf": [{"type": "integer"}, {"type": "string"}]}
    assert schema_for(list[int]) == {"type": "array", "items": {"type": "integer"}}
    assert schema_for(list) == {"type": "array"}
    assert schema_for(tuple[float, ...]) == {"type": "array", "items": {"type": "number"}}
    assert schema_for(dict[str, float]) == {"type": "object", "additionalProperties": {"type": "number"}}
    assert schema_for(Literal[1, 2]) == {"type": "integer", "enum": [1, 2]}
    assert schema_for(Literal[1, "a"]) == {"enum": [1, "a"]}
    assert schema_for(Color) == {"type": "string", "enum": ["red", "blue"]}
    assert schema_for(Annotated[str, "a city name"]) == {"type": "string", "description": "a city name"}


def test_unsupported_annotations_constrain_nothing() -> None:
    assert schema_for(Any) == {}
    assert schema_for(set) == {"type": "array"}
    assert schema_for(bytes) == {}
    assert schema_for(int | Any) == {}  # one branch takes anything
    assert schema_for("NoSuchType") == {}  # a forward reference that does not resolve

    def f(a, b: NoSuchType = None) -> None:  # type: ignore[name-defined]  # noqa: F821
        pass

    schema = tool_schema(f)
    assert schema["properties"] == {"a": {}, "b": {}}
    assert schema["required"] == ["a"]


def test_dataclass_and_typeddict_nest_as_closed_objects() -> None:
    def ship(to: Address, options: Options | None = None) -> None:
        pass

    schema = tool_schema(ship)
    assert schema["properties"]["to"] == {
        "type": "object",
        "properties": {
            "street": {"type": "string"},
            "zip": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["street"],
        "additionalProperties": False,
    }
    assert schema["properties"]["options"]["anyOf"][0] == {
        "type": "object",
        "properties": {"verbose": {"type": "boolean"}, "level": {"type": "integer"}},
        "required": ["verbose"],
        "additionalProperties": False,
    }


def test_a_type_that_contains_itself_ends_in_no_constraint() -> None:
    schema = schema_for(Node, globals())
    assert schema["properties"]["children"] == {"type": "array", "items": {}}


def test_parameter_kinds() -> None:
    def f(pos_only: int, /, a: int, *args: int, kw: str, **extra: Any) -> None:
        pass

    schema = tool_schema(f)
    assert list(schema["properties"]) == ["a", "kw"]
    assert schema["required"] == ["a", "kw"]
    assert schema["additionalProperties"] is True  # **extra accepts more


def test_spec_for_a_registered_tool() -> None:
    tools = ToolRegistry()
    tools.register(weather)
    spec = spec_for(tools.get("weather"))  # type: ignore[arg-type]
    assert spec == ToolSpec("weather", "The weather in a city.", tool_schema(weather))


# --------------------------------------------------------------------------- validation

SCHEMA = tool_schema(weather)


def test_valid_arguments_have_no_messages() -> None:
    assert validate({"city": "Paris"}, SCHEMA) == []
    assert validate({"city": "Paris", "unit": "fahrenheit", "days": None}, SCHEMA) == []
    assert validate({"city": "Paris", "days": 3.0}, SCHEMA) == []  # JSON Schema: 3.0 is an integer


def test_messages_name_the_path_and_the_types() -> None:
    assert validate({"city": 3}, SCHEMA) == ["city: expected string, got int"]
    assert validate({}, SCHEMA) == ["city: required property missing"]
    assert validate({"city": "x", "country": "FR"}, SCHEMA) == ["country: unexpected property"]
    assert validate({"city": "x", "unit": "kelvin"}, SCHEMA) == [
        "unit: expected one of 'celsius', 'fahrenheit', got 'kelvin'"
    ]
    assert validate({"city": "x", "days": "3"}, SCHEMA) == ["days: expected integer or null, got str"]
    assert validate({"city": "x", "days": True}, SCHEMA) == ["days: expected integer or null, got bool"]
    assert validate([], SCHEMA) == ["expected object, got list"]


def test_nested_paths() -> None:
    def ship(to: Address | None, items: list[Address]) -> None:
        pass

    schema = tool_schema(ship)
    got = validate({"to": {"street": "a", "zip": "9"}, "items": [{"street": "b"}, {"zip": 1}]}, schema)
    assert got == ["to.zip: expected integer, got str", "items[1].street: required property missing"]
    assert validate({"to": 5, "items": []}, schema) == ["to: expected object or null, got int"]


def test_enum_does_not_confuse_bool_and_int() -> None:
    schema = {"enum": [1, 2]}
    assert validate(True, schema) == ["expected one of 1, 2, got True"]
    assert validate(1, schema) == []


def test_messages_are_bounded() -> None:
    schema = {"type": "object", "additionalProperties": False}
    got = validate({f"k{i}": i for i in range(100)}, schema)
    assert len(got) == MAX_ERRORS + 1
    assert got[-1].startswith("... and")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_validate_never_raises(value: Any) -> None:
    def everything(a: str, b: list[Address], c: dict[str, int] | None = None, d: Options | None = None) -> None:
        pass

    for schema in (tool_schema(everything), SCHEMA, {}, {"anyOf": []}, {"type": ["string", 7]}):
        assert isinstance(validate(value, schema), list)
