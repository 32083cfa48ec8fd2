"""A SAM template made into the coalmine.yaml that releases the same functions.

One app. Each ``AWS::Serverless::Function`` with an ``AutoPublishAlias`` (and
a deployment preference that is not ``Enabled: false``) becomes a function
whose versions are the Lambda function's published versions. The functions'
preferences become the app's one release (`coalmine.integrations.sam.preference`
says how disagreements are settled). Everything the import could not carry
over, or had to assume, is a note: printed, and written at the top of the
document as comments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from coalmine.core.alarms import validate_alarm_name
from coalmine.core.errors import InvalidInput
from coalmine.core.model import NAME_PATTERN
from coalmine.core.strategy import Strategy, StrategyError, parse_strategy
from coalmine.integrations.sam.intrinsics import (
    DEFAULT_ACCOUNT,
    DEFAULT_REGION,
    NO_VALUE,
    Pseudo,
    Resolver,
    Unresolved,
    is_intrinsic,
    text_of,
)
from coalmine.integrations.sam.merge import merge_globals
from coalmine.integrations.sam.names import app_name_from, name_from
from coalmine.integrations.sam.preference import (
    HOOK_SLOTS,
    FunctionPreference,
    choose_alias,
    choose_hooks,
    choose_strategy,
    collect_alarms,
    deployment_config_strategy,
)
from coalmine.integrations.sam.template import Template, TemplateError

__all__ = ["ImportOptions", "SamImport", "import_template"]

FUNCTION_TYPE = "AWS::Serverless::Function"
_LAMBDA_TYPES = (FUNCTION_TYPE, "AWS::Lambda::Function")
_NOT_CARRIED = {
    "Role": "coalmine needs no CodeDeploy service role",
    "TriggerConfigurations": "coalmine tells the URLs of release.webhooks of release events instead",
}


@dataclass(frozen=True, slots=True)
class ImportOptions:
    """What the template does not say: parameter values, pseudo parameters, the app's name."""

    app: str | None = None
    parameters: Mapping[str, str] = field(default_factory=dict)
    region: str | None = None
    account: str | None = None
    stack_name: str | None = None


@dataclass(frozen=True, slots=True)
class SamImport:
    """The imported coalmine config, and the notes about what was assumed or left out."""

    source: str
    config: Mapping[str, Any]
    notes: tuple[str, ...]

    def document(self) -> str:
        """The coalmine.yaml text: the notes as comments at the top, then the config."""
        header = [f"# coalmine.yaml imported from {self.source} by `coalmine import sam`"]
        header += [f"# note: {note}" for note in self.notes]
        body = yaml.safe_dump(dict(self.config), sort_keys=False, allow_unicode=True)
        return "\n".join(header) + "\n" + body


class _Notes(list[str]):
    def add(self, note: str) -> None:
        note = " ".join(note.split())  # one line each
        if note not in self:
            self.append(note)


