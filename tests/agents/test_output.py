"""OutputSpec: how a typed output is asked of the model (tools, native schema, prompt) and checked."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import re
import sys
import threading
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import pydantic
import pytest
from typing_extensions import TypedDict

from agents import FINAL_RESULT_TOOL, Agent, AgentDefinitionError, ScriptedModel, tool
from agents._output import OutputSpec, OutputValidationError

if TYPE_CHECKING:
    from agents import ModelRequest, OutputMode


T = TypeVar("T")


class Cat(pydantic.BaseModel):
    """A cat, as the model describes it."""

    name: str
    lives: int = 9


@dataclasses.dataclass
class Dog:
    name: str
    good: bool


class Point(TypedDict):
    x: int
    y: int


def only_spec(spec: OutputSpec) -> tuple[str, dict[str, Any]]:
    """The name and parameters schema of the one output tool of ``spec``."""
    (tool_spec,) = spec.tool_specs()
    return tool_spec.name, dict(tool_spec.parameters)


# -- schemas ------------------------------------------------------------------


def test_output_base_model_schema_is_the_models_and_its_docstring_describes_the_tool() -> None:
    """A BaseModel is asked for as final_result with the model's own object schema and description."""
    spec = OutputSpec(Cat, "tool")
    (tool_spec,) = spec.tool_specs()
    assert tool_spec.name == FINAL_RESULT_TOOL == "final_result"
    assert tool_spec.description == "A cat, as the model describes it."
    assert tool_spec.parameters["type"] == "object"
    assert set(tool_spec.parameters["properties"]) == {"name", "lives"}
    assert tool_spec.parameters["required"] == ["name"]
    assert "description" not in tool_spec.parameters  # moved to the tool's description


def test_output_dataclass_schema_is_an_object_of_its_fields() -> None:
    """A dataclass is asked for with an object schema of its fields, all required."""
    name, schema = only_spec(OutputSpec(Dog, "tool"))
    assert name == "final_result"
    assert schema["type"] == "object"
    assert schema["properties"]["good"]["type"] == "boolean"
    assert sorted(schema["required"]) == ["good", "name"]


def test_output_typed_dict_schema_is_an_object_of_its_keys() -> None:
    """A TypedDict is asked for with an object schema of its keys."""
    name, schema = only_spec(OutputSpec(Point, "tool"))
    assert name == "final_result"
    assert schema["type"] == "object"
    assert schema["properties"] == {"x": {"title": "X", "type": "integer"}, "y": {"title": "Y", "type": "integer"}}


@pytest.mark.parametrize(
    ("output_type", "inner"),
    [
        (int, {"type": "integer"}),
        (list[int], {"type": "array", "items": {"type": "integer"}}),
    ],
)
def test_output_non_object_type_is_wrapped_in_a_response_property(output_type: Any, inner: dict[str, Any]) -> None:
    """Tool arguments are objects: a non-object type is asked for as {"response": <its schema>}."""
    _, schema = only_spec(OutputSpec(output_type, "tool"))
    assert schema == {"type": "object", "properties": {"response": inner}, "required": ["response"]}


def test_output_wrapped_list_of_models_keeps_its_definitions_resolvable() -> None:
    """list[Cat] is wrapped, and the $defs its items refer to move to the new root where the refs point."""
    _, schema = only_spec(OutputSpec(list[Cat], "tool"))
    items = schema["properties"]["response"]["items"]
    assert items == {"$ref": "#/$defs/Cat"}
    assert set(schema["$defs"]["Cat"]["properties"]) == {"name", "lives"}


def test_output_union_gets_one_final_result_tool_per_member() -> None:
    """A union in tool mode offers final_result_<Name> for each member, each with that member's schema."""
    spec = OutputSpec(Cat | Dog, "tool")
    tools = {tool_spec.name: tool_spec for tool_spec in spec.tool_specs()}
    assert set(tools) == {"final_result_Cat", "final_result_Dog"}
    assert set(tools["final_result_Cat"].parameters["properties"]) == {"name", "lives"}
    assert set(tools["final_result_Dog"].parameters["properties"]) == {"name", "good"}
    assert spec.is_output_tool("final_result_Dog")
    assert not spec.is_output_tool("final_result")


