"""The generation fields of `POST /generate` (a multipart form) and `GET /views/lookup` (a query string), defined
once; the form read in one pass and validated by one pydantic model (FastAPI's per-field `Form()`/`File()`
machinery costs more than the rest of a cache hit) and documented as the multipart body it is."""

from __future__ import annotations

from fastapi import Request
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from genview.method.noise import MAX_NOISE_LEVEL, POLICY_PATTERN
from services.errors import ApiError
from services.limits import given_twice
from services.uploads import read_upload

POLICY_HELP = (f"'auto' (adaptive, Eq. 8; needs a fitted basis), 'auto:per-image', 'random', 'constant:L' or "
               f"0–{MAX_NOISE_LEVEL}")
DEPRECATED_LEVEL = ("deprecated name of `noise_policy` (accepted for one release; `noise_policy` wins when both are "
                    "sent)")
MAX_SEED = 2**53 - 1  # the largest integer every JSON client (IEEE doubles) carries exactly
IMAGE = "image"  # the form's file field
IMAGE_HELP = "PNG, JPEG or WebP"


class GenerationFields(BaseModel):
    """What a request asks to generate, besides its image: the cache identity's fields (`request_params`)."""

    noise_policy: str = Field("auto", pattern=POLICY_PATTERN, description=POLICY_HELP)
    num_views: int = Field(1, ge=1, le=8)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    steps: int = Field(20, ge=1, le=200)
    guidance_scale: float = Field(10.0, ge=0.0, le=50.0)
    prompt: str = Field("", max_length=1000)
    size: int = Field(512, ge=16, le=2048, description="output side in pixels (square)")

    def params_fields(self) -> dict:
        """The fields that go into `GenerationParams` as they are (the policy is parsed apart)."""
        return self.model_dump(include=PARAMS_FIELDS)


PARAMS_FIELDS = set(GenerationFields.model_fields) - {"noise_policy"}


class GenerateForm(GenerationFields):
    """`POST /generate`'s form fields next to the image."""

    noise_level: str = Field(None, pattern=POLICY_PATTERN, description=DEPRECATED_LEVEL,
                             json_schema_extra={"deprecated": True})

    def policy_text(self) -> tuple[str, str]:
        """(field, text) of the noise policy asked for: `noise_policy` if sent, else `noise_level` if sent."""
        if "noise_policy" in self.model_fields_set or self.noise_level is None:
            return "noise_policy", self.noise_policy
        return "noise_level", self.noise_level


FORM_FIELDS = frozenset({IMAGE, *GenerateForm.model_fields})


def field_problems(exc: ValidationError) -> list[dict[str, str]]:
    """A pydantic validation failure as the detail of a 422 `invalid_parameters`: each field and what is wrong."""
    return [{"field": ".".join(map(str, e["loc"])) or "query", "message": e["msg"]} for e in exc.errors()]


def form_body() -> dict:
    """`openapi_extra` of `POST /generate`: its multipart body (the route reads the form itself)."""
    schema = GenerateForm.model_json_schema()
    schema["properties"]["noise_level"].pop("default", None)
    schema["properties"] = {IMAGE: {"type": "string", "contentMediaType": "application/octet-stream",
                                    "title": "Image", "description": IMAGE_HELP},
                            **schema["properties"]}
    schema.update(required=[IMAGE], title="GenerateForm")
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


def _sent(value) -> bool:
    """Whether a form value counts as given: an empty text or an empty file input (what a browser sends for a
    field left blank) leaves the field at its default, as FastAPI's form fields do."""
    if isinstance(value, UploadFile):
        return bool(value.filename) or bool(value.size)
    return value != ""


async def read_generate_form(request: Request, max_bytes: int) -> tuple[bytes, GenerateForm]:
    """(image bytes, fields) of a `POST /generate` body; 422 naming each missing, repeated or invalid field, 413
    past `max_bytes`, 400 for a body that is no form. Undeclared fields are ignored."""
    try:
        form = await request.form()
    except HTTPException:
        raise
    except Exception as exc:  # what FastAPI answers for a form it cannot parse
        raise HTTPException(400, "There was an error parsing the body") from exc
    try:
        given_twice((k for k, _ in form.multi_items()), FORM_FIELDS)
        values = {k: v for k, v in form.items() if k in FORM_FIELDS and _sent(v)}
        image = values.pop(IMAGE, None)
        problems = []
        if not isinstance(image, UploadFile):
            problems.append({"field": IMAGE, "message": "Field required" if image is None else
                             f"Value error, Expected UploadFile, received: {type(image)}"})
        try:
            fields = GenerateForm.model_validate(values)
        except ValidationError as exc:
            problems += field_problems(exc)
        if problems:
            raise ApiError(422, "invalid_parameters", problems)
        return await read_upload(image, max_bytes, IMAGE), fields
    finally:
        await form.close()
