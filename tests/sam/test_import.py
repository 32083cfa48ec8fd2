"""`coalmine import sam` on realistic templates: the exact config each one becomes, and its notes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from coalmine.controller.schemas import AppSpec
from coalmine.core.alarms import validate_alarm_name
from coalmine.core.model import NAME_PATTERN
from coalmine.core.strategy import PRESETS, parse_strategy
from coalmine.integrations.sam import (
    ImportOptions,
    SamImport,
    TemplateError,
    import_template,
    parse_template,
    read_template,
)

TEMPLATES = Path(__file__).parent / "templates"


def imported(name: str, **options: Any) -> SamImport:
    result = import_template(read_template(TEMPLATES / name), ImportOptions(**options))
    check_shape(result.config)
    return result


def check_shape(config: Any) -> None:
    """What can be checked today of the shapes the shared design adds (see docs/sam.md)."""
    assert NAME_PATTERN.fullmatch(config["app"])
    for name, function in config["functions"].items():
        assert NAME_PATTERN.fullmatch(name)
        assert function["versions"] == "published"
        assert isinstance(function["lambda_function"], str)
        assert function["lambda_function"]
        assert set(function) == {"versions", "lambda_function"}
    release = config.get("release", {})
    assert set(release) <= {"strategy", "lambda_alias", "hooks", "analysis"}
    if "strategy" in release:
        assert parse_strategy(release["strategy"]).name == release["strategy"]
    for slot, hook in release.get("hooks", {}).items():
        assert slot in ("before_allow_traffic", "after_allow_traffic")
        assert set(hook) == {"lambda"}
        assert hook["lambda"]
    for alarm in release.get("analysis", {}).get("alarms", []):
        assert set(alarm) == {"name", "cloudwatch"}
        validate_alarm_name(alarm["name"])
    # the part of the document the control plane's schema already reads
    AppSpec.model_validate(
        {
            "app": config["app"],
            "functions": {name: {} for name in config["functions"]},
            "release": {k: v for k, v in release.items() if k == "strategy"},
        }
    )


def notes_with(result: SamImport, fragment: str) -> list[str]:
    return [n for n in result.notes if fragment in n]


def test_globals_parameters_and_sub_names() -> None:
    result = imported("globals_parameters.yaml")
    assert result.config == {
        "app": "food-ordering",
        "functions": {
            "place-order-function": {
                "versions": "published",
                "lambda_function": "food-ordering-dev-place-order",
            },
            "notify-user-function": {
                "versions": "published",
                "lambda_function": "food-ordering-notify-user",
            },
        },
        "release": {"strategy": "Canary10Percent5Minutes", "lambda_alias": "live"},
    }
    assert result.notes == (
        "the app is named 'food-ordering' from the template's Description; set --app to choose",
        "AWS::StackName is taken as 'food-ordering' (pass --stack-name to set it)",
    )


def test_parameters_given_override_defaults_and_silence_the_assumptions() -> None:
    result = imported(
        "globals_parameters.yaml",
        app="orders",
        parameters={"Stage": "prod", "AliasName": "stable"},
        stack_name="orders-prod",
        region="eu-west-1",
        account="111122223333",
    )
    assert result.config["app"] == "orders"
    assert result.config["functions"]["place-order-function"]["lambda_function"] == (
        "food-ordering-prod-place-order"
    )
    assert result.config["functions"]["notify-user-function"]["lambda_function"] == (
        "orders-prod-notify-user"
    )
    assert result.config["release"]["lambda_alias"] == "stable"
    assert result.notes == ()


@pytest.mark.parametrize(
    ("parameters", "fragment"),
    [
        ({"Stage": "qa"}, "--parameter Stage=qa: not one of its AllowedValues (dev, prod)"),
        ({"Colour": "red"}, "the template has no parameter Colour"),
    ],
)
def test_bad_parameter_values_are_refused(parameters: dict[str, str], fragment: str) -> None:
    with pytest.raises(ValueError, match="--parameter") as caught:
        imported("globals_parameters.yaml", parameters=parameters)
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    ("environment", "strategy", "alarms", "functions"),
    [
        ("staging", "Linear10PercentEvery1Minute", ["checkout-staging-errors"], 2),
        ("prod", "Canary10Percent30Minutes", ["checkout-prod-errors", "checkout-p99"], 2),
        ("dev", "AllAtOnce", [], 1),
    ],
)
def test_conditions_choose_the_preference_per_environment(
    environment: str, strategy: str, alarms: list[str], functions: int
) -> None:
    result = imported(
        "conditions.yaml", parameters={"Environment": environment}, region="eu-west-1"
    )
    release = result.config["release"]
    assert release["strategy"] == strategy
    assert [a["cloudwatch"] for a in release.get("analysis", {}).get("alarms", [])] == alarms
    assert release["hooks"] == {
        "before_allow_traffic": {
            "lambda": f"arn:aws:lambda:eu-west-1:123456789012:function:checkout-smoke-{environment}"
        }
    }
    assert len(result.config["functions"]) == functions
    assert notes_with(result, "AWS::AccountId is taken as '123456789012' (pass --account")
    assert not notes_with(result, "AWS::Region")


def test_conditions_the_default_environment_and_a_resource_condition() -> None:
    staging = imported("conditions.yaml")
    assert staging.config["functions"] == {
        "checkout-function": {"versions": "published", "lambda_function": "checkout-staging"},
        "receipt-function": {"versions": "published", "lambda_function": "receipts-staging"},
    }
    prod = imported("conditions.yaml", parameters={"Environment": "prod"})
    assert prod.config["functions"]["receipt-function"]["lambda_function"] == "receipts"
    [strategy_note] = notes_with(prod, "disagree on DeploymentPreference.Type")
    assert "Canary10Percent30Minutes wins as the most cautious" in strategy_note
    assert "receipt-function: Linear10PercentEvery3Minutes" in strategy_note
    dev = imported("conditions.yaml", parameters={"Environment": "dev"})
    assert list(dev.config["functions"]) == ["checkout-function"]
    assert "ReceiptFunction is left out: its Condition IsShared is false" in " ".join(dev.notes)
    # AWS::Region was used by the hook's ARN without --region: said so
    assert notes_with(dev, "AWS::Region is taken as 'us-east-1' (pass --region")
    china = imported("conditions.yaml", region="cn-north-1", account="111122223333")
    assert china.config["release"]["hooks"]["before_allow_traffic"]["lambda"] == (
        "arn:aws-cn:lambda:cn-north-1:111122223333:function:checkout-smoke-staging"
    )


def test_hooks_and_alarms_referencing_template_resources() -> None:
    result = imported("hooks_alarms.yaml", stack_name="shop")
    assert result.config == {
        "app": "shop",
        "functions": {
            "place-order-function": {"versions": "published", "lambda_function": "shop-place-order"}
        },
        "release": {
            "strategy": "Canary10Percent10Minutes",
            "lambda_alias": "live",
            "hooks": {
                "before_allow_traffic": {"lambda": "CodeDeployHook_shop_preTraffic"},
                "after_allow_traffic": {"lambda": "PostTrafficHook"},
            },
            "analysis": {
                "alarms": [
                    {"name": "shop-place-order-errors", "cloudwatch": "shop-place-order-errors"},
                    {"name": "shop-payments-down", "cloudwatch": "shop-payments-down"},
                ]
            },
        },
    }
    prefix = "Resources.PlaceOrderFunction.Properties.DeploymentPreference"
    assert result.notes == (
        "the app is named 'shop' after --stack-name; set --app to choose",
        f"{prefix}.Role is not imported: coalmine needs no CodeDeploy service role",
        f"{prefix}.Alarms[1]: cannot resolve !Ref PlaceOrderThrottles: PlaceOrderThrottles"
        " (AWS::CloudWatch::Alarm) has no AlarmName, so CloudFormation generates its name at"
        " deploy time; the alarm is left out",
        f"{prefix}.Hooks.PostTraffic: cannot resolve !Ref PostTrafficHook: PostTrafficHook"
        " (AWS::Serverless::Function) has no FunctionName, so CloudFormation generates its name"
        " at deploy time; the after_allow_traffic hook is set to 'PostTrafficHook': set it to"
        " the function's real name (aws cloudformation describe-stack-resource --stack-name shop"
        " --logical-resource-id PostTrafficHook)",
        "PreTrafficHook is left out: it is place-order-function's PreTraffic hook, not a"
        " released function",
        "PostTrafficHook is left out: it is place-order-function's PostTraffic hook, not a"
        " released function",
    )


def test_per_function_overrides_disagreeing_with_globals_and_each_other() -> None:
    result = imported("overrides.yaml", app="food-ordering")
    assert result.config == {
        "app": "food-ordering",
        "functions": {
            name: {"versions": "published", "lambda_function": name}
            for name in ("place-order", "notify-user", "menu", "kitchen-display")
        },
        "release": {
            # 10% first like the other canaries and the linear, held longest: 15 minutes
            "strategy": "Canary10Percent15Minutes",
            "lambda_alias": "live",
            "hooks": {"before_allow_traffic": {"lambda": "food-ordering-smoke-test"}},
            "analysis": {
                "alarms": [
                    # Globals' list first, then the function's: SAM appends lists
                    {"name": "food-ordering-5xx", "cloudwatch": "food-ordering-5xx"},
                    {"name": "place-order-p99", "cloudwatch": "place-order-p99"},
                ]
            },
        },
    }
    [strategy] = notes_with(result, "disagree on DeploymentPreference.Type")
    assert (
        "(place-order: Canary10Percent15Minutes, notify-user: Linear10PercentEvery10Minutes,"
        " menu: AllAtOnce, kitchen-display: Canary10Percent5Minutes)" in strategy
    )
    assert "Canary10Percent15Minutes wins as the most cautious" in strategy
    assert "exposing 10% of users for 15m" in strategy
    [alarms] = notes_with(result, "disagree on DeploymentPreference.Alarms")
    assert "place-order: food-ordering-5xx, place-order-p99; notify-user: food-ordering-5xx" in (
        alarms
    )
    [hooks] = notes_with(result, "disagree on Hooks.PreTraffic")
    assert "(notify-user: notify-user-smoke-test)" in hooks
    assert "food-ordering-smoke-test, of place-order (the function whose strategy won)" in hooks
    [alias] = notes_with(result, "disagree on AutoPublishAlias")
    assert "(live: place-order, notify-user, kitchen-display; current: menu)" in alias
    assert "'live', the one most functions use" in alias


def test_the_most_cautious_strategy_does_not_depend_on_the_template_order() -> None:
    doc = yaml.safe_load((TEMPLATES / "overrides.yaml").read_text())  # no short tags in it
    doc["Resources"] = dict(reversed(doc["Resources"].items()))
    result = import_template(parse_template(json.dumps(doc), "reordered.json"))
    assert list(result.config["functions"]) == [
        "kitchen-display",
        "menu",
        "notify-user",
        "place-order",
    ]
    assert result.config["release"]["strategy"] == "Canary10Percent15Minutes"
    # the winning function's hook, whichever comes first
    assert result.config["release"]["hooks"]["before_allow_traffic"] == {
        "lambda": "food-ordering-smoke-test"
    }


def test_json_with_long_forms_mappings_and_a_deployment_config() -> None:
    result = imported("long_forms.json", stack_name="payments")
    assert result.config == {
        "app": "payments",
        "functions": {
            "checkout-function": {"versions": "published", "lambda_function": "pay-checkout-prod"},
            "refund-function": {"versions": "published", "lambda_function": "pay-refund"},
        },
        "release": {
            # SlowCanary: a TimeBasedCanary of 5% for 20 minutes, more cautious than 10% for 30
            "strategy": "Canary5Percent20Minutes",
            "lambda_alias": "live",
            "hooks": {"before_allow_traffic": {"lambda": "pay-refund-check"}},
            "analysis": {
                "alarms": [
                    {
                        "name": "payments-checkout-errors-prod",
                        "cloudwatch": "payments-checkout-errors-prod",
                    }
                ]
            },
        },
    }
    assert notes_with(result, "the DeploymentConfig SlowCanary is read as Canary5Percent20Minutes")
    assert parse_strategy("Canary5Percent20Minutes").steps[0].hold == 20 * 60
    dev = imported(
        "long_forms.json", parameters={"Stage": "dev", "Aliases": "beta,live"}, app="payments"
    )
    assert dev.config["functions"]["checkout-function"]["lambda_function"] == "pay-checkout-dev"
    assert dev.config["release"]["strategy"] == "Canary5Percent20Minutes"
    [alias] = notes_with(dev, "disagree on AutoPublishAlias")
    assert "(beta: checkout-function; live: refund-function)" in alias
    assert "'beta'" in alias, "a tie goes to the first function in the template"


def test_disabled_preferences_and_functions_without_an_alias_are_left_out() -> None:
    result = imported("left_out.yaml")
    assert result.config == {
        "app": "orders-back-office",
        "functions": {"orders-function": {"versions": "published", "lambda_function": "orders"}},
        "release": {"strategy": "Linear10PercentEvery2Minutes", "lambda_alias": "live"},
    }
    assert result.notes == (
        "the app is named 'orders-back-office' from the template's Description; set --app to"
        " choose",
        "LegacyExportFunction is left out: its DeploymentPreference.Enabled is false: SAM moves"
        " its alias at once, without CodeDeploy",
        "NightlyReportFunction is left out: it has no AutoPublishAlias, so SAM publishes no"
        " versions of it",
    )


def test_what_cannot_be_resolved_is_reported_by_name_and_place_and_the_rest_imports() -> None:
    result = imported("unresolved.yaml", app="delivery", stack_name="delivery")
    assert result.config == {
        "app": "delivery",
        "functions": {
            "track-delivery-function": {
                "versions": "published",
                "lambda_function": "delivery-track",
            },
            "eta-function": {"versions": "published", "lambda_function": "EtaFunction"},
        },
        "release": {
            "strategy": "Canary10Percent5Minutes",
            "lambda_alias": "live",
            "analysis": {
                "alarms": [{"name": "delivery-latency", "cloudwatch": "delivery-latency"}]
            },
        },
    }
    track = "Resources.TrackDeliveryFunction.Properties"
    eta = "Resources.EtaFunction.Properties"
    expected = [
        f"{track}.DeploymentPreference.Alarms[0]: cannot resolve !ImportValue"
        " monitoring-DeliveryErrorsAlarm: another stack's export is known only to"
        " CloudFormation; the alarm is left out",
        f"{track}.DeploymentPreference.Alarms[1]: cannot resolve !GetAtt DeliveryLatency.Arn:"
        " a resource attribute is known only after deployment; the alarm is left out",
        f"{track}.DeploymentPreference.Hooks.PreTraffic: cannot resolve !GetAtt SmokeTest.Arn:"
        " a resource attribute is known only after deployment; the before_allow_traffic hook"
        " is left out",
        f"{track}.DeploymentPreference.Hooks.PostTraffic: cannot resolve !GetAtt SmokeTest.Arn:"
        " a resource attribute is known only after deployment; the after_allow_traffic hook"
        " is left out",
        f"{eta}.AutoPublishAlias: cannot resolve !Ref SharedAlias: its value is read from SSM"
        " parameter /delivery/alias at deploy time: pass --parameter SharedAlias=VALUE; the"
        " alias is taken from the other functions",
        f"{eta}.DeploymentPreference.Type: cannot resolve !ImportValue delivery-DeployType:"
        " another stack's export is known only to CloudFormation; the strategy is chosen from"
        " the other functions",
        f"{eta}.FunctionName.Fn::Join[1][1].Fn::Select[1]: cannot resolve !GetAZs: the"
        " Availability Zones of a region are known only to AWS; lambda_function is set to"
        " 'EtaFunction': set it to the real name (aws cloudformation describe-stack-resource"
        " --stack-name delivery --logical-resource-id EtaFunction)",
    ]
    for note in expected:
        assert note in result.notes
    # an SSM parameter's value given on the command line resolves
    given = imported("unresolved.yaml", app="delivery", parameters={"SharedAlias": "live"})
    assert not notes_with(given, "SharedAlias")
    assert not notes_with(given, "disagree on AutoPublishAlias")


def test_unresolved_globals_are_reported_once_at_their_place_in_globals() -> None:
    text = """\
