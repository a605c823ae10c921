"""The HTTP API over a :class:`~serving.service.RecommendationService`: one FastAPI app, built
per process, whichever way it is served (a Serve ingress replica or plain uvicorn).

No ``from __future__ import annotations`` here: FastAPI reads the annotations at run time.
"""

from typing import Annotated, Any

from fastapi import FastAPI, Header, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from serving.api import App, EventAck, EventBatch, RecommendationRequest, RecommendationResponse
from serving.body_limit import BodySizeLimit
from serving.service import ApiError, RecommendationService

#: The largest request body accepted: a full event batch (1,000 events) is about 300 KB.
MAX_BODY_BYTES = 1 << 20


class ErrorBody(BaseModel):
    error: str
    problems: list[str] | None = None


def _json(model: BaseModel) -> Response:
    return Response(model.model_dump_json(), media_type="application/json")


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    reasons = {
        401: "Missing or invalid X-API-Key.",
        403: "The key belongs to another app.",
        404: "Not found for this app.",
        413: f"Body larger than {MAX_BODY_BYTES} bytes.",
        422: "Invalid request: the fields and why.",
        429: "Over the app's rate limit; see Retry-After (seconds).",
    }
    return {s: {"model": ErrorBody, "description": reasons[s]} for s in statuses}


ApiKey = Annotated[str | None, Header(alias="X-API-Key", description="The calling app's key.")]
AppName = Annotated[App, Path(description="One of the bank's apps.")]
RequestId = Annotated[
    str, Path(pattern=r"^[0-9a-f]{32}$", description="request_id of a recommendation.")
]


def create_api(service: RecommendationService) -> FastAPI:
    api = FastAPI(
        title="Persona",
        version="1",
        description="Ranked, explained product offers for the bank's four apps.",
    )
    api.add_middleware(BodySizeLimit, max_bytes=MAX_BODY_BYTES)

    @api.exception_handler(ApiError)
    async def _api_error(_: Request, error: ApiError) -> JSONResponse:
        return JSONResponse(
            {"error": error.reason}, status_code=error.status, headers=error.headers
        )

    @api.exception_handler(HTTPException)
    async def _http_error(_: Request, error: HTTPException) -> JSONResponse:
        """The framework's own refusals (unknown route, wrong method, body too large) in the
        same shape as ours."""
        return JSONResponse(
            {"error": str(error.detail)}, status_code=error.status_code, headers=error.headers
        )

    @api.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}"
            for e in error.errors()
        ]
        return JSONResponse({"error": "invalid request", "problems": problems}, status_code=422)

    # The service builds typed, valid responses: they are written with pydantic-core's JSON
    # encoder directly instead of being validated and encoded a second time by FastAPI.
    @api.post(
        "/v1/recommendations",
        response_model=RecommendationResponse,
        responses=_errors(401, 403, 404, 413, 422, 429),
    )
    async def recommend(body: RecommendationRequest, x_api_key: ApiKey = None) -> Response:
        return _json(await service.recommend(body, x_api_key))

    @api.post("/v1/events", response_model=EventAck, responses=_errors(401, 403, 413, 422, 429))
    async def events(body: EventBatch, x_api_key: ApiKey = None) -> Response:
        return _json(await service.ingest(body, x_api_key))

    @api.get("/v1/audit/{request_id}", responses=_errors(401, 404, 422))
    async def audit(request_id: RequestId, x_api_key: ApiKey = None) -> dict[str, Any]:
        """The decision record of one of the calling app's requests."""
        return await service.audit(request_id, x_api_key)

    @api.get("/v1/apps/{app}/config", responses=_errors(401, 403, 422))
    async def app_config(app: AppName, x_api_key: ApiKey = None) -> dict[str, Any]:
        """The calling app's own configuration (categories, k, rate limits, experiment)."""
        return service.app_config(app, x_api_key)

    @api.get("/v1/apps/{app}/rules", responses=_errors(401, 403, 422))
    async def app_rules(app: AppName, x_api_key: ApiKey = None) -> dict[str, Any]:
        """The business rules applied to the calling app's answers now."""
        return service.app_rules(app, x_api_key)

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz() -> JSONResponse:
        ready, body = await service.readiness()
        return JSONResponse(body, status_code=200 if ready else 503)

    @api.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        """Prometheus text exposition format (no customer labels)."""
        return Response(service.metrics.exposition(), media_type="text/plain; version=0.0.4")

    return api
