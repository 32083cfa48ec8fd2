"""The intrinsic resolver: agreeing with a direct model on random expressions, and each refusal."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coalmine.integrations.sam import Pseudo, Resolver, Unresolved, parse_template
from coalmine.integrations.sam.intrinsics import NO_VALUE

PARAMS = {"Stage": "prod", "Team": "pay", "Blank": ""}
HEAD = """\
Transform: AWS::Serverless-2016-10-31
Parameters:
  Stage: {Type: String, Default: prod}
  Team: {Type: String, Default: pay}
  Blank: {Type: String, Default: ""}
  Zones: {Type: CommaDelimitedList, Default: "a,b,c"}
  Memory: {Type: Number, Default: 256}
  Flag: {Type: String, Default: true}
  Required: {Type: String}
Mappings:
  Sizes:
    prod: {Memory: 1024, Names: [x, y]}
Conditions:
  IsProd: !Equals [!Ref Stage, prod]
  IsDev: !Equals [!Ref Stage, dev]
  Loop: !Not [!Condition Loop]
  Imported: !Equals [!ImportValue shared-stage, prod]
"""


def resolver_for(yaml_value: str, **pseudo: Any) -> tuple[Resolver, Any]:
    template = parse_template(
        HEAD + "Resources:\n  Topic: {Type: AWS::SNS::Topic}\n"
        "  Alarm: {Type: AWS::CloudWatch::Alarm, Properties: {AlarmName: !Sub '${Stage}-5xx'}}\n"
        "  Self: {Type: AWS::Lambda::Function, Properties: {FunctionName: !Ref Self}}\n"
        f"  F:\n    Type: AWS::Serverless::Function\n    Properties:\n      V: {yaml_value}\n"
    )
    resolver = Resolver(template, pseudo=Pseudo(**pseudo))
    return resolver, template.doc["Resources"]["F"]["Properties"]["V"]


def resolve(yaml_value: str, **pseudo: Any) -> Any:
    resolver, node = resolver_for(yaml_value, **pseudo)
    return resolver.resolve(node, "Resources.F.Properties.V")


# -- a direct model of the functions, to compare the resolver against ---------------------------


@dataclass(frozen=True)
class Expr:
    short: str
    long: Any
    value: str


_TEXT = st.text(alphabet="abcxyz019-_ .", max_size=8)


def _lit(text: str) -> Expr:
    return Expr(json.dumps(text), text, text)


def _ref(name: str) -> Expr:
    return Expr(f"!Ref {name}", {"Ref": name}, PARAMS[name])


def _join(delimiter: str, items: list[Expr]) -> Expr:
    shorts = ", ".join(i.short for i in items)
    return Expr(
        f"!Join [{json.dumps(delimiter)}, [{shorts}]]",
        {"Fn::Join": [delimiter, [i.long for i in items]]},
        delimiter.join(i.value for i in items),
    )


def _select(index: int, items: list[Expr]) -> Expr:
    index %= len(items)
    shorts = ", ".join(i.short for i in items)
    return Expr(
        f"!Select [{index}, [{shorts}]]",
        {"Fn::Select": [str(index), [i.long for i in items]]},
        items[index].value,
    )


def _sub(prefix: str, inner: Expr) -> Expr:
    text = prefix + "${V}-${Team}"
    return Expr(
        f"!Sub [{json.dumps(text)}, {{V: {inner.short}}}]",
        {"Fn::Sub": [text, {"V": inner.long}]},
        f"{prefix}{inner.value}-pay",
    )


def _if(prod: bool, a: Expr, b: Expr) -> Expr:
    name = "IsProd" if prod else "IsDev"
    return Expr(
        f"!If [{name}, {a.short}, {b.short}]",
        {"Fn::If": [name, a.long, b.long]},
        a.value if prod else b.value,
    )


def _base64(inner: Expr) -> Expr:
    return Expr(
        f'{{"Fn::Base64": {inner.short}}}',
        {"Fn::Base64": inner.long},
        base64.b64encode(inner.value.encode()).decode(),
    )


def _first_of_split(delimiter: str, inner: Expr) -> Expr:
    return Expr(
        f"!Select [0, !Split [{json.dumps(delimiter)}, {inner.short}]]",
        {"Fn::Select": [0, {"Fn::Split": [delimiter, inner.long]}]},
        inner.value.split(delimiter)[0],
    )


def _expressions(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    items = st.lists(children, min_size=1, max_size=3)
    return st.one_of(
        st.builds(_join, st.sampled_from(["", "-", ", "]), items),
        st.builds(_select, st.integers(0, 5), items),
        st.builds(_sub, _TEXT, children),
        st.builds(_if, st.booleans(), children, children),
        st.builds(_base64, children),
        st.builds(_first_of_split, st.sampled_from(["-", "x"]), children),
    )


EXPRESSIONS = st.recursive(
    st.one_of(st.builds(_lit, _TEXT), st.sampled_from(list(PARAMS)).map(_ref)),
    _expressions,
    max_leaves=8,
)


@given(EXPRESSIONS)
def test_short_and_long_forms_resolve_to_what_the_functions_mean(expr: Expr) -> None:
    assert resolve(expr.short) == expr.value
    doc = parse_template(HEAD).doc
    long_doc = {**doc, "Resources": {"F": {"Properties": {"V": expr.long}}}}
    template = parse_template(json.dumps(long_doc))
    node = template.doc["Resources"]["F"]["Properties"]["V"]
    assert Resolver(template).resolve(node, "V") == expr.value


@dataclass(frozen=True)
class Cond:
    node: Any
    value: bool


def _equals(stage: str) -> Cond:
    return Cond({"Fn::Equals": [{"Ref": "Stage"}, stage]}, stage == "prod")


def _combine(kind: str, parts: list[Cond]) -> Cond:
    values = [p.value for p in parts]
    value = all(values) if kind == "Fn::And" else any(values)
    return Cond({kind: [p.node for p in parts]}, value)


CONDITIONS = st.recursive(
    st.one_of(
        st.sampled_from(["prod", "dev"]).map(_equals),
        st.sampled_from([Cond({"Condition": "IsProd"}, True), Cond({"Condition": "IsDev"}, False)]),
    ),
    lambda children: st.one_of(
        children.map(lambda c: Cond({"Fn::Not": [c.node]}, not c.value)),
        st.builds(
            _combine,
            st.sampled_from(["Fn::And", "Fn::Or"]),
            st.lists(children, min_size=2, max_size=4),
        ),
    ),
    max_leaves=10,
)


@given(CONDITIONS)
def test_conditions_evaluate_as_boolean_logic(condition: Cond) -> None:
    doc = parse_template(HEAD).doc
    conditions = {"IsProd": doc["Conditions"]["IsProd"], "IsDev": doc["Conditions"]["IsDev"]}
    template = parse_template(
        json.dumps({**doc, "Conditions": {**conditions, "Test": condition.node}})
    )
    assert Resolver(template).condition("Test", "here") is condition.value


@given(st.text().filter(lambda t: "${" not in t))
def test_sub_of_text_without_variables_is_the_text(text: str) -> None:
    template = parse_template(json.dumps({**parse_template(HEAD).doc, "X": {"Fn::Sub": text}}))
    assert Resolver(template).resolve(template.doc["X"], "X") == text


@given(
    st.sampled_from([",", "-", "::", "|"]).flatmap(
        lambda d: st.tuples(
            st.just(d),
            # no character of the delimiter at all: with "::", items ":" and "" join to
            # ":::", which splits back as "" and ":" (Join is not invertible then)
            st.lists(st.text().filter(lambda t: not set(d) & set(t)), min_size=1, max_size=6),
        )
    )
)
def test_split_undoes_join(case: tuple[str, list[str]]) -> None:
    delimiter, items = case
    node = {"Fn::Split": [delimiter, {"Fn::Join": [delimiter, items]}]}
    template = parse_template(json.dumps({**parse_template(HEAD).doc, "X": node}))
    assert Resolver(template).resolve(template.doc["X"], "X") == items


# -- each value and each refusal ----------------------------------------------------------------


def test_parameters_pseudo_parameters_and_mappings() -> None:
    assert resolve("!Ref Zones") == ["a", "b", "c"]
    assert resolve("!Ref Memory") == "256", (
        "a Number parameter is a string to Ref, as in CloudFormation"
    )
    assert resolve("!Ref Flag") == "true"
    assert resolve("!FindInMap [Sizes, !Ref Stage, Memory]") == 1024
    assert resolve("!FindInMap [Sizes, prod, Names]") == ["x", "y"]
    assert resolve(
        "!Sub '${AWS::Partition}:${AWS::Region}:${AWS::AccountId}:${AWS::URLSuffix}'"
    ) == ("aws:us-east-1:123456789012:amazonaws.com")
    assert resolve("!Sub '${AWS::Partition}/${AWS::URLSuffix}'", region="cn-north-1") == (
        "aws-cn/amazonaws.com.cn"
    )
    assert resolve("!Sub '${AWS::Partition}'", region="us-gov-west-1") == "aws-us-gov"
    assert resolve("!Sub 'a-${!Literal}-b'") == "a-${Literal}-b"
    assert resolve("!Ref Alarm") == "prod-5xx", "a Ref to an alarm is its AlarmName"
    assert resolve("[a, !Ref AWS::NoValue, b]") == ["a", "b"]
    assert resolve("{A: !Ref AWS::NoValue, B: 1}") == {"B": 1}
    assert resolve("!Ref AWS::NoValue") is NO_VALUE
    assert resolve("!If [IsProd, !Ref AWS::NoValue, x]") is NO_VALUE
    assert resolve("!Ref AWS::NotificationARNs") == []


def test_assumed_pseudo_parameters_are_recorded_when_used() -> None:
    resolver, node = resolver_for(
        "!Sub '${AWS::Partition}-${AWS::StackName}'",
        assumed=frozenset({"AWS::Region", "AWS::AccountId", "AWS::StackName"}),
    )
    resolver.resolve(node, "V")
    assert resolver.assumed_used == {"AWS::Region", "AWS::StackName"}


@pytest.mark.parametrize(
    ("value", "expression", "why"),
    [
        (
            "!GetAtt Topic.TopicName",
            "!GetAtt Topic.TopicName",
            "a resource attribute is known only",
        ),
        ("!GetAtt Nope.Arn", "!GetAtt Nope.Arn", "no resource named Nope"),
        ("!Sub '${Topic.TopicName}-x'", "!GetAtt Topic.TopicName", "a resource attribute"),
        ("!ImportValue shared-x", "!ImportValue shared-x", "another stack's export"),
        ("!ImportValue {'Fn::Sub': '${Stage}-x'}", "!ImportValue prod-x", "another stack's export"),
        ("!Select [0, !GetAZs '']", "!GetAZs", "the Availability Zones of a region"),
        ("!Ref Required", "!Ref Required", "has no Default: pass --parameter Required=VALUE"),
        ("!Ref Nope", "!Ref Nope", "no parameter or resource named Nope"),
        ("!Ref F.Alias", "!Ref F.Alias", "the alias or version SAM creates"),
        ("!Ref AWS::StackId", "!Ref AWS::StackId", "the stack's id is known only after"),
        ("!Ref AWS::Nope", "!Ref AWS::Nope", "no such pseudo parameter"),
        ("!Select [5, [a, b]]", "!Select [5, ...]", "index 5 is out of range for a list of 2"),
        (
            "!FindInMap [Sizes, dev, Memory]",
            "!FindInMap [Sizes, dev, Memory]",
            "Mappings.Sizes has no key dev",
        ),
        (
            "!Cidr [10.0.0.0/16, 6, 5]",
            "!Cidr",
            "Fn::Cidr is not an intrinsic function coalmine import evaluates",
        ),
        ("!If [Loop, a, b]", "Condition Loop", "the condition depends on itself"),
        ("!If [Nope, a, b]", "Condition Nope", "no condition named Nope in Conditions"),
        ("!If [Imported, a, b]", "!ImportValue shared-stage", "another stack's export"),
        ("!Join ['-', [a, !Ref Zones]]", "!Join", "Fn::Join joins strings"),
        ("!Sub '${Zones}'", "${Zones}", "needs a string, got a list"),
        ("!Ref Self", "!Ref Self", "its FunctionName refers to itself"),
        ("!Join [a]", "!Join", "Fn::Join takes a list of 2 values"),
    ],
)
def test_what_only_aws_knows_is_unresolved_with_its_name_and_reason(
    value: str, expression: str, why: str
) -> None:
    result = resolve(value)
    assert isinstance(result, Unresolved), result
    assert result.expression == expression
    assert why in result.why


def test_unresolved_parts_stay_in_place_and_the_rest_resolves() -> None:
    result = resolve("[!Ref Stage, !GetAtt Topic.TopicArn, {K: !ImportValue x, L: !Ref Team}]")
    assert result[0] == "prod"
    assert isinstance(result[1], Unresolved)
    assert result[1].place == "Resources.F.Properties.V[1]"
    assert isinstance(result[2]["K"], Unresolved)
    assert result[2]["K"].place == "Resources.F.Properties.V[2].K"
    assert result[2]["L"] == "pay"


def test_a_ref_to_a_resource_without_its_name_says_which_resource() -> None:
    topic = resolve("!Ref Topic")
    assert isinstance(topic, Unresolved)
    assert topic.resource == "Topic"
    assert "the physical id of Topic (AWS::SNS::Topic)" in topic.why
    # combined into a string, it is no longer a plain reference to the resource
    combined = resolve("!Join ['', [!Ref Topic, x]]")
    assert isinstance(combined, Unresolved)
    assert combined.resource is None
    # chosen by a condition, it still is
    chosen = resolve("!If [IsProd, !Ref Topic, x]")
    assert isinstance(chosen, Unresolved)
    assert chosen.resource == "Topic"


def test_parameter_overrides_are_checked_against_the_template() -> None:
    template = parse_template(HEAD)
    assert Resolver(template, {"Stage": "dev"}).condition("IsDev", "x") is True
    with pytest.raises(ValueError, match="the template has no parameter Colour"):
        Resolver(template, {"Colour": "red"})