def test_output_union_member_is_validated_by_its_own_tool() -> None:
    """A call of final_result_Dog gives a Dog, even where a Cat would also fit the arguments."""
    spec = OutputSpec(Cat | Dog, "tool")
    assert spec.validate_call("final_result_Dog", '{"name": "Rex", "good": true}') == Dog("Rex", True)
    assert spec.validate_call("final_result_Cat", {"name": "Rex"}) == Cat(name="Rex")
    with pytest.raises(OutputValidationError, match="good"):
        spec.validate_call("final_result_Dog", {"name": "Rex"})


def test_output_union_with_str_in_tool_mode_accepts_a_text_answer() -> None:
    """Cat | str: one final_result tool for Cat, and a plain-text answer is the str member."""
    spec = OutputSpec(Cat | str, "tool")
    assert [tool_spec.name for tool_spec in spec.tool_specs()] == ["final_result"]
    assert spec.accepts_text
    assert not OutputSpec(Cat, "tool").accepts_text


def test_output_union_with_scalars_is_one_final_result_tool() -> None:
    """``int | None`` (or a model beside a scalar) is one tool for the whole union, not one per member."""
    for output_type in (int | None, Cat | int):
        spec = OutputSpec(output_type, "tool")
        assert [tool.name for tool in spec.tool_specs()] == ["final_result"]
    spec = OutputSpec(int | None, "tool")
    assert spec.validate_call("final_result", {"response": None}) is None
    assert spec.validate_call("final_result", {"response": 3}) == 3


class Page(pydantic.BaseModel, Generic[T]):
    items: list[T]


class AVeryLongModelNameForTheQuarterlyFinancialReportSummaryOutputOne(pydantic.BaseModel):
    one: int


class AVeryLongModelNameForTheQuarterlyFinancialReportSummaryOutputTwo(pydantic.BaseModel):
    two: int


def test_output_union_tool_names_are_names_providers_take() -> None:
    """Members whose names have brackets (generic models) or are long still give tools named
    [A-Za-z0-9_-]{1,64}, the rule every provider (and our own tools) follows, and each such call is answered."""
    spec = OutputSpec(Page[Cat] | Page[Dog] | AVeryLongModelNameForTheQuarterlyFinancialReportSummaryOutputOne, "tool")
    names = [tool_spec.name for tool_spec in spec.tool_specs()]
    assert names == [
        "final_result_Page_Cat_",
        "final_result_Page_Dog_",
        "final_result_AVeryLongModelNameForTheQuarterlyFinancialReportSum",
    ]
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name) for name in names)
    assert spec.validate_call("final_result_Page_Dog_", {"items": [{"name": "Rex", "good": True}]}) == Page[Dog](
        items=[Dog("Rex", True)]
    )
    assert spec.validate_call(names[2], {"one": 1}) == AVeryLongModelNameForTheQuarterlyFinancialReportSummaryOutputOne(
        one=1
    )


def test_output_union_members_alike_in_their_first_64_characters_are_a_definition_error() -> None:
    """Two names that are one once cut to 64 characters would make two tools of one name: refused."""
    with pytest.raises(AgentDefinitionError, match="distinct names"):
        OutputSpec(
            AVeryLongModelNameForTheQuarterlyFinancialReportSummaryOutputOne
            | AVeryLongModelNameForTheQuarterlyFinancialReportSummaryOutputTwo,
            "tool",
        )


