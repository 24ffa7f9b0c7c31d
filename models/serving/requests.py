"""The HTTP request bodies and how a bad one is answered.

Bodies are strict pydantic models (no type coercion, no unknown fields, ids bounded by the
cleaning's id limit, at most `MAX_LIST` recent or excluded items, k in 1..`MAX_K`), parsed as
JSON whatever the content type (`curl -d` sends a form type) by pydantic-core directly. A body
that is not JSON answers 400, JSON that is not a valid request 422; both name the first field
at fault in {"error", "field"} and list every error under "errors". `openapi_body` publishes each
body's schema in /openapi.json, which the tests fuzz (tests/test_fuzz.py).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_LIST = 1000  # recent_items / exclude entries
MAX_K = 1000


REQUEST_ID_LENGTH = 64  # the service's request ids are 32 hex characters; longer is never one


def request_models(max_id_length: int, actions: tuple[str, ...] = ()):
    """(RecommendRequest, SimilarRequest, FeedbackRequest) with ids of at most `max_id_length`
    characters; a feedback's action is one of `actions`."""
    Id = Annotated[str, Field(min_length=1, max_length=max_id_length)]

    class RecommendRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        user_id: Id | None = None
        k: int = Field(default=10, ge=1, le=MAX_K)
        exclude: list[Id] = Field(default_factory=list, max_length=MAX_LIST)
        recent_items: list[Id] = Field(default_factory=list, max_length=MAX_LIST)
        rank: bool = False

    class SimilarRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        item_id: Id
        k: int = Field(default=10, ge=1, le=MAX_K)

    class FeedbackRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        request_id: str = Field(min_length=1, max_length=REQUEST_ID_LENGTH)
        item_id: Id
        action: Literal[actions] if actions else str  # type: ignore[valid-type]
        timestamp: int | None = Field(default=None, ge=0)  # epoch ms; None = when it is received

    return RecommendRequest, SimilarRequest, FeedbackRequest


def openapi_body(model: type[BaseModel]) -> dict:
    """A route's `openapi_extra`: the JSON body it parses by hand (so that a bad one gets our 400/422,
    not FastAPI's) described in the service's OpenAPI schema, /openapi.json."""
    schema = {"content": {"application/json": {"schema": model.model_json_schema()}}, "required": True}
    return {"requestBody": schema}


def _field(loc) -> str:
    return ".".join(str(p) for p in loc) or "body"


def invalid_request(exc: ValidationError) -> JSONResponse:
    """400 for a body that is not JSON, 422 for JSON that is not a valid request; names the field."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    field = _field(first.get("loc", ()))
    detail = [
        {"field": _field(e.get("loc", ())), "message": e.get("msg", ""), "type": e.get("type", "")} for e in errors
    ]
    return JSONResponse(
        {"error": f"{field}: {first['msg']}", "field": field, "errors": detail},
        status_code=400 if first["type"] == "json_invalid" else 422,
    )
