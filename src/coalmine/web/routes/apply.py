"""Declarative apply: make the store hold what a ``coalmine.yaml`` document describes.

The body is the document as YAML (any content type but JSON) or JSON. A
document that cannot be parsed is a 400 that says where; so is one nested
more than `MAX_DEPTH` deep (found before it is built), one with more than
100,000 values (YAML aliases), or one with a number beyond 64 bits or not
finite. One that does not fit the schema is a 422 naming each bad field.
Nothing changes unless the whole document applies (one transaction), the
release that a function's ``version`` asks for included (`CatalogService.apply`);
``?dry_run=true`` reports the changes and rolls them back.
"""

from __future__ import annotations

from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from coalmine.controller.schemas import ApplyRead, AppSpec
from coalmine.controller.tokens import Principal
from coalmine.core.errors import InvalidInput
from coalmine.core.wire import MAX_DEPTH, check_number, load_json, long_int
from coalmine.web.auth import Require
from coalmine.web.deps import PlaneDep

__all__ = ["MAX_DOCUMENT_BYTES", "openapi_schemas", "parse_document", "router"]

router = APIRouter(tags=["apply"])

MAX_DOCUMENT_BYTES = 1 << 20
_MAX_NODES = 100_000
_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "a coalmine.yaml document (YAML, or the same as JSON)",
        "content": {
            "application/yaml": {"schema": {"$ref": "#/components/schemas/AppSpec"}},
            "application/json": {"schema": {"$ref": "#/components/schemas/AppSpec"}},
        },
    }
}

Applier = Annotated[Principal, Depends(Require("deployer", "apply app documents"))]


def openapi_schemas() -> dict[str, Any]:
    """The OpenAPI component schemas the apply body refers to (AppSpec and its parts)."""
    schema = AppSpec.model_json_schema(ref_template="#/components/schemas/{model}")
    defs: dict[str, Any] = schema.pop("$defs", {})
    return {**defs, "AppSpec": schema}


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _yaml_error(exc: yaml.YAMLError) -> InvalidInput:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        context = f" ({exc.context})" if exc.context else ""
        return InvalidInput(
            f"malformed YAML at line {mark.line + 1}, column {mark.column + 1}:"
            f" {exc.problem}{context}"
        )
    return InvalidInput(f"malformed YAML: {exc}")


_TOO_DEEP = f"the document is nested more than {MAX_DEPTH} levels deep"


def _check_yaml_events(text: str) -> None:
    """Refuse, before anything is built, YAML nested too deep (building it recurses once per
    level) and decimal whole numbers too long for 64 bits (Python refuses to convert ints of
    over 4300 digits)."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise InvalidInput(_TOO_DEEP)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        elif isinstance(event, yaml.ScalarEvent) and event.style is None:
            long_int(event.value)


def _check_size(doc: object) -> None:
    """Refuse documents that YAML aliases blow up (a "billion laughs") or nest too deep (an
    alias adds the depth of what it names), and numbers beyond 64 bits or not finite."""
    stack: list[tuple[object, int]] = [(doc, 1)]
    seen = 0
    while stack:
        node, depth = stack.pop()
        seen += 1
        if seen > _MAX_NODES:
            raise InvalidInput(f"the document is too large: more than {_MAX_NODES} values")
        if isinstance(node, dict | list):
            if depth > MAX_DEPTH:
                raise InvalidInput(_TOO_DEEP)
            values = node.values() if isinstance(node, dict) else node
            stack.extend((value, depth + 1) for value in values)
        else:
            check_number(node)


def parse_document(raw: bytes, content_type: str | None) -> AppSpec:
    """Parse and validate a document; InvalidInput (400) or RequestValidationError (422)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("the document must be UTF-8 text") from None
    if not text.strip():
        raise InvalidInput("empty document: send the contents of a coalmine.yaml")
    doc: object
    if _is_json(content_type):
        doc = load_json(text, "the document")
    else:
        try:
            _check_yaml_events(text)
            doc = yaml.safe_load(text)
        except InvalidInput:
            raise
        except yaml.YAMLError as exc:
            raise _yaml_error(exc) from None
        except (ValueError, RecursionError) as exc:  # a value YAML cannot convert; a last guard
            raise InvalidInput(f"malformed YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidInput(
            "a coalmine.yaml document is a mapping with 'app', 'functions' and 'release';"
            f" got {type(doc).__name__}"
        )
    _check_size(doc)
    try:
        return AppSpec.model_validate(doc)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


async def _read_body(request: Request) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_DOCUMENT_BYTES:
            raise HTTPException(
                413, f"the document is larger than {MAX_DOCUMENT_BYTES // 1024} KiB"
            )
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/v1/apply",
    summary="Apply a coalmine.yaml document (idempotent; ?dry_run=true to preview)",
    openapi_extra=_BODY_DOC,
    responses={
        400: {"description": "malformed document or an invalid value (the detail says which)"},
        409: {
            "description": "the document contradicts the store (a version's target; a"
            " `version` while a release to other versions is active)"
        },
    },
)
async def apply(
    request: Request,
    who: Applier,
    plane: PlaneDep,
    dry_run: Annotated[bool, Query(description="report the changes without making them")] = False,
) -> ApplyRead:
    spec = parse_document(await _read_body(request), request.headers.get("content-type"))
    return await run_in_threadpool(plane.catalog.apply, spec, who.name, dry_run=dry_run)