def test_output_union_members_with_the_same_name_are_a_definition_error() -> None:
    """Two members named alike would make two tools of one name: refused when the agent is defined."""

    def make() -> type[pydantic.BaseModel]:
        class Pet(pydantic.BaseModel):
            a: int

        return Pet

    first, second = make(), make()
    with pytest.raises(AgentDefinitionError, match="distinct names"):
        Agent(name="a", model=ScriptedModel([]), output_type=first | second)


def test_output_text_default_offers_no_tools_and_leaves_instructions_alone() -> None:
    """The default str output adds nothing to the request."""
    agent = Agent(name="a", model=ScriptedModel([]), instructions="Be brief.")
    assert agent.output.is_text
    assert agent.output.tool_specs() == ()
    assert agent.output.request_output() is None
    assert agent.output.instructions("Be brief.") == "Be brief."


# -- native and prompted --------------------------------------------------------


def test_output_native_mode_requests_the_schema_and_offers_no_tool() -> None:
    """Native mode puts the (object) schema on the request, named for the type, and offers no output tool."""
    spec = OutputSpec(list[int], "native")
    assert spec.tool_specs() == ()
    requested = spec.request_output()
    assert requested is not None
    assert requested.name == "list_int"
    assert requested.schema == {
        "type": "object",
        "properties": {"response": {"type": "array", "items": {"type": "integer"}}},
        "required": ["response"],
    }
    assert OutputSpec(Cat, "tool").request_output() is None
    assert OutputSpec(Cat, "prompted").request_output() is None


def test_output_prompted_mode_appends_the_schema_to_the_instructions() -> None:
    """Prompted mode keeps the instructions and appends the JSON schema to answer with."""
    spec = OutputSpec(Cat, "prompted")
    instructions = spec.instructions("Be brief.")
    assert instructions.startswith("Be brief.\n\n")
    schema_line = instructions.splitlines()[-1]
    assert json.loads(schema_line) == dict(spec._targets[0].schema)
    assert spec.instructions("").startswith("Answer with a single JSON value")
    assert spec.tool_specs() == ()
    assert OutputSpec(Cat, "tool").instructions("Be brief.") == "Be brief."


# -- validation -----------------------------------------------------------------


def test_output_validate_call_takes_a_mapping_or_json_text() -> None:
    """The arguments of a final_result call validate whether the provider sent a mapping or raw JSON."""
    spec = OutputSpec(Cat, "tool")
    assert spec.validate_call("final_result", {"name": "Tom"}) == Cat(name="Tom", lives=9)
    assert spec.validate_call("final_result", '{"name": "Tom", "lives": 3}') == Cat(name="Tom", lives=3)


def test_output_validate_call_failure_carries_pydantics_errors() -> None:
    """Arguments that do not validate raise OutputValidationError whose message lists pydantic's errors."""
    spec = OutputSpec(Cat, "tool")
    with pytest.raises(OutputValidationError) as info:
        spec.validate_call("final_result", {"name": 3, "lives": "many"})
    errors = json.loads(str(info.value).removeprefix("the answer did not validate: "))
    assert {(tuple(error["loc"]), error["type"]) for error in errors} == {
        (("name",), "string_type"),
        (("lives",), "int_parsing"),
    }


class Color(enum.Enum):
    RED = "red"


class Paint(pydantic.BaseModel):
    """A strict model: pydantic takes only exact types, but from JSON their JSON forms too."""

    model_config = pydantic.ConfigDict(strict=True)
    color: Color
    when: datetime.date
    size: tuple[int, int]
    coats: int


