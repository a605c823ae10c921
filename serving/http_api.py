"""The HTTP API over a :class:`~serving.service.RecommendationService`: one FastAPI app, built
per process, whichever way it is served (a Serve ingress replica or plain uvicorn).

No ``from __future__ import annotations`` here: FastAPI reads the annotations at run time.
"""

from typing import Annotated, Any

from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from serving.api import EventAck, EventBatch, RecommendationRequest, RecommendationResponse
from serving.service import ApiError, RecommendationService


def _json(model: BaseModel) -> Response:
    return Response(model.model_dump_json(), media_type="application/json")


ApiKey = Annotated[str | None, Header(alias="X-API-Key", description="The calling app's key.")]


def create_api(service: RecommendationService) -> FastAPI:
    api = FastAPI(
        title="Persona",
        version="1",
        description="Ranked, explained product offers for the bank's four apps.",
    )

    @api.exception_handler(ApiError)
    async def _api_error(_: Request, error: ApiError) -> JSONResponse:
        return JSONResponse({"error": error.reason}, status_code=error.status)

    @api.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}"
            for e in error.errors()
        ]
        return JSONResponse({"error": "invalid request", "problems": problems}, status_code=422)

    # The service builds typed, valid responses: they are written with pydantic-core's JSON
    # encoder directly instead of being validated and encoded a second time by FastAPI.
    @api.post("/v1/recommendations", response_model=RecommendationResponse)
    async def recommend(body: RecommendationRequest, x_api_key: ApiKey = None) -> Response:
        return _json(await service.recommend(body, x_api_key))

    @api.post("/v1/events", response_model=EventAck)
    async def events(body: EventBatch, x_api_key: ApiKey = None) -> Response:
        return _json(await service.ingest(body, x_api_key))

    @api.get("/v1/audit/{request_id}")
    async def audit(request_id: str, x_api_key: ApiKey = None) -> dict[str, Any]:
        """The decision record of one of the calling app's requests."""
        return await service.audit(request_id, x_api_key)

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz() -> JSONResponse:
        ready, body = await service.readiness()
        return JSONResponse(body, status_code=200 if ready else 503)

    @api.get("/metrics")
    async def metrics() -> Response:
        return Response(service.metrics.exposition(), media_type="text/plain; version=0.0.4")

    return api
