"""A SAM template read from YAML or JSON into one shape, each part knowing its place.

CloudFormation's YAML short tags (``!Ref``, ``!GetAtt``, ``!Sub``, ``!If``,
...) are read into the long forms JSON templates use (``{"Ref": ...}``,
``{"Fn::GetAtt": [...]}``), so everything after loading sees one shape. Every
mapping and list of the document remembers its place (a path such as
``Resources.PlaceOrder.Properties.DeploymentPreference``), so whatever cannot
be resolved is reported where it is written.

Dates stay strings (``AWSTemplateFormatVersion: 2010-09-09`` is text to
CloudFormation) and a key written twice in one mapping is refused, as
CloudFormation refuses it.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from coalmine.core.errors import InvalidInput

__all__ = ["SERVERLESS_TRANSFORM", "Template", "TemplateError", "parse_template", "read_template"]

SERVERLESS_TRANSFORM = "AWS::Serverless-2016-10-31"


class TemplateError(InvalidInput):
    """A template that cannot be imported at all; the message is one line saying why."""


@dataclass(frozen=True, slots=True)
class Template:
    """A SAM template: its document (long-form intrinsics) and where each part sits."""

    source: str
    """how the template is named in messages (its file name)"""
    doc: Mapping[str, Any]
    places: Mapping[int, str]
    """``id()`` of each mapping and list of ``doc`` -> its path in the template"""

    def place(self, node: object, default: str) -> str:
        """Where ``node`` is written in the template; ``default`` for a value built later."""
        if isinstance(node, dict | list):
            return self.places.get(id(node), default)
        return default

    @property
    def resources(self) -> Mapping[str, Any]:
        resources = self.doc.get("Resources")
        return resources if isinstance(resources, dict) else {}


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader plus CloudFormation's short tags, without dates or duplicate keys."""


# Copied, not mutated: SafeLoader's table is shared by every safe_load in the process.
_Loader.yaml_implicit_resolvers = {
    first: [r for r in resolvers if r[0] != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _short_tag(loader: _Loader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        assert isinstance(node, yaml.MappingNode)
        value = loader.construct_mapping(node, deep=True)
    if suffix in ("Ref", "Condition"):
        return {suffix: value}
    if suffix == "GetAtt" and isinstance(value, str):
        # !GetAtt Resource.Attribute.Part: the resource name never holds a dot
        resource, _, attribute = value.partition(".")
        value = [resource, attribute]
    return {f"Fn::{suffix}": value}


def _mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Hashable, Any]:
    seen: set[object] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # '<<' keys may be overridden by the mapping's own: not duplicates
        key = loader.construct_object(key_node, deep=False)
        if isinstance(key, Hashable):
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is written twice", key_node.start_mark
                )
            seen.add(key)
    return loader.construct_mapping(node)


_Loader.add_multi_constructor("!", _short_tag)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    first = str(exc).strip().splitlines()
    return first[0] if first else type(exc).__name__


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the key {key!r} is written twice")
        out[key] = value
    return out


def _load(text: str, source: str) -> object:
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text, object_pairs_hook=_json_pairs)
        except json.JSONDecodeError as exc:
            raise TemplateError(
                f"{source} is not valid JSON: line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from None
        except ValueError as exc:
            raise TemplateError(f"{source} is not valid JSON: {exc}") from None
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        raise TemplateError(f"{source} is not valid YAML: {_yaml_problem(exc)}") from None


def _places(doc: object) -> dict[int, str]:
    """Each container's path; a YAML alias's shared node keeps the first place it is met at."""
    places: dict[int, str] = {}
    stack: list[tuple[object, str]] = [(doc, "")]
    while stack:
        node, path = stack.pop()
        if not isinstance(node, dict | list) or id(node) in places:
            continue
        places[id(node)] = path
        if isinstance(node, dict):
            for key, value in node.items():
                stack.append((value, f"{path}.{key}" if path else str(key)))
        else:
            for i, value in enumerate(node):
                stack.append((value, f"{path}[{i}]"))
    return places


def _transforms(doc: Mapping[str, Any]) -> list[object]:
    transform = doc.get("Transform")
    return list(transform) if isinstance(transform, list) else [transform]


def parse_template(text: str, source: str = "the template") -> Template:
    """Read a SAM template; TemplateError (one line) when it is not valid or not SAM."""
    try:
        doc = _load(text, source)
    except RecursionError:
        raise TemplateError(f"{source} is nested too deeply to read") from None
    if not isinstance(doc, dict):
        got = "empty" if doc is None else f"a {type(doc).__name__}"
        raise TemplateError(
            f"{source} is not a SAM template: it is {got}, not a mapping with Transform and Resources"
        )
    if SERVERLESS_TRANSFORM not in _transforms(doc):
        raise TemplateError(
            f"{source} is not a SAM template: it has no 'Transform: {SERVERLESS_TRANSFORM}'"
        )
    return Template(source, doc, _places(doc))


def read_template(path: str | Path) -> Template:
    """Read a SAM template file; TemplateError when it is missing, unreadable, invalid or not SAM."""
    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise TemplateError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TemplateError(f"cannot read {path}: not UTF-8 text (byte {exc.start})") from None
    return parse_template(text, str(path))
