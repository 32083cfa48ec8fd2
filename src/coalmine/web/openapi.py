"""The published OpenAPI document: FastAPI's, completed with what the handlers really answer.

FastAPI documents a 422 body (``HTTPValidationError``) that coalmine never
sends and none of the errors its handlers and middleware do send. This
module owns the difference, so that the document matches behaviour (checked
by schemathesis in tests/web/test_openapi_conformance.py):

- one error body for every error, ``{"detail": "<what to fix>"}``, and the
  422 body with its per-field ``errors`` (`coalmine.web.errors`);
- the statuses each operation can answer: 401 and 403 where a token is
  needed, 400 (invalid input), 404 where a path, query or body names
  something, 409 on writes, 413 where there is a body (`coalmine.web.limits`),
  422 where there is anything to validate, 501/502 on writes (a missing
  extra, a failing AWS call or hook), 503 when the store cannot be reached;
- query parameters a handler requires itself (to answer a friendlier 400)
  marked required.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ERROR_BODY", "VALIDATION_BODY", "complete", "sse_event"]

ERROR_BODY: dict[str, Any] = {
    "title": "ErrorBody",
    "type": "object",
    "required": ["detail"],
    "properties": {"detail": {"type": "string", "description": "what went wrong and what to fix"}},
}
VALIDATION_BODY: dict[str, Any] = {
    "title": "ValidationProblem",
    "type": "object",
    "required": ["detail", "errors"],
    "properties": {
        "detail": {"type": "string", "description": "field.path: message; ..."},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["loc", "msg", "type"],
                "properties": {
                    "loc": {
                        "type": "array",
                        "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                    },
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
}
_ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
_VALIDATION_REF = {"$ref": "#/components/schemas/ValidationProblem"}
_WHY = {
    "400": "invalid input (the detail says what to fix)",
    "401": "no token, or an unknown or revoked one",
    "403": "this token's role may not do this",
    "404": "nothing with that name or id",
    "409": "the current state does not allow it",
    "413": "the body is larger than the server accepts",
    "422": "a parameter or the body does not match the schema",
    "501": "needs an optional extra this server does not have",
    "502": "an upstream (AWS, a hook) failed",
    "503": "the store cannot be reached: retry",
}
_REQUIRED_QUERY = {
    ("/v1/discovery", "get"): ("app", "user"),
    ("/v1/discovery/stream", "get"): ("app", "user"),
}
_METHODS = ("get", "put", "post", "delete", "patch")


def sse_event(name: str, data: str) -> dict[str, Any]:
    """The schema of one server-sent event ``name`` whose data is JSON (``data`` says what)."""
    return {
        "type": "object",
        "required": ["data"],
        "properties": {
            "event": {"type": "string", "enum": [name]},
            "id": {"type": "string"},
            "retry": {"type": "integer"},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "description": f"{data}, as JSON",
            },
        },
    }


def complete(schema: dict[str, Any]) -> dict[str, Any]:
    """Complete FastAPI's ``schema`` in place (and return it)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["ErrorBody"] = ERROR_BODY
    components["ValidationProblem"] = VALIDATION_BODY
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    for path, item in schema.get("paths", {}).items():
        for method in _METHODS:
            operation = item.get(method)
            if operation is not None:
                _complete_operation(path, method, operation)
    return schema


def _complete_operation(path: str, method: str, operation: dict[str, Any]) -> None:
    params = operation.get("parameters", [])
    for param in params:
        if param.get("in") == "query" and param["name"] in _REQUIRED_QUERY.get((path, method), ()):
            # the handler answers a friendlier 400 itself for a missing or empty one
            param["required"] = True
            param["schema"] = {"type": "string", "minLength": 1, "title": param["name"]}
    has_body = "requestBody" in operation
    statuses = ["503"]
    if operation.get("security"):
        statuses += ["400", "401", "403"]
    if params or has_body:
        statuses += ["404", "422"]
    if has_body:
        statuses.append("413")
    if method != "get":
        statuses += ["409", "501", "502"]
    responses = operation.setdefault("responses", {})
    if "422" in responses:  # FastAPI's HTTPValidationError: not what coalmine sends
        responses["422"] = _error("422", _VALIDATION_REF)
    for status in statuses:
        if status not in responses:
            responses[status] = _error(status, _VALIDATION_REF if status == "422" else _ERROR_REF)
        elif "content" not in responses[status]:
            responses[status]["content"] = {"application/json": {"schema": _ERROR_REF}}


def _error(status: str, ref: dict[str, str]) -> dict[str, Any]:
    return {"description": _WHY[status], "content": {"application/json": {"schema": ref}}}
