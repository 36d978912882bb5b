"""`GET /views/lookup`: the cached result of (input hash, generation parameters) without uploading the image.

The parameters are keyed exactly as `POST /generate` keys them (`routes.request_params`, the basis included).
With API keys a tenant only finds inputs it owns: any other answers 404, as an absent one does."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import ConfigDict, Field, ValidationError

from genview.queue import DONE
from genview.schemas import GenerationJobDocument
from services.auth import Tenant
from services.errors import GUARDED, ApiError, error_responses
from services.generator.form import GenerationFields, field_problems
from services.generator.routes import (cache_job_id, cheap_here, document, fresh_result, json_response,
                                       off_loop_unless_cheap, request_params, request_policy)
from services.limits import given_twice
from services.state import Generator, ServiceState

LOOKUP = "/views/lookup"  # included before `/views/{key:path}`, which would take it for a view key
router = APIRouter(tags=["generate"], responses=GUARDED)


class LookupQuery(GenerationFields):
    """The input's SHA-256 and the `POST /generate` fields it would be sent with."""

    model_config = ConfigDict(extra="forbid")

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hex SHA-256 of the image file's bytes (lower case)")


def lookup_document(service: ServiceState, tenant: str, query: LookupQuery) -> GenerationJobDocument | None:
    """The finished document of the query's (input, parameters) if stored and visible to `tenant`, else None."""
    policy = request_policy("noise_policy", query.noise_policy)
    params = request_params(service, tenant, policy, query.params_fields())
    if not service.owners.owns(tenant, query.sha256):
        return None
    result = fresh_result(service.store, query.sha256, params)
    if result is None:
        return None
    service.metrics.cache_hit()
    return document(service, cache_job_id(query.sha256, params), DONE, result, cached=True)


def query_parameters() -> list[dict]:
    """`LookupQuery` as OpenAPI query parameters (the route validates the query string itself, in one step)."""
    schema = LookupQuery.model_json_schema()
    return [{"name": name, "in": "query", "required": name in schema.get("required", []), "schema": field,
             **({"description": field["description"]} if "description" in field else {})}
            for name, field in schema["properties"].items()]


def parse_query(request: Request) -> LookupQuery:
    """The query string as a LookupQuery; 422 `invalid_parameters` naming each bad field (a repeated one too)."""
    params = request.query_params
    given_twice((k for k, _ in params.multi_items()), params.keys())
    try:
        return LookupQuery.model_validate(dict(params))
    except ValidationError as exc:
        raise ApiError(422, "invalid_parameters", field_problems(exc)) from None


@router.get(LOOKUP, response_model=GenerationJobDocument, responses=error_responses(404, 409),
            openapi_extra={"parameters": query_parameters()})
async def lookup_views(request: Request, service: Generator, tenant: Tenant):
    """The cached result of an image by its SHA-256, without sending it: 200 with the finished document (as
    `POST /generate` answers a cache hit), 404 `not_cached` when there is none — or the input is not this API
    key's — and then `POST /generate` with the image. 409 `basis_required` as `POST /generate` answers it."""
    query = parse_query(request)  # one pydantic validation: a FastAPI query model costs several times more
    doc = await off_loop_unless_cheap(cheap_here(service), lookup_document, service, tenant, query)
    if doc is None:
        raise ApiError(404, "not_cached", "no stored views of this input under these parameters (or the input is "
                                          "not this API key's): POST /generate with the image")
    return json_response(doc)