def test_output_strict_model_takes_the_json_forms_of_enums_dates_and_tuples() -> None:
    """A strict model validates an answer as JSON (as model_validate_json would), in every mode, and stays strict."""
    answer = {"color": "red", "when": "2024-05-01", "size": [2, 3], "coats": 2}
    expected = Paint(color=Color.RED, when=datetime.date(2024, 5, 1), size=(2, 3), coats=2)
    tool_spec = OutputSpec(Paint, "tool")
    assert tool_spec.validate_call(FINAL_RESULT_TOOL, answer) == expected
    assert tool_spec.validate_call(FINAL_RESULT_TOOL, json.dumps(answer)) == expected
    assert OutputSpec(Paint, "native").validate_text(json.dumps(answer)) == expected
    assert OutputSpec(list[Paint], "prompted").validate_text(json.dumps({"response": [answer]})) == [expected]
    with pytest.raises(OutputValidationError, match="int_type"):  # strict: "2" is not an int
        tool_spec.validate_call(FINAL_RESULT_TOOL, {**answer, "coats": "2"})


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ('{"name": "To', "not valid JSON"),
        ("[" * 10_000 + "]" * 10_000, "not valid JSON"),
    ],
)
def test_output_validate_call_bad_json_is_a_validation_error(arguments: str, message: str) -> None:
    """Broken or absurdly deep JSON arguments are an OutputValidationError, never another exception."""
    with pytest.raises(OutputValidationError, match=message):
        OutputSpec(Cat, "tool").validate_call("final_result", arguments)


def test_output_wrapped_type_must_be_answered_wrapped() -> None:
    """A wrapped type's answer is {"response": value}; the bare value is a validation error naming the wrapper."""
    spec = OutputSpec(list[int], "tool")
    assert spec.validate_call("final_result", {"response": [1, "2"]}) == [1, 2]
    with pytest.raises(OutputValidationError, match='"response"'):
        spec.validate_call("final_result", {"items": [1, 2]})
    prompted = OutputSpec(list[int], "prompted")
    assert prompted.validate_text('{"response": [3]}') == [3]
    with pytest.raises(OutputValidationError, match='"response"'):
        prompted.validate_text("[3]")


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "Tom"}',
        '  {"name": "Tom"}\n',
        '```json\n{"name": "Tom"}\n```',
        '```\n{"name": "Tom"}\n```',
        'Here is the JSON:\n```json\n{"name": "Tom"}\n```',
        '```json\n{"name": "Tom"}\n```\nLet me know if you need more.',
        'Here it is [as asked]:\n```JSON\n{"name": "Tom"}\n```\nDone.',
        'Sure: {"name": "Tom"} (a cat).',
        '{"name": "Tom"}\n\nHope this helps!',
        'Here it is [as asked]: {"name": "Tom"}',
        'Result (see [1]):\n{"name": "Tom"}',
        'Answer for {city}:\n{"name": "Tom"}',
        'Example {} then {"name": "Tom"}',
        'The answer is {"name": "Tom"}. Wrap code in ``` fences.',
    ],
)
def test_output_validate_text_parses_json_with_or_without_a_code_fence(text: str) -> None:
    """A text answer is JSON, possibly in a code fence and with prose around it (models add both despite
    being asked not to): the value the partial parser showed is the one validated."""
    spec = OutputSpec(Cat, "prompted")
    assert spec.validate_text(text) == Cat(name="Tom")
    assert spec.partial(text) == {"name": "Tom"}


@pytest.mark.parametrize(
    ("text", "code"),
    [
        (json.dumps({"name": "```py\nx = 1\n```"}), "```py\nx = 1\n```"),
        ('```json\n{"name": "```"}\n```', "```"),
        ('Here:\n```json\n{"name": "a ``` b"}\n```\nBye.', "a ``` b"),
    ],
)
def test_output_validate_text_keeps_code_fences_inside_the_jsons_strings(text: str, code: str) -> None:
    """A fence inside a string of the answer is part of the value, not where the value ends."""
    assert OutputSpec(Cat, "native").validate_text(text) == Cat(name=code)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Tom the cat", "not valid JSON"),
        ('{"name": "To', "not valid JSON"),
        ('{"lives": 3}', "did not validate"),
    ],
)
def test_output_validate_text_failure_is_an_output_validation_error(text: str, message: str) -> None:
    """Text that is not JSON, is cut off, or does not validate raises OutputValidationError."""
    with pytest.raises(OutputValidationError, match=message):
        OutputSpec(Cat, "native").validate_text(text)


