"""Reading templates: short tags become long forms, places are kept, bad files are one line."""

from __future__ import annotations

import json

import pytest

from coalmine.integrations.sam import TemplateError, parse_template

HEAD = "Transform: AWS::Serverless-2016-10-31\n"


def test_short_tags_read_as_the_long_forms_json_uses() -> None:
    text = (
        HEAD
        + """\
Resources:
  F:
    Properties:
      A: !Ref Stage
      B: !GetAtt Table.StreamArn
      C: !GetAtt [Table, Arn]
      D: !Sub "${AWS::StackName}-x"
      E: !Sub ["${P}-y", {P: !Ref Stage}]
      G: !If [IsProd, !Join ["-", [a, b]], !Select [0, !Split [",", "x,y"]]]
      H: !FindInMap [M, !Ref AWS::Region, K]
      I: !ImportValue {"Fn::Sub": "${Stage}-export"}
      J: !Base64 text
      K: !GetAZs ""
      L: !Equals [!Ref Stage, prod]
      M: !Not [!Condition IsProd]
      N: !And [!Condition IsProd, !Or [!Condition A, !Condition B]]
      O: !GetAtt Function.Arn.Suffix
"""
    )
    props = parse_template(text).doc["Resources"]["F"]["Properties"]
    assert props == {
        "A": {"Ref": "Stage"},
        "B": {"Fn::GetAtt": ["Table", "StreamArn"]},
        "C": {"Fn::GetAtt": ["Table", "Arn"]},
        "D": {"Fn::Sub": "${AWS::StackName}-x"},
        "E": {"Fn::Sub": ["${P}-y", {"P": {"Ref": "Stage"}}]},
        "G": {
            "Fn::If": [
                "IsProd",
                {"Fn::Join": ["-", ["a", "b"]]},
                {"Fn::Select": [0, {"Fn::Split": [",", "x,y"]}]},
            ]
        },
        "H": {"Fn::FindInMap": ["M", {"Ref": "AWS::Region"}, "K"]},
        "I": {"Fn::ImportValue": {"Fn::Sub": "${Stage}-export"}},
        "J": {"Fn::Base64": "text"},
        "K": {"Fn::GetAZs": ""},
        "L": {"Fn::Equals": [{"Ref": "Stage"}, "prod"]},
        "M": {"Fn::Not": [{"Condition": "IsProd"}]},
        "N": {
            "Fn::And": [
                {"Condition": "IsProd"},
                {"Fn::Or": [{"Condition": "A"}, {"Condition": "B"}]},
            ]
        },
        "O": {"Fn::GetAtt": ["Function", "Arn.Suffix"]},
    }


def test_dates_stay_text_and_places_are_paths() -> None:
    template = parse_template(
        "AWSTemplateFormatVersion: 2010-09-09\n" + HEAD + "Resources:\n  F:\n    Properties:\n"
        "      Alarms: [a, !Ref B]\n"
    )
    assert template.doc["AWSTemplateFormatVersion"] == "2010-09-09"
    alarms = template.doc["Resources"]["F"]["Properties"]["Alarms"]
    assert template.place(alarms, "?") == "Resources.F.Properties.Alarms"
    assert template.place(alarms[1], "?") == "Resources.F.Properties.Alarms[1]"
    assert template.place("a", "fallback") == "fallback"
    assert template.place({"new": 1}, "fallback") == "fallback"


def test_transform_may_be_a_list() -> None:
    doc = {"Transform": ["AWS::LanguageExtensions", "AWS::Serverless-2016-10-31"]}
    assert parse_template(json.dumps(doc)).doc == doc


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            HEAD + "Resources:\n  A: [1, 2\n",
            "t.yaml is not valid YAML: line 4, column 1: expected ',' or ']', but got '<stream end>'",
        ),
        (
            '{"Transform": "AWS::Serverless-2016-10-31", }',
            "t.yaml is not valid JSON: line 1, column 45: Expecting property name enclosed in"
            " double quotes",
        ),
        (
            '{"Transform": "AWS::Serverless-2016-10-31", "Transform": "x"}',
            "t.yaml is not valid JSON: the key 'Transform' is written twice",
        ),
        (
            HEAD + "Resources: {}\nResources: {}\n",
            "t.yaml is not valid YAML: line 3, column 1: the key 'Resources' is written twice",
        ),
        (
            "AWSTemplateFormatVersion: '2010-09-09'\nResources: {}\n",
            "t.yaml is not a SAM template: it has no 'Transform: AWS::Serverless-2016-10-31'",
        ),
        (
            "- a\n- b\n",
            "t.yaml is not a SAM template: it is a list, not a mapping with Transform and Resources",
        ),
        (
            "",
            "t.yaml is not a SAM template: it is empty, not a mapping with Transform and Resources",
        ),
    ],
)
def test_bad_templates_are_one_line_saying_why(text: str, message: str) -> None:
    with pytest.raises(TemplateError) as caught:
        parse_template(text, "t.yaml")
    assert str(caught.value) == message


def test_yaml_merge_keys_are_not_taken_for_duplicates() -> None:
    text = HEAD + "Base: &base {A: 1, B: 2}\nResources:\n  R:\n    <<: *base\n    A: 3\n"
    assert parse_template(text).doc["Resources"]["R"] == {"A": 3, "B": 2}
