"""CloudFormation's intrinsic functions, resolved offline from what the template says.

`Resolver.resolve` turns a template value into plain data: ``Ref`` to a
parameter (its ``--parameter`` value, else its ``Default``) or a pseudo
parameter, ``Fn::Sub``, ``Fn::Join``, ``Fn::Select``, ``Fn::Split``,
``Fn::FindInMap``, ``Fn::Base64``, and ``Fn::If`` over the template's
``Conditions`` (``Fn::Equals``, ``Fn::Not``, ``Fn::And``, ``Fn::Or``,
``Condition``). A ``Ref`` to a resource is its name property
(``FunctionName``, ``AlarmName``, ``DeploymentConfigName``) when the template
gives one, as it is what CloudFormation's ``Ref`` returns for those types.

What only CloudFormation or AWS knows (a resource attribute, another stack's
export, a generated name, the Availability Zones) becomes an `Unresolved` in
place of the value, naming the expression and its place in the template; the
rest of the value still resolves. ``AWS::NoValue`` removes the key or item
that holds it.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Final

from coalmine.core.errors import InvalidInput
from coalmine.integrations.sam.template import Template, TemplateError

__all__ = [
    "DEFAULT_ACCOUNT",
    "DEFAULT_REGION",
    "MAX_VALUES",
    "NAME_PROPERTIES",
    "NO_VALUE",
    "NoValue",
    "Pseudo",
    "Resolver",
    "Unresolved",
    "is_intrinsic",
    "text_of",
]

DEFAULT_REGION = "us-east-1"
DEFAULT_ACCOUNT = "123456789012"
MAX_VALUES = 100_000
"""values one import may resolve: YAML aliases can make a small file a huge tree"""

NAME_PROPERTIES: Final[Mapping[str, str]] = {
    "AWS::Serverless::Function": "FunctionName",
    "AWS::Lambda::Function": "FunctionName",
    "AWS::CloudWatch::Alarm": "AlarmName",
    "AWS::CodeDeploy::DeploymentConfig": "DeploymentConfigName",
}
"""resource type -> the property its ``Ref`` returns (the resource's name)"""

_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_LIST_TYPES = ("CommaDelimitedList", "List<")
_SSM_TYPE = "AWS::SSM::Parameter::Value<"


class NoValue(Enum):
    """``AWS::NoValue``: the key or list item holding it is removed."""

    NO_VALUE = "AWS::NoValue"


NO_VALUE: Final = NoValue.NO_VALUE


@dataclass(frozen=True, slots=True)
class Unresolved:
    """A value that cannot be known offline: what it is, where, and why."""

    expression: str
    """the intrinsic in its short form, e.g. ``!GetAtt PreTrafficHook.Arn``"""
    place: str
    """where it is written, e.g. ``Resources.PlaceOrder.Properties.DeploymentPreference``"""
    why: str
    resource: str | None = None
    """the logical id, when the value is exactly a ``!Ref`` to a resource of the template"""

    def describe(self) -> str:
        return f"{self.place}: cannot resolve {self.expression}: {self.why}"


@dataclass(frozen=True, slots=True)
class Pseudo:
    """The values of the pseudo parameters; ``assumed`` names those that are defaults."""

    region: str = DEFAULT_REGION
    account: str = DEFAULT_ACCOUNT
    stack_name: str = "stack"
    assumed: frozenset[str] = frozenset()

    @property
    def partition(self) -> str:
        if self.region.startswith("cn-"):
            return "aws-cn"
        if self.region.startswith("us-gov-"):
            return "aws-us-gov"
        return "aws"

    @property
    def url_suffix(self) -> str:
        return "amazonaws.com.cn" if self.region.startswith("cn-") else "amazonaws.com"


def is_intrinsic(node: object) -> bool:
    """Whether ``node`` is one intrinsic function call (a mapping of one ``Ref``/``Fn::`` key)."""
    if not isinstance(node, dict) or len(node) != 1:
        return False
    (key,) = node
    return isinstance(key, str) and (key in ("Ref", "Condition") or key.startswith("Fn::"))


def text_of(value: object) -> str | None:
    """A scalar as CloudFormation writes it into a string; None for anything else."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    return None


def _short(fn: str) -> str:
    return "!" + fn.removeprefix("Fn::")


def _kind(value: object) -> str:
    if value is NO_VALUE:
        return "AWS::NoValue"
    if isinstance(value, dict):
        return "a mapping"
    return "a list" if isinstance(value, list) else type(value).__name__


def _plain(value: object) -> str:
    """A resolved value in a message: short, one line."""
    text = text_of(value)
    if text is None:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass
class Resolver:
    """Resolves the values of one template under parameter values and pseudo parameters."""

    template: Template
    parameters: Mapping[str, str] = field(default_factory=dict)
    pseudo: Pseudo = field(default_factory=Pseudo)
    assumed_used: set[str] = field(default_factory=set)
    """pseudo parameters whose default value some resolved value used"""
    _conditions: dict[str, bool | Unresolved] = field(default_factory=dict, repr=False)
    _evaluating: set[str] = field(default_factory=set, repr=False)
    _naming: set[str] = field(default_factory=set, repr=False)
    _resolved: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        declared = self._declared()
        for name, value in self.parameters.items():
            spec = declared.get(name)
            if spec is None:
                known = ", ".join(declared) or "none"
                raise InvalidInput(
                    f"--parameter {name}: the template has no parameter {name} (it has: {known})"
                )
            allowed = spec.get("AllowedValues") if isinstance(spec, dict) else None
            if isinstance(allowed, list) and value not in [text_of(a) for a in allowed]:
                choices = ", ".join(str(text_of(a)) for a in allowed)
                raise InvalidInput(
                    f"--parameter {name}={value}: not one of its AllowedValues ({choices})"
                )

    def _declared(self) -> Mapping[str, Any]:
        params = self.template.doc.get("Parameters")
        return params if isinstance(params, dict) else {}

    # -- values ---------------------------------------------------------------------------------

    def resolve(self, node: Any, place: str) -> Any:
        """``node`` as plain data, with an `Unresolved` wherever a part cannot be known."""
        self._resolved += 1
        if self._resolved > MAX_VALUES:
            raise TemplateError(
                f"{self.template.source} is too large to resolve: more than {MAX_VALUES} values"
                " (YAML aliases repeated inside each other?)"
            )
        here = self.template.place(node, place)
        if isinstance(node, dict):
            if is_intrinsic(node):
                ((fn, arg),) = node.items()
                return self._call(fn, arg, here)
            out: dict[str, Any] = {}
            for key, value in node.items():
                resolved = self.resolve(value, f"{here}.{key}")
                if resolved is not NO_VALUE:
                    out[key] = resolved
            return out
        if isinstance(node, list):
            items = (self.resolve(item, f"{here}[{i}]") for i, item in enumerate(node))
            return [item for item in items if item is not NO_VALUE]
        return node

    def _call(self, fn: str, arg: Any, here: str) -> Any:
        handler = _HANDLERS.get(fn)
        if handler is None:
            return Unresolved(
                _short(fn), here, f"{fn} is not an intrinsic function coalmine import evaluates"
            )
        return handler(self, arg, here)

    def _text(self, node: Any, here: str, what: str) -> str | Unresolved:
        """A value that must be one string (a Sub variable, a Join item, a map key)."""
        value = self.resolve(node, here)
        if isinstance(value, Unresolved):
            return value
        text = text_of(value)
        if text is None:
            return Unresolved(what, here, f"needs a string, got {_kind(value)}")
        return text

    def _args(self, fn: str, arg: Any, here: str, count: int) -> list[Any] | Unresolved:
        if isinstance(arg, list) and len(arg) == count:
            return arg
        return Unresolved(_short(fn), here, f"{fn} takes a list of {count} values")

    def _ref(self, arg: Any, here: str) -> Any:
        name = arg if isinstance(arg, str) else self._text(arg, here, "!Ref")
        if isinstance(name, Unresolved):
            return name
        if name == "AWS::NoValue":
            return NO_VALUE
        if name.startswith("AWS::"):
            return self._pseudo(name, here)
        if name in self._declared():
            return self._parameter(name, here)
        resources = self.template.resources
        if name in resources:
            return self._resource_name(name, here)
        base, dot, _ = name.partition(".")
        if dot and base in resources:
            return Unresolved(
                f"!Ref {name}",
                here,
                "the alias or version SAM creates is known only after deployment",
            )
        return Unresolved(f"!Ref {name}", here, f"no parameter or resource named {name}")

    def _pseudo(self, name: str, here: str) -> Any:
        p = self.pseudo
        values: dict[str, Any] = {
            "AWS::Region": p.region,
            "AWS::AccountId": p.account,
            "AWS::StackName": p.stack_name,
            "AWS::Partition": p.partition,
            "AWS::URLSuffix": p.url_suffix,
            "AWS::NotificationARNs": [],
        }
        if name not in values:
            why = (
                "the stack's id is known only after deployment"
                if name == "AWS::StackId"
                else "no such pseudo parameter"
            )
            return Unresolved(f"!Ref {name}", here, why)
        if name in ("AWS::Partition", "AWS::URLSuffix"):
            if "AWS::Region" in p.assumed:
                self.assumed_used.add("AWS::Region")
        elif name in p.assumed:
            self.assumed_used.add(name)
        return values[name]

    def _parameter(self, name: str, here: str) -> Any:
        spec = self._declared()[name]
        spec = spec if isinstance(spec, dict) else {}
        kind = str(spec.get("Type", "String"))
        if name in self.parameters:
            raw: object = self.parameters[name]
        elif kind.startswith(_SSM_TYPE):
            return Unresolved(
                f"!Ref {name}",
                here,
                f"its value is read from SSM parameter {_plain(spec.get('Default'))} at deploy time:"
                f" pass --parameter {name}=VALUE",
            )
        elif "Default" in spec:
            raw = spec["Default"]
        else:
            return Unresolved(
                f"!Ref {name}", here, f"the parameter has no Default: pass --parameter {name}=VALUE"
            )
        text = ",".join(map(str, map(text_of, raw))) if isinstance(raw, list) else text_of(raw)
        if text is None:
            return Unresolved(f"!Ref {name}", here, "the parameter's Default is not a string")
        inner = kind.removeprefix(_SSM_TYPE)
        return text.split(",") if inner.startswith(_LIST_TYPES) else text

    def _resource_name(self, name: str, here: str) -> Any:
        resource = self.template.resources[name]
        kind = resource.get("Type") if isinstance(resource, dict) else None
        prop = NAME_PROPERTIES.get(str(kind))
        if prop is None:
            why = f"the physical id of {name} ({kind}) is known only after deployment"
            return Unresolved(f"!Ref {name}", here, why, resource=name)
        props = resource.get("Properties")
        value = props.get(prop, NO_VALUE) if isinstance(props, dict) else NO_VALUE
        if name in self._naming:
            return Unresolved(f"!Ref {name}", here, f"its {prop} refers to itself", resource=name)
        self._naming.add(name)
        try:
            resolved = self.resolve(value, f"Resources.{name}.Properties.{prop}")
        finally:
            self._naming.discard(name)
        if resolved is NO_VALUE:
            why = (
                f"{name} ({kind}) has no {prop}, so CloudFormation generates its name"
                " at deploy time"
            )
            return Unresolved(f"!Ref {name}", here, why, resource=name)
        if isinstance(resolved, Unresolved):
            return replace(resolved, resource=name)
        return resolved

    def _get_att(self, arg: Any, here: str) -> Unresolved:
        if isinstance(arg, str):
            resource, _, attribute = arg.partition(".")
        elif isinstance(arg, list) and len(arg) == 2:
            resource = str(arg[0])
            attr = self.resolve(arg[1], f"{here}.Fn::GetAtt[1]")
            attribute = str(text_of(attr) or "?")
        else:
            return Unresolved("!GetAtt", here, "Fn::GetAtt takes [resource, attribute]")
        expression = f"!GetAtt {resource}.{attribute}"
        if resource not in self.template.resources:
            return Unresolved(expression, here, f"no resource named {resource}")
        return Unresolved(expression, here, "a resource attribute is known only after deployment")

    def _sub(self, arg: Any, here: str) -> str | Unresolved:
        variables: Mapping[str, Any] = {}
        if isinstance(arg, list) and len(arg) == 2 and isinstance(arg[1], dict):
            text, variables = arg
        else:
            text = arg
        if not isinstance(text, str):
            return Unresolved("!Sub", here, "Fn::Sub takes a string, or [string, {variables}]")
        pieces: list[str] = []
        end = 0
        for m in _SUB_VARIABLE.finditer(text):
            pieces.append(text[end : m.start()])
            end = m.end()
            inner = m.group(1)
            if inner.startswith("!"):  # ${!Literal} is written as ${Literal}
                pieces.append("${" + inner[1:] + "}")
                continue
            name = inner.strip()
            value: Any
            if name in variables:
                value = self._text(variables[name], f"{here}.Fn::Sub[1].{name}", f"${{{name}}}")
            elif "." in name and not name.startswith("AWS::"):
                value = self._get_att(name, here)
            else:
                ref = self._ref(name, here)
                text_value = text_of(ref)
                if isinstance(ref, Unresolved) or text_value is not None:
                    value = ref if isinstance(ref, Unresolved) else text_value
                else:
                    value = Unresolved(f"${{{name}}}", here, f"needs a string, got {_kind(ref)}")
            if isinstance(value, Unresolved):
                return replace(value, resource=None)
            pieces.append(value)
        pieces.append(text[end:])
        return "".join(pieces)

    def _join(self, arg: Any, here: str) -> str | Unresolved:
        args = self._args("Fn::Join", arg, here, 2)
        if isinstance(args, Unresolved):
            return args
        delimiter = self._text(args[0], f"{here}.Fn::Join[0]", "!Join")
        values = self.resolve(args[1], f"{here}.Fn::Join[1]")
        if isinstance(delimiter, Unresolved):
            return delimiter
        if isinstance(values, Unresolved):
            return replace(values, resource=None)
        if not isinstance(values, list):
            return Unresolved("!Join", here, "Fn::Join joins a list of strings")
        texts: list[str] = []
        for item in values:
            if isinstance(item, Unresolved):
                return replace(item, resource=None)
            text = text_of(item)
            if text is None:
                return Unresolved("!Join", here, f"Fn::Join joins strings, got {_plain(item)}")
            texts.append(text)
        return delimiter.join(texts)

    def _select(self, arg: Any, here: str) -> Any:
        args = self._args("Fn::Select", arg, here, 2)
        if isinstance(args, Unresolved):
            return args
        index = self._text(args[0], f"{here}.Fn::Select[0]", "!Select")
        values = self.resolve(args[1], f"{here}.Fn::Select[1]")
        if isinstance(index, Unresolved):
            return index
        if isinstance(values, Unresolved):
            return replace(values, resource=None)
        if not index.isdigit() or not isinstance(values, list):
            return Unresolved("!Select", here, "Fn::Select takes [index, list]")
        if int(index) >= len(values):
            why = f"index {index} is out of range for a list of {len(values)}"
            return Unresolved(f"!Select [{index}, ...]", here, why)
        return values[int(index)]

    def _split(self, arg: Any, here: str) -> list[str] | Unresolved:
        args = self._args("Fn::Split", arg, here, 2)
        if isinstance(args, Unresolved):
            return args
        delimiter = self._text(args[0], f"{here}.Fn::Split[0]", "!Split")
        source = self._text(args[1], f"{here}.Fn::Split[1]", "!Split")
        if isinstance(delimiter, Unresolved):
            return delimiter
        if isinstance(source, Unresolved):
            return replace(source, resource=None)
        if not delimiter:
            return Unresolved("!Split", here, "Fn::Split needs a delimiter")
        return source.split(delimiter)

    def _find_in_map(self, arg: Any, here: str) -> Any:
        args = self._args("Fn::FindInMap", arg, here, 3)
        if isinstance(args, Unresolved):
            return args
        keys: list[str] = []
        for i, arg_node in enumerate(args):
            key = self._text(arg_node, f"{here}.Fn::FindInMap[{i}]", "!FindInMap")
            if isinstance(key, Unresolved):
                return replace(key, resource=None)
            keys.append(key)
        expression = f"!FindInMap [{', '.join(keys)}]"
        mappings = self.template.doc.get("Mappings")
        node: Any = mappings if isinstance(mappings, dict) else {}
        where = "Mappings"
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                return Unresolved(expression, here, f"{where} has no key {key}")
            node, where = node[key], f"{where}.{key}"
        return node

    def _base64(self, arg: Any, here: str) -> str | Unresolved:
        text = self._text(arg, f"{here}.Fn::Base64", "!Base64")
        if isinstance(text, Unresolved):
            return replace(text, resource=None)
        return base64.b64encode(text.encode()).decode("ascii")

    def _import_value(self, arg: Any, here: str) -> Unresolved:
        name = self._text(arg, f"{here}.Fn::ImportValue", "!ImportValue")
        shown = name if isinstance(name, str) else f"({name.expression})"
        return Unresolved(
            f"!ImportValue {shown}", here, "another stack's export is known only to CloudFormation"
        )

    def _get_azs(self, arg: Any, here: str) -> Unresolved:
        return Unresolved(
            "!GetAZs", here, "the Availability Zones of a region are known only to AWS"
        )

    def _if(self, arg: Any, here: str) -> Any:
        args = self._args("Fn::If", arg, here, 3)
        if isinstance(args, Unresolved):
            return args
        name = args[0]
        chosen = (
            self.condition(name, here)
            if isinstance(name, str)
            else self._truth(name, f"{here}.Fn::If[0]")
        )
        if isinstance(chosen, Unresolved):
            return chosen
        return self.resolve(args[1] if chosen else args[2], f"{here}.Fn::If[{1 if chosen else 2}]")

    # -- conditions -----------------------------------------------------------------------------

    def condition(self, name: str, place: str) -> bool | Unresolved:
        """The value of the template's condition ``name`` (referred to at ``place``)."""
        if name in self._conditions:
            return self._conditions[name]
        conditions = self.template.doc.get("Conditions")
        if not isinstance(conditions, dict) or name not in conditions:
            return Unresolved(
                f"Condition {name}", place, f"no condition named {name} in Conditions"
            )
        if name in self._evaluating:
            return Unresolved(f"Condition {name}", place, "the condition depends on itself")
        self._evaluating.add(name)
        try:
            value = self._truth(conditions[name], f"Conditions.{name}")
        finally:
            self._evaluating.discard(name)
        self._conditions[name] = value
        return value

    def _truth(self, node: Any, place: str) -> bool | Unresolved:
        here = self.template.place(node, place)
        if is_intrinsic(node):
            ((fn, arg),) = node.items()
            if fn == "Condition":
                if not isinstance(arg, str):
                    return Unresolved("Condition", here, "Condition takes a condition's name")
                return self.condition(arg, here)
            if fn == "Fn::Equals":
                return self._equals(arg, here)
            if fn == "Fn::Not":
                args = self._args(fn, arg, here, 1)
                if isinstance(args, Unresolved):
                    return args
                inner = self._truth(args[0], f"{here}.Fn::Not[0]")
                return inner if isinstance(inner, Unresolved) else not inner
            if fn in ("Fn::And", "Fn::Or"):
                return self._combine(fn, arg, here)
        value = self.resolve(node, here)
        if isinstance(value, bool | Unresolved):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        return Unresolved("condition", here, f"a condition is true or false, got {_plain(value)}")

    def _equals(self, arg: Any, here: str) -> bool | Unresolved:
        args = self._args("Fn::Equals", arg, here, 2)
        if isinstance(args, Unresolved):
            return args
        a = self.resolve(args[0], f"{here}.Fn::Equals[0]")
        b = self.resolve(args[1], f"{here}.Fn::Equals[1]")
        for value in (a, b):
            if isinstance(value, Unresolved):
                return replace(value, resource=None)
        return _same(a, b)

    def _combine(self, fn: str, arg: Any, here: str) -> bool | Unresolved:
        if not isinstance(arg, list) or not arg:
            return Unresolved(_short(fn), here, f"{fn} takes a list of conditions")
        values = [self._truth(c, f"{here}.{fn}[{i}]") for i, c in enumerate(arg)]
        decisive = fn == "Fn::Or"  # True decides an Or, False decides an And
        if decisive in values:
            return decisive
        for value in values:
            if isinstance(value, Unresolved):
                return value
        return not decisive


def _same(a: object, b: object) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    ta, tb = text_of(a), text_of(b)
    if ta is not None and tb is not None:
        return ta == tb
    return a == b


def _as_condition(fn: str) -> Callable[[Resolver, Any, str], bool | Unresolved]:
    """A condition function met in a value (``Fn::If``'s test, or misplaced): true or false."""

    def call(resolver: Resolver, arg: Any, here: str) -> bool | Unresolved:
        return resolver._truth({fn: arg}, here)

    return call


_HANDLERS: Final[Mapping[str, Callable[[Resolver, Any, str], Any]]] = {
    "Ref": Resolver._ref,
    "Fn::GetAtt": Resolver._get_att,
    "Fn::Sub": Resolver._sub,
    "Fn::Join": Resolver._join,
    "Fn::Select": Resolver._select,
    "Fn::Split": Resolver._split,
    "Fn::FindInMap": Resolver._find_in_map,
    "Fn::Base64": Resolver._base64,
    "Fn::ImportValue": Resolver._import_value,
    "Fn::GetAZs": Resolver._get_azs,
    "Fn::If": Resolver._if,
    **{fn: _as_condition(fn) for fn in ("Condition", "Fn::Equals", "Fn::Not", "Fn::And", "Fn::Or")},
}