def test_output_validate_text_tries_brackets_in_prose_but_not_inside_a_value_or_without_end() -> None:
    """A bracket in the prose before the answer is passed over for the next one, but an object inside a
    value that decoded is not the answer, and only the first few dozen brackets are tried (a hostile
    answer full of them stays cheap)."""
    spec = OutputSpec(Cat, "prompted")
    with pytest.raises(OutputValidationError, match="did not validate"):
        spec.validate_text('Answer: {"lives": 3, "cat": {"name": "Tom"}}')
    assert spec.partial('Answer: [{"lives": 3}, {"name": "Tom"}] and') is None
    with pytest.raises(OutputValidationError, match="not valid JSON"):
        spec.validate_text("[x " * 10_000 + '{"name": "Tom"}')
    assert spec.partial("[x " * 10_000 + '{"name": "Tom"}') is None


class Litter(pydantic.BaseModel):
    mother: str
    kittens: list[Cat]


@pytest.mark.parametrize(
    "text",
    [
        '```json\n{"mother": "Tom", "kittens": [{"name": "Felix"}, {"name": "Fig',  # cut off at max_tokens
        '{"mother": "Tom", "kittens": [{"name": "Felix"},]}',  # a trailing comma
    ],
    ids=["cut-off", "trailing-comma"],
)
def test_output_an_object_inside_a_broken_answer_is_not_the_answer(text: str) -> None:
    """An answer cut off, or with a syntax error, is not valid JSON (the model is asked again), even when an
    object inside it validates as the output type (a kitten, a Cat): that inner object was taken as the whole
    answer, and the run completed with it."""
    spec = OutputSpec(Cat, "prompted")
    with pytest.raises(OutputValidationError, match="not valid JSON"):
        spec.validate_text(text)
    if "," in text[-3:]:  # the broken one (a cut-off one parses so far as its outer object, no Cat)
        assert spec.partial(text) is None


def test_output_a_bracket_in_the_prose_that_never_closes_is_passed_over() -> None:
    """Prose with a bracket that is no JSON and never closes ("[draft") is passed over at its error, not to
    its end: the answer after it is found."""
    spec = OutputSpec(Cat, "prompted")
    assert spec.validate_text('See [draft: {"name": "Tom"}') == Cat(name="Tom")
    assert spec.partial('See [draft: {"name": "To') == {"name": "To"}
    # A quote in it makes the answer part of a string the broken value reads: the answer is still tried.
    assert spec.validate_text('Sure ["quoted] here it is: {"name": "x"}') == Cat(name="x")


def test_output_partial_keeps_the_digits_that_end_a_string_being_written() -> None:
    """Only a number is held back until it is whole: digits at the end of a string being written are text."""
    spec = OutputSpec(Cat, "prompted")
    assert spec.partial('{"name": "Room 10') == {"name": "Room 10"}
    assert spec.partial('{"name": "call \\"555\\" 0199') == {"name": 'call "555" 0199'}
    assert spec.partial('{"name": "Room 10", "lives": 4') == {"name": "Room 10"}


def test_output_an_answer_with_a_lone_surrogate_escape_is_an_invalid_answer() -> None:
    """A string holding a lone surrogate escape (valid JSON: "\\ud83d") cannot be a str: an invalid answer the
    model is told about, not a crash of the run ("failed inside trio-agents")."""
    answer = '{"name": "smile \\ud83d"}'
    with pytest.raises(OutputValidationError, match="not valid Unicode text"):
        OutputSpec(Cat, "native").validate_text(answer)
    with pytest.raises(OutputValidationError, match="not valid Unicode text"):
        OutputSpec(Cat, "tool").validate_call("final_result", answer)