@dataclass
class _Import:
    template: Template
    resolver: Resolver
    notes: _Notes = field(default_factory=_Notes)
    stack_name: str = ""
    hook_functions: dict[str, str] = field(default_factory=dict)
    """logical id of a function used as a hook -> whose hook it is, e.g. place-order's PreTraffic"""

    # -- one function ---------------------------------------------------------------------------

    def function(
        self, logical_id: str, resource: Mapping[str, Any]
    ) -> tuple[FunctionPreference | None, str]:
        """(what the function asks of a release, '') or (None, why it is left out)."""
        place = f"Resources.{logical_id}"
        condition = resource.get("Condition")
        if isinstance(condition, str):
            created = self.resolver.condition(condition, f"{place}.Condition")
            if created is False:
                return (
                    None,
                    f"its Condition {condition} is false, so the stack has no such function",
                )
            if isinstance(created, Unresolved):
                self.notes.add(f"{created.describe()}; {logical_id} is imported as if it were true")
        props = resource.get("Properties")
        if not isinstance(props, dict) or is_intrinsic(props):
            props = {}
        merged = merge_globals(self._globals(), props)
        where = f"{place}.Properties"

        alias = self.resolver.resolve(
            merged.get("AutoPublishAlias", NO_VALUE), f"{where}.AutoPublishAlias"
        )
        if alias is NO_VALUE:
            return None, "it has no AutoPublishAlias, so SAM publishes no versions of it"
        if isinstance(alias, Unresolved):
            self.notes.add(f"{alias.describe()}; the alias is taken from the other functions")
            alias = None
        elif text_of(alias) is None:
            self.notes.add(f"{where}.AutoPublishAlias is not a string: ignored")
            alias = None
        else:
            alias = text_of(alias)

        pref = self.resolver.resolve(
            merged.get("DeploymentPreference", NO_VALUE), f"{where}.DeploymentPreference"
        )
        pref_place = f"{where}.DeploymentPreference"
        if isinstance(pref, Unresolved):
            self.notes.add(
                f"{pref.describe()}; {logical_id} takes no part in choosing the release's settings"
            )
            return FunctionPreference(name_from(logical_id), alias), ""
        if pref is not NO_VALUE and not isinstance(pref, dict):
            self.notes.add(f"{pref_place} is not a mapping: ignored")
            pref = NO_VALUE
        if isinstance(pref, dict) and not self._enabled(pref, pref_place, logical_id):
            return None, (
                "its DeploymentPreference.Enabled is false: SAM moves its alias at once,"
                " without CodeDeploy"
            )
        name = name_from(logical_id)
        settings: dict[str, Any] = pref if isinstance(pref, dict) else {}
        strategy, label = self._strategy(settings, pref is NO_VALUE, pref_place)
        for key, why in _NOT_CARRIED.items():
            if key in settings:
                self.notes.add(f"{pref_place}.{key} is not imported: {why}")
        return FunctionPreference(
            function=name,
            alias=alias,
            strategy=strategy,
            strategy_label=label,
            alarms=tuple(self._alarms(settings.get("Alarms", NO_VALUE), f"{pref_place}.Alarms")),
            hooks=self._hooks(settings.get("Hooks", NO_VALUE), f"{pref_place}.Hooks", name),
        ), ""

    def _globals(self) -> Mapping[str, Any]:
        section = self.template.doc.get("Globals")
        function = section.get("Function") if isinstance(section, dict) else None
        return function if isinstance(function, dict) and not is_intrinsic(function) else {}

    def _enabled(self, pref: Mapping[str, Any], place: str, logical_id: str) -> bool:
        enabled = pref.get("Enabled", True)
        if isinstance(enabled, Unresolved):
            self.notes.add(f"{enabled.describe()}; {logical_id} is imported as if it were true")
            return True
        text = text_of(enabled)
        if text is None or text.lower() not in ("true", "false"):
            self.notes.add(f"{place}.Enabled is {enabled!r}, not true or false: taken as true")
            return True
        return text.lower() == "true"

    def lambda_function(self, logical_id: str, resource: Mapping[str, Any]) -> str:
        props = resource.get("Properties")
        node = props.get("FunctionName", NO_VALUE) if isinstance(props, dict) else NO_VALUE
        where = f"Resources.{logical_id}.Properties.FunctionName"
        value = self.resolver.resolve(node, where)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, Unresolved):
            why = value.describe()
        elif value is NO_VALUE:
            why = f"{where} is not given, so CloudFormation generates the function's name"
            why += f" (like {self.stack_name}-{logical_id}-1A2B3C4D5E6F)"
        else:
            why = f"{where} is not a function name"
        self.notes.add(
            f"{why}; lambda_function is set to {logical_id!r}: set it to the real name"
            f" ({self._describe_resource(logical_id)})"
        )
        return logical_id

    def _describe_resource(self, logical_id: str) -> str:
        return (
            f"aws cloudformation describe-stack-resource --stack-name {self.stack_name}"
            f" --logical-resource-id {logical_id}"
        )

    def _strategy(
        self, pref: Mapping[str, Any], absent: bool, place: str
    ) -> tuple[Strategy | None, str]:
        if absent:
            return parse_strategy("AllAtOnce"), "AllAtOnce (no DeploymentPreference)"
        kind = pref.get("Type", NO_VALUE)
        if kind is NO_VALUE:
            self.notes.add(f"{place} has no Type: it takes no part in choosing the strategy")
            return None, ""
        config_id: str | None = None
        if isinstance(kind, Unresolved):
            if kind.resource is None or not self._is_deployment_config(kind.resource):
                self.notes.add(
                    f"{kind.describe()}; the strategy is chosen from the other functions"
                )
                return None, ""
            config_id = kind.resource
        else:
            text = text_of(kind)
            if text is None:
                self.notes.add(f"{place}.Type is not a string: ignored")
                return None, ""
            try:
                strategy = parse_strategy(text)
            except StrategyError:
                strategy = None
            if strategy is not None and strategy.name != "custom":
                return strategy, strategy.name
            config_id = self._deployment_config_named(text)
            if config_id is None:
                self.notes.add(
                    f"{place}.Type {text!r} is neither a CodeDeploy Lambda preset nor a"
                    " DeploymentConfig of this template: the strategy is chosen from the"
                    " other functions (set release.strategy to its steps)"
                )
                return None, ""
        return self._config_strategy(config_id, f"{place}.Type")

    def _is_deployment_config(self, logical_id: str) -> bool:
        resource = self.template.resources.get(logical_id)
        return (
            isinstance(resource, dict)
            and resource.get("Type") == "AWS::CodeDeploy::DeploymentConfig"
        )

    def _deployment_config_named(self, name: str) -> str | None:
        for logical_id in self.template.resources:
            if self._is_deployment_config(logical_id):
                value = self.resolver.resolve({"Ref": logical_id}, f"Resources.{logical_id}")
                if value == name:
                    return logical_id
        return None

    def _config_strategy(self, logical_id: str, place: str) -> tuple[Strategy | None, str]:
        props = self.template.resources[logical_id].get("Properties")
        resolved = self.resolver.resolve(
            props if isinstance(props, dict) else {}, f"Resources.{logical_id}.Properties"
        )
        try:
            strategy = deployment_config_strategy(resolved)
        except StrategyError as exc:
            self.notes.add(
                f"{place}: the DeploymentConfig {logical_id} cannot be read as a strategy ({exc}):"
                " the strategy is chosen from the other functions"
            )
            return None, ""
        self.notes.add(f"{place}: the DeploymentConfig {logical_id} is read as {strategy.name}")
        return strategy, f"{strategy.name} (DeploymentConfig {logical_id})"

    def _alarms(self, value: Any, place: str) -> list[str]:
        if value is NO_VALUE:
            return []
        if isinstance(value, Unresolved):
            self.notes.add(f"{value.describe()}; these alarms are left out")
            return []
        if not isinstance(value, list):
            self.notes.add(f"{place} is not a list: ignored")
            return []
        alarms: list[str] = []
        for i, item in enumerate(value):
            if isinstance(item, Unresolved):
                self.notes.add(f"{item.describe()}; the alarm is left out")
                continue
            try:
                alarms.append(validate_alarm_name(text_of(item)))
            except InvalidInput:
                self.notes.add(f"{place}[{i}] is not an alarm name: left out")
        return alarms

    def _hooks(self, value: Any, place: str, function: str) -> dict[str, str]:
        if value is NO_VALUE:
            return {}
        if isinstance(value, Unresolved):
            self.notes.add(f"{value.describe()}; the hooks are left out")
            return {}
        if not isinstance(value, dict):
            self.notes.add(f"{place} is not a mapping: ignored")
            return {}
        hooks: dict[str, str] = {}
        for sam_name, slot in HOOK_SLOTS.items():
            hook = value.get(sam_name, NO_VALUE)
            if hook is NO_VALUE:
                continue
            if isinstance(hook, Unresolved):
                target = hook.resource
                if target is not None and self._is_function(target):
                    hooks[slot] = target
                    self.notes.add(
                        f"{hook.describe()}; the {slot} hook is set to {target!r}: set it to"
                        f" the function's real name ({self._describe_resource(target)})"
                    )
                else:
                    self.notes.add(f"{hook.describe()}; the {slot} hook is left out")
                continue
            text = text_of(hook)
            if not text:
                self.notes.add(f"{place}.{sam_name} is not a function name: left out")
                continue
            hooks[slot] = text
        for sam_name, slot in HOOK_SLOTS.items():
            target = self._function_named(hooks[slot]) if slot in hooks else None
            if target is not None:
                self.hook_functions.setdefault(target, f"{function}'s {sam_name}")
        for key in value:
            if key not in HOOK_SLOTS:
                self.notes.add(
                    f"{place}.{key} is not a SAM hook (PreTraffic, PostTraffic): ignored"
                )
        return hooks

    def _is_function(self, logical_id: str) -> bool:
        resource = self.template.resources.get(logical_id)
        return isinstance(resource, dict) and resource.get("Type") in _LAMBDA_TYPES

    def _function_named(self, name: str) -> str | None:
        """The logical id of the template's Lambda function called ``name``, if any."""
        if self._is_function(name):
            return name
        for logical_id in self.template.resources:
            if (
                self._is_function(logical_id)
                and self.resolver.resolve({"Ref": logical_id}, f"Resources.{logical_id}") == name
            ):
                return logical_id
        return None


