"""docs/configuration.md, generated: the `coalmine.yaml` models and the servers' options.

``python -m coalmine.cli.config_docs > docs/configuration.md`` writes it;
``--check`` exits 1 when the committed page differs, so the reference
cannot drift from the settings models (tests/test_docs.py runs the check).
"""

from __future__ import annotations

import enum
import inspect
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from coalmine.cli.serve import ENVIRONMENT as SERVE_ENVIRONMENT
from coalmine.controller.schemas import (
    AppSpec,
    FunctionSpec,
    HookSpec,
    ReleaseCreate,
    ReleaseSettings,
    TargetingSpec,
    WebhookSpec,
)

PAGE = Path("docs") / "configuration.md"

# (heading, model, where it sits, what to say beyond the model's docstring)
MODELS: tuple[tuple[str, type[BaseModel], str], ...] = (
    ("The document", AppSpec, "the top level of `coalmine.yaml`"),
    ("A function", FunctionSpec, "`functions: {NAME: ...}`"),
    ("Release settings", ReleaseSettings, "`release:`"),
    ("A hook", HookSpec, "`release: hooks: {before_allow_traffic|after_allow_traffic: ...}`"),
    ("A webhook", WebhookSpec, "an item of `release: webhooks:` written as an object"),
    (
        "Starting a release",
        ReleaseCreate,
        "the body of `POST /v1/apps/{app}/releases` (what `coalmine release start` sends)",
    ),
    ("Targeting", TargetingSpec, "`targeting:` of a release"),
)

# The environment the processes read outside any command's options: (variable, who reads
# it, meaning). `coalmine serve`'s come from its own list, the one its --help shows.
_ALSO_READ_BY = {
    "COALMINE_SIGNING_KEYS": ", `coalmine gateway`, the SDK",
    "COALMINE_METRICS_DEPRECATED_NAMES": ", `coalmine gateway`",
}
_SEE = {"COALMINE_SIGNING_KEYS": " ([context.md](context.md#keys-and-rotation))"}
ENVIRONMENT: tuple[tuple[str, str, str], ...] = (
    *(
        (name, "`coalmine serve`" + _ALSO_READ_BY.get(name, ""), meaning + _SEE.get(name, ""))
        for name, meaning in SERVE_ENVIRONMENT
    ),
    ("COALMINE_EMF", "the SDK", "`1`: the SDK writes CloudWatch embedded metric format lines"),
    ("COALMINE_EMF_NAMESPACE", "the SDK", "the CloudWatch namespace of those lines"),
    (
        "COALMINE_URL, COALMINE_TOKEN",
        "the client commands",
        "the control plane's URL (default `http://127.0.0.1:8700`) and the token to call it"
        " with (`--url`, `--token`)",
    ),
)

# `coalmine serve` and `coalmine gateway` are the long-running processes.
COMMANDS = ("serve", "gateway")


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return " | ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args if a is not type(None))
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"map of {_type_name(args[0])} to {_type_name(args[1])}" if args else "map"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " | ".join(f"`{m.value}`" for m in annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    if annotation is Any:
        return "any"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            return "its defaults"
        return f"`{value!r}`" if value not in ({}, []) else "empty"
    if field.default is PydanticUndefined:
        return "**required**"
    if field.default is None:
        return "none"
    if isinstance(field.default, enum.Enum):
        return f"`{field.default.value}`"
    return f"`{field.default}`"


def _rules(field: FieldInfo) -> str:
    out = []
    for item in field.metadata:
        for name, word in (
            ("gt", ">"),
            ("ge", "≥"),
            ("lt", "<"),
            ("le", "≤"),
            ("min_length", "at least"),
            ("max_length", "at most"),
        ):
            value = getattr(item, name, None)
            if value is not None:
                out.append(f"{word} {value}")
        pattern = getattr(item, "pattern", None)
        if pattern is not None:
            out.append(f"matches `{pattern}`")
    return "; ".join(out)


def _cell(text: str) -> str:
    return re.sub(r"\s+", " ", text).replace("|", "\\|").strip()


def _model(heading: str, model: type[BaseModel], where: str) -> list[str]:
    doc = inspect.cleandoc(model.__doc__ or "")
    lines = [f"## {heading}", "", f'<a id="{model.__name__.lower()}"></a>', ""]
    lines.append(f"`{model.__name__}`, {where}." + (f" {_cell(doc)}" if doc else ""))
    lines += ["", "| key | type | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        key = field.alias or name
        meaning = field.description or ""
        rules = _rules(field)
        if rules:
            meaning = f"{meaning} ({rules})" if meaning else rules
        lines.append(
            f"| `{key}` | {_cell(_type_name(field.annotation))} | {_default(field)}"
            f" | {_cell(meaning)} |"
        )
    return [*lines, ""]


def _command(name: str, command: Any) -> list[str]:
    lines = [f"### `coalmine {name}`", "", _cell(command.help or ""), ""]
    lines += ["| option | environment | default | meaning |", "|---|---|---|---|"]
    for param in command.params:
        # typer ships its own click: options are told apart by their flags, not their class
        if not getattr(param, "opts", None) or not param.opts[0].startswith("-"):
            continue
        flags = " / ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])
        env = f"`{param.envvar}`" if isinstance(param.envvar, str) else ""
        default = "" if param.default in (None, False) else f"`{param.default}`"
        lines.append(f"| {flags} | {env} | {default} | {_cell(param.help or '')} |")
    return [*lines, ""]


def render() -> str:
    """The whole page, deterministic (no times, no paths)."""
    from coalmine.cli.app import app

    root: Any = typer.main.get_command(app)
    lines = [
        "# Configuration reference",
        "",
        "<!-- generated by `python -m coalmine.cli.config_docs > docs/configuration.md`;"
        " tests/test_docs.py fails when it differs from the models: edit the models, not"
        " this page -->",
        "",
        "Generated from the settings models (`coalmine.controller.schemas`) and the",
        "servers' command-line options, so it says what the code accepts. A",
        "`coalmine.yaml` is checked against these models by `coalmine apply` and by",
        "`POST /v1/apply`; an unknown key is refused (exit code 2, HTTP 422) with",
        "its path. How the pieces are used: [control-plane.md](control-plane.md)",
        "(`coalmine.yaml`, releases), [strategies.md](strategies.md) (`strategy`),",
        "[analysis.md](analysis.md) (`analysis`), [notifications.md](notifications.md)",
        "(`webhooks`), [lambda-versions.md](lambda-versions.md) (`versions: published`).",
        "",
    ]
    for heading, model, where in MODELS:
        lines += _model(heading, model, where)
    lines += ["## Servers", ""]
    for name in COMMANDS:
        command = root.commands[name]
        lines += _command(name, command)
    lines += [
        "## Environment",
        "",
        "What the processes read besides their options' variables (`coalmine serve --help`",
        "lists the server's).",
        "",
        "| variable | read by | meaning |",
        "|---|---|---|",
    ]
    lines += [
        f"| {', '.join(f'`{n}`' for n in names.split(', '))} | {who} | {meaning} |"
        for names, who, meaning in ENVIRONMENT
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if argv[1:] == ["--check"]:
        committed = PAGE.read_text(encoding="utf-8") if PAGE.exists() else ""
        if committed != text:
            print(
                f"{PAGE} is not what the models say: run"
                f" python -m coalmine.cli.config_docs > {PAGE}",
                file=sys.stderr,
            )
            return 1
        return 0
    if argv[1:]:
        print("usage: python -m coalmine.cli.config_docs [--check]", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
