"""Declarative apply: make the store hold what a ``coalmine.yaml`` document describes.

The body is the document as YAML (any content type but JSON) or JSON. A
document that cannot be parsed is a 400 that says where; one that does not
fit the schema is a 422 naming each bad field. Nothing changes unless the
whole document applies (one transaction); ``?dry_run=true`` reports the
changes and rolls them back.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from coalmine.controller.schemas import ApplyRead, AppSpec
from coalmine.controller.tokens import Principal
from coalmine.core.errors import InvalidInput
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


def _check_size(doc: object) -> None:
    """Refuse documents that YAML aliases blow up (a "billion laughs")."""
    stack, seen = [doc], 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > _MAX_NODES:
            raise InvalidInput(f"the document is too large: more than {_MAX_NODES} values")
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


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
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInput(
                f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from None
    else:
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise _yaml_error(exc) from None
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
        409: {"description": "the document contradicts the store (e.g. a version's target)"},
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