def _app_name(template: Template, options: ImportOptions) -> tuple[str, str | None]:
    """The app's name, and a note saying where it came from when it was not given."""
    if options.app is not None:
        if not NAME_PATTERN.fullmatch(options.app):
            raise InvalidInput(
                f"--app {options.app!r}: use lowercase letters, digits, '-' or '_'"
                " (at most 63, starting and ending with a letter or digit)"
            )
        return options.app, None
    if options.stack_name and (name := name_from(options.stack_name)):
        return name, f"the app is named {name!r} after --stack-name; set --app to choose"
    description = template.doc.get("Description")
    if isinstance(description, str) and (name := app_name_from(description)):
        return (
            name,
            f"the app is named {name!r} from the template's Description; set --app to choose",
        )
    path = Path(template.source)
    stem = path.parent.resolve().name if path.stem == "template" else path.stem
    name = name_from(stem) or "app"
    return name, f"the app is named {name!r} after the template's file; set --app to choose"


def _pseudo(options: ImportOptions, stack_name: str, stack_assumed: bool) -> Pseudo:
    assumed = {
        name
        for name, value in (
            ("AWS::Region", options.region),
            ("AWS::AccountId", options.account),
        )
        if value is None
    }
    if stack_assumed:
        assumed.add("AWS::StackName")
    return Pseudo(
        region=options.region or DEFAULT_REGION,
        account=options.account or DEFAULT_ACCOUNT,
        stack_name=stack_name,
        assumed=frozenset(assumed),
    )