@pytest.mark.parametrize(
    "prose", ["Per the format {} here it is: ", "As noted [1]: ", "Example {}, see [2]: ", "See [1]:\n```json\n"]
)
def test_output_validate_text_failure_tells_the_answers_error_not_the_proses(prose: str) -> None:
    """An answer that does not validate after a bracket in the prose that decodes (``{}``, ``[1]``): the
    error (which the retry message quotes) is the answer's, the last value, not the prose's."""
    with pytest.raises(OutputValidationError, match="did not validate") as caught:
        OutputSpec(Cat, "prompted").validate_text(prose + '{"name": ["Tom"]}')
    assert '"input": ["Tom"]' in str(caught.value)
    assert "missing" not in str(caught.value)


# -- partial values -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "partial"),
    [
        ("", None),
        ("Sure, here it is", None),
        ('{"na', {}),
        ('{"name": "To', {"name": "To"}),
        ('{"name": "Tom", "lives": 3', {"name": "Tom"}),  # 3 may be the start of 30: left out until followed
        ('{"name": "Tom", "lives": 3}', {"name": "Tom", "lives": 3}),
        ('{"lives": -1.5e', {}),
        ('```json\n{"name": "Tom"', {"name": "Tom"}),
        ('Example {} then {"name": "To', {"name": "To"}),  # a complete object that does not validate is prose
        ('{"lives": 3}', {"lives": 3}),  # unless it is the only one
        ("[" * 100_000, None),  # deeper than the parser goes: nothing yet, not an error
    ],
)
def test_output_partial_is_the_json_parsed_so_far(text: str, partial: Any) -> None:
    """An answer still being written parses to what it holds so far (None before the JSON begins)."""
    assert OutputSpec(Cat, "prompted").partial(text) == partial


def test_output_partial_unwraps_a_wrapped_type() -> None:
    """For a wrapped type the partial value is what is inside "response", as the consumer will get it."""
    spec = OutputSpec(list[int], "tool")
    assert spec.partial('{"response": [1, 2', "final_result") == [1]  # 2 may be cut short
    assert spec.partial('{"response": [1, 2,', "final_result") == [1, 2]
    assert spec.partial('{"respo', "final_result") is None


def test_output_partial_of_a_union_member_uses_that_members_tool() -> None:
    """Partial arguments of final_result_Cat parse as they are (no wrapper to take off); a union with a
    non-object member is one wrapped tool."""
    spec = OutputSpec(Cat | Dog, "tool")
    assert spec.partial('{"name": "Re', "final_result_Cat") == {"name": "Re"}
    spec = OutputSpec(Cat | list[int], "tool")
    assert spec.partial('{"response": [4 ', "final_result") == [4]


def test_output_to_json_is_the_validated_values_json() -> None:
    """A typed value becomes its JSON (a sub-agent's answer to its parent); text stays as it is."""
    assert json.loads(OutputSpec(Cat, "tool").to_json(Cat(name="Tom"))) == {"name": "Tom", "lives": 9}
    assert json.loads(OutputSpec(Dog, "tool").to_json(Dog("Rex", True))) == {"name": "Rex", "good": True}
    agent = Agent(name="a", model=ScriptedModel([]))
    assert agent.output.to_json("plain words") == "plain words"


# -- definition errors ----------------------------------------------------------


@pytest.mark.parametrize(
    "output_type",
    [
        threading.Lock,  # an arbitrary class pydantic cannot validate
        42,  # not a type at all
        Callable[[int], int],  # validates, but has no JSON schema
        "Cat",  # a forward reference that is never resolved
    ],
)
def test_output_type_pydantic_cannot_handle_is_a_definition_error(output_type: Any) -> None:
    """An output_type pydantic cannot validate (or describe as JSON schema) fails when the agent is defined."""
    with pytest.raises(AgentDefinitionError, match="is not something pydantic can validate"):
        Agent(name="a", model=ScriptedModel([]), output_type=output_type)


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="pydantic takes typing.TypedDict from Python 3.12")
def test_output_typing_typed_dict_before_312_is_a_definition_error_naming_typing_extensions() -> None:
    """As the README says: before Python 3.12 a TypedDict output must come from typing_extensions."""

    class Plain(typing.TypedDict):
        x: int

    with pytest.raises(AgentDefinitionError, match=r"typing_extensions\.TypedDict"):
        Agent(name="a", model=ScriptedModel([]), output_type=Plain)
    assert Agent(name="a", model=ScriptedModel([]), output_type=Point).output.validate_call(
        FINAL_RESULT_TOOL, {"x": 1, "y": 2}
    ) == {"x": 1, "y": 2}


