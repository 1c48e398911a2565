"""The admin API's REST skin, mounted at ``/admin``: bearer token, JSON bodies checked by pydantic.

Without a valid ``Authorization: Bearer <token>`` every route answers 401 before any body is
read, so nothing changes. The comparison is constant-time (``hmac.compare_digest``). Writes
accept ``expected_revision``: when the spec moved on since the caller read it, they get 409.
"""

from __future__ import annotations

import hmac
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from serving.gateway.admin import AdminService
from serving.gateway.rest import Handler, json_response, read_body, read_json
from serving.gateway.retrain import RetrainService
from serving.routing.spec import RoutingSpec


class _Change(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expected_revision: int | None = Field(default=None, ge=0)
    actor: str = Field(default="admin-api", max_length=200)
    reason: str = Field(default="", max_length=2000)


class DeployRequest(_Change):
    version: int = Field(ge=1)
    backend: str
    strategy: str = "canary"
    weight: float | None = Field(default=None, ge=0, le=100)
    params: dict[str, Any] | None = None
    steps: list[float] | None = Field(default=None, description="Start a canary rollout through these %.")
    interval_s: float | None = Field(default=None, gt=0, description="Bake time of each rollout step.")
    bake_s: float | None = Field(default=None, gt=0, description="Start a blue-green rollout with this bake.")


class PromoteRequest(_Change):
    variant: str | None = None


class WeightsRequest(_Change):
    weights: dict[str, float]


class ReplaceRequest(_Change):
    expected_revision: int = Field(ge=0)  # a whole-spec write must be CAS
    spec: RoutingSpec


def bearer_auth(token: str) -> Any:
    expected = token.encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        # surrogateescape: aiohttp keeps undecodable header bytes that way; they must get 401, not 500.
        offered = presented.strip().encode("utf-8", "surrogateescape")
        if scheme.lower() != "bearer" or not hmac.compare_digest(offered, expected):
            return json_response(
                {"error": "the admin API needs a valid bearer token (Authorization: Bearer <token>)"},
                401,
                {"WWW-Authenticate": 'Bearer realm="flywheel-admin"'},
            )
        return await handler(request)

    return check


def _spec(spec: RoutingSpec) -> web.Response:
    return json_response(spec.model_dump(mode="json"))


def create_admin_app(
    admin: AdminService, token: str, retrain: RetrainService | None = None
) -> web.Application:
    if not token:
        raise ValueError("the admin API needs a non-empty token")

    async def body(request: web.Request, model: type[BaseModel]) -> Any:
        # An empty body means "all defaults" (``POST .../rollback`` needs nothing else).
        return model.model_validate(await read_json(request) if await read_body(request) else {})

    async def list_deployments(request: web.Request) -> web.Response:
        return json_response({"deployments": await admin.deployments()})

    async def routing(request: web.Request) -> web.Response:
        return json_response(admin.table.describe())

    async def servers(request: web.Request) -> web.Response:
        """The server replicas this gateway routes to, as their agents report them."""
        return json_response(admin.directory.describe())

    async def get_spec(request: web.Request) -> web.Response:
        return _spec(await admin.get(request.match_info["model"]))

    async def replace(request: web.Request) -> web.Response:
        change: ReplaceRequest = await body(request, ReplaceRequest)
        return _spec(
            await admin.replace(
                request.match_info["model"],
                change.spec,
                expected_revision=change.expected_revision,
                actor=change.actor,
                reason=change.reason,
            )
        )

    async def deploy(request: web.Request) -> web.Response:
        change: DeployRequest = await body(request, DeployRequest)
        return _spec(
            await admin.deploy(
                request.match_info["model"],
                change.version,
                change.backend,
                change.strategy,
                weight=change.weight,
                params=change.params,
                steps=change.steps,
                interval_s=change.interval_s,
                bake_s=change.bake_s,
                expected_revision=change.expected_revision,
                actor=change.actor,
                reason=change.reason,
            )
        )

    async def promote(request: web.Request) -> web.Response:
        change: PromoteRequest = await body(request, PromoteRequest)
        return _spec(
            await admin.promote(
                request.match_info["model"],
                change.variant,
                expected_revision=change.expected_revision,
                actor=change.actor,
                reason=change.reason,
            )
        )

    async def rollback(request: web.Request) -> web.Response:
        change: _Change = await body(request, _Change)
        return _spec(
            await admin.rollback(
                request.match_info["model"],
                expected_revision=change.expected_revision,
                actor=change.actor,
                reason=change.reason,
            )
        )

    async def abort(request: web.Request) -> web.Response:
        change: _Change = await body(request, _Change)
        return _spec(
            await admin.abort(
                request.match_info["model"],
                expected_revision=change.expected_revision,
                actor=change.actor,
                reason=change.reason,
            )
        )

    async def weights(request: web.Request) -> web.Response:
        change: WeightsRequest = await body(request, WeightsRequest)
        return _spec(
            await admin.set_weights(
                request.match_info["model"],
                change.weights,
                expected_revision=change.expected_revision,
                actor=change.actor,
                reason=change.reason,
            )
        )

    app = web.Application(middlewares=[bearer_auth(token)])
    app.add_routes(
        [
            web.get("/deployments", list_deployments),
            web.get("/routing", routing),
            web.get("/servers", servers),
            web.get("/deployments/{model}", get_spec),
            web.put("/deployments/{model}", replace),
            web.post("/deployments/{model}/deploy", deploy),
            web.post("/deployments/{model}/promote", promote),
            web.post("/deployments/{model}/rollback", rollback),
            web.post("/deployments/{model}/abort", abort),
            web.post("/deployments/{model}/weights", weights),
        ]
    )
    if retrain is not None:
        retrain.add_routes(app)
    return app
