"""`coalmine import sam` through the real command line: output, notes, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from coalmine.cli import main

TEMPLATES = Path(__file__).parent / "templates"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, list[str]]:
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err.splitlines()


def test_stdout_gets_the_document_and_stderr_one_line_per_note(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(
        ["import", "sam", str(TEMPLATES / "left_out.yaml"), "--app", "office"], capsys
    )
    assert code == 0
    assert yaml.safe_load(out) == {
        "app": "office",
        "functions": {"orders-function": {"versions": "published", "lambda_function": "orders"}},
        "release": {"strategy": "Linear10PercentEvery2Minutes", "lambda_alias": "live"},
    }
    assert err == [
        "note: LegacyExportFunction is left out: its DeploymentPreference.Enabled is false: SAM"
        " moves its alias at once, without CodeDeploy",
        "note: NightlyReportFunction is left out: it has no AutoPublishAlias, so SAM publishes no"
        " versions of it",
    ]
    assert [line for line in out.splitlines() if line.startswith("# note: ")] == [
        "# " + line for line in err
    ]


def test_output_file_parameters_and_pseudo_parameters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "coalmine.yaml"
    code, out, err = run(
        [
            "import",
            "sam",
            str(TEMPLATES / "conditions.yaml"),
            "-o",
            str(target),
            "--parameter",
            "Environment=prod",
            "--region",
            "eu-central-1",
            "--account",
            "111122223333",
            "--app",
            "checkout",
        ],
        capsys,
    )
    assert code == 0
    assert out == ""
    doc = yaml.safe_load(target.read_text())
    assert doc["functions"]["checkout-function"]["lambda_function"] == "checkout-prod"
    assert doc["release"]["strategy"] == "Canary10Percent30Minutes"
    assert doc["release"]["hooks"]["before_allow_traffic"]["lambda"] == (
        "arn:aws:lambda:eu-central-1:111122223333:function:checkout-smoke-prod"
    )
    assert err[-1] == f"wrote {target}: app checkout, 2 function(s), {len(err) - 1} note(s)"
    assert not [line for line in err if "is taken as" in line]


def test_the_installed_command_exits_0_with_notes(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "coalmine.cli", "import", "sam", str(TEMPLATES / "unresolved.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(done.stdout)["app"] == "delivery-tracking"
    assert "cannot resolve !GetAtt SmokeTest.Arn" in done.stderr


BAD_YAML = "Transform: AWS::Serverless-2016-10-31\nResources:\n  A: {B: [1, 2}\n"
NOT_SAM = "AWSTemplateFormatVersion: '2010-09-09'\nResources:\n  T: {Type: AWS::SNS::Topic}\n"
NO_FUNCTIONS = (
    "Transform: AWS::Serverless-2016-10-31\nResources:\n  T: {Type: AWS::Serverless::SimpleTable}\n"
)
NONE_RELEASED = """\
Transform: AWS::Serverless-2016-10-31
Resources:
  Cron: {Type: AWS::Serverless::Function, Properties: {Handler: a.b}}
  Old:
    Type: AWS::Serverless::Function
    Properties: {AutoPublishAlias: live, DeploymentPreference: {Enabled: false, Type: AllAtOnce}}
"""
COLLIDING = """\
Transform: AWS::Serverless-2016-10-31
Resources:
  APIHandler: {Type: AWS::Serverless::Function, Properties: {AutoPublishAlias: live}}
  ApiHandler: {Type: AWS::Serverless::Function, Properties: {AutoPublishAlias: live}}
"""


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        (None, [], "cannot read {path}: No such file or directory"),
        ("DIR", [], "cannot read {path}: Is a directory"),
        (
            BAD_YAML,
            [],
            "{path} is not valid YAML: line 3, column 15: expected ',' or ']', but got '}'",
        ),
        ('{"Transform": "AWS::Serverless-2016-10-31",', [], "{path} is not valid JSON: line 1,"),
        (
            NOT_SAM,
            [],
            "{path} is not a SAM template: it has no 'Transform: AWS::Serverless-2016-10-31'",
        ),
        (
            NO_FUNCTIONS,
            [],
            "no function to import from {path}: it has no AWS::Serverless::Function resource",
        ),
        (
            NONE_RELEASED,
            [],
            "no function to import from {path}: Cron: it has no AutoPublishAlias, so SAM publishes"
            " no versions of it; Old: its DeploymentPreference.Enabled is false: SAM moves its"
            " alias at once, without CodeDeploy",
        ),
        (
            COLLIDING,
            [],
            "{path}: APIHandler and ApiHandler would both be coalmine function 'api-handler';"
            " rename one of them",
        ),
        (COLLIDING, ["--app", "Bad Name"], "--app 'Bad Name': use lowercase letters"),
        (COLLIDING, ["--parameter", "Stage"], "--parameter 'Stage': write NAME=VALUE"),
        (COLLIDING, ["--parameter", "Stage=x"], "--parameter Stage: the template has no parameter"),
        (COLLIDING, ["--region", "mars"], "--region 'mars': give an AWS region"),
        (COLLIDING, ["--account", "42"], "--account '42': give the 12 digits"),
    ],
)
def test_bad_input_is_exit_2_with_one_line_and_no_output(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str | None,
    extra: list[str],
    message: str,
) -> None:
    path = tmp_path / "template.yaml"
    if content == "DIR":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    target = tmp_path / "out.yaml"
    code, out, err = run(["import", "sam", str(path), "-o", str(target), *extra], capsys)
    assert code == 2
    assert out == ""
    assert len(err) == 1, err
    assert err[0].startswith("coalmine: error: " + message.replace("{path}", str(path))), err[0]
    assert not target.exists()


def test_help_names_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["import", "sam", "--help"], capsys)
    assert code == 0
    for option in ("--output", "--app", "--parameter", "--region", "--account", "--stack-name"):
        assert option in out
    assert "TEMPLATE" in out
    code, out, _ = run(["import", "--help"], capsys)
    assert code == 0
    assert "sam" in out