Transform: AWS::Serverless-2016-10-31
Globals:
  Function:
    AutoPublishAlias: live
    DeploymentPreference:
      Type: Linear10PercentEvery1Minute
      Alarms: [!ImportValue shared-5xx-alarm]
Resources:
  A: {Type: AWS::Serverless::Function, Properties: {FunctionName: a}}
  B: {Type: AWS::Serverless::Function, Properties: {FunctionName: b}}
"""
    result = import_template(parse_template(text, "t.yaml"), ImportOptions(app="ab"))
    assert list(result.config["functions"]) == ["a", "b"]
    assert notes_with(result, "!ImportValue") == [
        "Globals.Function.DeploymentPreference.Alarms[0]: cannot resolve !ImportValue"
        " shared-5xx-alarm: another stack's export is known only to CloudFormation; the alarm"
        " is left out"
    ]


def test_a_function_without_a_preference_releases_at_once_as_sam_does() -> None:
    text = """\
Transform: AWS::Serverless-2016-10-31
Resources:
  Api: {Type: AWS::Serverless::Function, Properties: {FunctionName: api, AutoPublishAlias: live}}
"""
    result = import_template(parse_template(text, "t.yaml"), ImportOptions(app="api"))
    assert result.config["release"] == {"strategy": "AllAtOnce", "lambda_alias": "live"}
    assert PRESETS["AllAtOnce"][0].exposure == 10_000


def test_a_function_without_a_name_gets_its_logical_id_and_a_note_to_set_it() -> None:
    text = """\
