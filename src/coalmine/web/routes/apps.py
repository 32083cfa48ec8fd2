"""Apps, their functions and versions: list, create, register, set the current version."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import Field

from coalmine.controller.schemas import (
    NAME_RULE,
    AppRead,
    InputModel,
    ReleaseSettings,
    VersionCreate,
    VersionRead,
)
from coalmine.controller.tokens import Principal
from coalmine.web.auth import Require
from coalmine.web.deps import PlaneDep

__all__ = ["AppCreate", "CurrentSet", "FunctionCreate", "router"]

router = APIRouter(prefix="/v1/apps", tags=["apps"])


class AppCreate(InputModel):
    # the pattern is published; the catalog checks it (400 with a sentence that says how)
    name: str = Field(
        max_length=63,
        description="lowercase letters, digits, '-' or '_'",
        json_schema_extra={"pattern": NAME_RULE},
    )
    release: ReleaseSettings | None = Field(
        default=None, description="release defaults (strategy, route mode, hooks, analysis)"
    )


class FunctionCreate(InputModel):
    name: str = Field(max_length=63, json_schema_extra={"pattern": NAME_RULE})


class CurrentSet(InputModel):
    version: str = Field(min_length=1, max_length=64)


Viewer = Annotated[Principal, Depends(Require("viewer", "read apps"))]
AppCreator = Annotated[Principal, Depends(Require("deployer", "create apps"))]
FunctionAdder = Annotated[Principal, Depends(Require("deployer", "add functions"))]
Registrar = Annotated[Principal, Depends(Require("deployer", "register versions"))]
CurrentSetter = Annotated[Principal, Depends(Require("deployer", "set current versions"))]


@router.get("", summary="List apps")
def list_apps(_: Viewer, plane: PlaneDep) -> list[AppRead]:
    return plane.catalog.list_apps()


@router.post("", status_code=201, summary="Create an app")
def create_app(body: AppCreate, who: AppCreator, plane: PlaneDep) -> AppRead:
    return plane.catalog.create_app(body.name, who.name, body.release)


@router.get("/{app}", summary="Read an app, its functions and versions")
def get_app(app: str, _: Viewer, plane: PlaneDep) -> AppRead:
    return plane.catalog.get_app(app)


@router.post("/{app}/functions", status_code=201, summary="Add a function to an app")
def add_function(app: str, body: FunctionCreate, who: FunctionAdder, plane: PlaneDep) -> AppRead:
    return plane.catalog.add_function(app, body.name, who.name)


@router.post(
    "/{app}/functions/{function}/versions",
    status_code=201,
    summary="Register an immutable version of a function",
)
def register_version(
    app: str, function: str, body: VersionCreate, who: Registrar, plane: PlaneDep
) -> VersionRead:
    return plane.catalog.register_version(app, function, body, who.name)


@router.put(
    "/{app}/functions/{function}/current",
    summary="Set the version a function runs outside a release",
)
def set_current(
    app: str, function: str, body: CurrentSet, who: CurrentSetter, plane: PlaneDep
) -> AppRead:
    return plane.catalog.set_current(app, function, body.version, who.name)