@pytest.mark.parametrize("mode", ["json", "TOOL", ""])
def test_output_unknown_mode_is_a_definition_error(mode: str) -> None:
    """output_mode must be tool, native or prompted, for typed and text outputs alike."""
    with pytest.raises(AgentDefinitionError, match="output_mode must be one of"):
        Agent(name="a", model=ScriptedModel([]), output_type=Cat, output_mode=mode)  # type: ignore[arg-type]
    with pytest.raises(AgentDefinitionError, match="output_mode must be one of"):
        Agent(name="a", model=ScriptedModel([]), output_mode=mode)  # type: ignore[arg-type]


def test_output_negative_retries_is_a_definition_error() -> None:
    """output_retries counts retries after the first attempt: it cannot be negative."""
    with pytest.raises(AgentDefinitionError, match="output_retries"):
        Agent(name="a", model=ScriptedModel([]), output_type=Cat, output_retries=-1)
    assert Agent(name="a", model=ScriptedModel([]), output_type=Cat, output_retries=0).output_retries == 0


class TextOnlyModel:
    """A model with no native structured output (it lacks the ``native_output`` flag)."""

    def stream(self, request: ModelRequest) -> Any:  # never called
        raise AssertionError("not called")


class DeclinedNativeModel(TextOnlyModel):
    """A model that says outright it has no native structured output."""

    native_output = False


@pytest.mark.parametrize("model", [TextOnlyModel(), DeclinedNativeModel()])
def test_output_native_mode_needs_a_model_with_native_output(model: Any) -> None:
    """Native mode with a model that cannot do it is refused when the agent is defined, naming the way out."""
    with pytest.raises(AgentDefinitionError, match="no native structured output; use output_mode='tool'"):
        Agent(name="a", model=model, output_type=Cat, output_mode="native")
    # The other modes work with every model, and plain text asks nothing of it.
    modes: tuple[OutputMode, ...] = ("tool", "prompted")
    for mode in modes:
        assert Agent(name="a", model=model, output_type=Cat, output_mode=mode).output.mode == mode
    assert Agent(name="a", model=model, output_mode="native").output.is_text


def test_a_tool_named_like_the_output_tool_is_refused() -> None:
    """The model would be offered two tools of one name, and a call meant for the tool taken as the answer."""

    class Answer(pydantic.BaseModel):
        total: int

    @tool
    def final_result(total: int) -> int:
        """Mine."""
        return total

    with pytest.raises(AgentDefinitionError, match="final_result"):
        Agent(name="a", model=ScriptedModel(["x"]), output_type=Answer, tools=[final_result])
    Agent(name="a", model=ScriptedModel(["x"]), output_type=Answer, output_mode="prompted", tools=[final_result])


def test_output_arguments_given_as_a_mapping_are_held_to_the_depth_limit() -> None:
    """As arguments given as JSON text are (loads_untrusted): a model's adapter may hand them over parsed."""
    spec = OutputSpec(dict[str, Any], "tool")
    deep: dict[str, Any] = {"leaf": 1}
    for _ in range(100):
        deep = {"next": deep}
    with pytest.raises(OutputValidationError, match="nested deeper than 64"):
        spec.validate_call(FINAL_RESULT_TOOL, deep)
    with pytest.raises(OutputValidationError, match="nested deeper than 64"):
        spec.validate_call(FINAL_RESULT_TOOL, json.dumps(deep))