Transform: AWS::Serverless-2016-10-31
Resources:
  PlaceOrder:
    Type: AWS::Serverless::Function
    Properties: {AutoPublishAlias: live, DeploymentPreference: {Type: AllAtOnce}}
"""
    result = import_template(
        parse_template(text, "t.yaml"), ImportOptions(app="shop", stack_name="shop-prod")
    )
    assert result.config["functions"] == {
        "place-order": {"versions": "published", "lambda_function": "PlaceOrder"}
    }
    assert result.notes == (
        "Resources.PlaceOrder.Properties.FunctionName is not given, so CloudFormation generates"
        " the function's name (like shop-prod-PlaceOrder-1A2B3C4D5E6F); lambda_function is set"
        " to 'PlaceOrder': set it to the real name (aws cloudformation describe-stack-resource"
        " --stack-name shop-prod --logical-resource-id PlaceOrder)",
    )


def test_two_logical_ids_with_one_coalmine_name_are_an_error_naming_both() -> None:
    text = """\
Transform: AWS::Serverless-2016-10-31
Resources:
  APIHandler: {Type: AWS::Serverless::Function, Properties: {AutoPublishAlias: live}}
  ApiHandler: {Type: AWS::Serverless::Function, Properties: {AutoPublishAlias: live}}
"""
    with pytest.raises(TemplateError) as caught:
        import_template(parse_template(text, "t.yaml"), ImportOptions(app="api"))
    assert str(caught.value) == (
        "t.yaml: APIHandler and ApiHandler would both be coalmine function 'api-handler';"
        " rename one of them"
    )


def test_the_document_carries_the_notes_as_comments_and_reads_back_as_the_config() -> None:
    result = imported("hooks_alarms.yaml", stack_name="shop")
    text = result.document()
    lines = text.splitlines()
    assert lines[0] == (
        f"# coalmine.yaml imported from {TEMPLATES / 'hooks_alarms.yaml'} by `coalmine import sam`"
    )
    assert lines[1 : 1 + len(result.notes)] == [f"# note: {n}" for n in result.notes]
    assert yaml.safe_load(text) == result.config


def test_aliases_that_multiply_a_small_file_are_refused_not_walked() -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 7)]
    text = (
        "Transform: AWS::Serverless-2016-10-31\n"
        + "\n".join(levels)
        + """