_ASSUMED_HOW = {
    "AWS::Region": "pass --region",
    "AWS::AccountId": "pass --account",
    "AWS::StackName": "pass --stack-name",
}


def import_template(template: Template, options: ImportOptions | None = None) -> SamImport:
    """The coalmine config of a SAM template, with notes; TemplateError when nothing imports."""
    try:
        return _import(template, options or ImportOptions())
    except RecursionError:
        raise TemplateError(f"{template.source} is nested too deeply to resolve") from None


def _import(template: Template, options: ImportOptions) -> SamImport:
    app, app_note = _app_name(template, options)
    stack_name = options.stack_name or app
    resolver = Resolver(
        template, dict(options.parameters), _pseudo(options, stack_name, options.stack_name is None)
    )
    job = _Import(template, resolver, stack_name=stack_name)
    if app_note:
        job.notes.add(app_note)

    prefs: list[FunctionPreference] = []
    functions: dict[str, dict[str, str]] = {}
    origin: dict[str, str] = {}
    left_out: list[tuple[str, str]] = []
    for logical_id, resource in template.resources.items():
        if not isinstance(resource, dict) or resource.get("Type") != FUNCTION_TYPE:
            continue
        pref, why = job.function(logical_id, resource)
        if pref is None:
            left_out.append((logical_id, why))
            continue
        if not pref.function:
            raise TemplateError(f"{template.source}: {logical_id} makes no valid function name")
        if pref.function in origin:
            raise TemplateError(
                f"{template.source}: {origin[pref.function]} and {logical_id} would both be"
                f" coalmine function {pref.function!r}; rename one of them"
            )
        origin[pref.function] = logical_id
        prefs.append(pref)
        functions[pref.function] = {
            "versions": "published",
            "lambda_function": job.lambda_function(logical_id, resource),
        }
    if not prefs:
        found = "; ".join(f"{lid}: {why}" for lid, why in left_out)
        raise TemplateError(
            f"no function to import from {template.source}: "
            + (found or f"it has no {FUNCTION_TYPE} resource")
        )

    strategy, strategy_notes = choose_strategy(prefs)
    winner = next((p.function for p in prefs if p.strategy == strategy), None)
    alarms, alarm_notes = collect_alarms(prefs)
    hooks, hook_notes = choose_hooks(prefs, winner)
    alias, alias_notes = choose_alias(prefs)

    for logical_id, why in left_out:
        if logical_id in job.hook_functions:
            why = f"it is {job.hook_functions[logical_id]} hook, not a released function"
        job.notes.add(f"{logical_id} is left out: {why}")
    for note in [*strategy_notes, *alarm_notes, *hook_notes, *alias_notes]:
        job.notes.add(note)
    for name in sorted(resolver.assumed_used):
        value = {
            "AWS::Region": resolver.pseudo.region,
            "AWS::AccountId": resolver.pseudo.account,
            "AWS::StackName": resolver.pseudo.stack_name,
        }[name]
        job.notes.add(f"{name} is taken as {value!r} ({_ASSUMED_HOW[name]} to set it)")

    release: dict[str, Any] = {}
    if strategy is not None:
        release["strategy"] = strategy.name if strategy.name != "custom" else strategy.describe()
    if alias is not None:
        release["lambda_alias"] = alias
    if hooks:
        release["hooks"] = {slot: {"lambda": fn} for slot, fn in hooks.items()}
    if alarms:
        release["analysis"] = {"alarms": [{"name": a, "cloudwatch": a} for a in alarms]}
    config: dict[str, Any] = {"app": app, "functions": functions}
    if release:
        config["release"] = release
    return SamImport(template.source, config, tuple(job.notes))