Resources:
  F:
    Type: AWS::Serverless::Function
    Properties: {AutoPublishAlias: live, DeploymentPreference: {Type: AllAtOnce, X: *a6}}
"""
    )
    with pytest.raises(TemplateError, match=r"t\.yaml is too large to resolve: more than 100000"):
        import_template(parse_template(text, "t.yaml"), ImportOptions(app="f"))


def test_a_template_nested_too_deeply_to_resolve_is_one_line() -> None:
    # flat in the file, deep to resolve: each condition is the negation of the next
    conditions: dict[str, Any] = {
        f"C{i}": {"Fn::Not": [{"Condition": f"C{i + 1}"}]} for i in range(2000)
    }
    conditions["C2000"] = {"Fn::Equals": ["a", "a"]}
    doc = {
        "Transform": "AWS::Serverless-2016-10-31",
        "Conditions": conditions,
        "Resources": {
            "F": {
                "Type": "AWS::Serverless::Function",
                "Properties": {
                    "AutoPublishAlias": "live",
                    "DeploymentPreference": {
                        "Type": {"Fn::If": ["C0", "AllAtOnce", "Canary10Percent5Minutes"]}
                    },
                },
            }
        },
    }
    with pytest.raises(TemplateError, match=r"t\.json is nested too deeply to resolve"):
        import_template(parse_template(json.dumps(doc), "t.json"), ImportOptions(app="f"))
