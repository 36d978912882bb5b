"""`POST /inputs`, in both APIs: store an image as an input (content-addressed, owned by the caller's tenant), so
that a basis fit (`POST /basis/fit`, `POST /score/basis/fit`) can name it by key without generating anything."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, File, UploadFile
from fastapi.responses import Response

from genview.schemas import InputRef
from genview.settings import Settings
from genview.store import input_key
from services.auth import Tenant
from services.errors import GUARDED, error_responses
from services.limits import FORM_OVERHEAD, single_valued_form
from services.state import AppSettings, AppStore
from services.tenancy import Ownership
from services.uploads import accept_image

INPUTS = "/inputs"


def inputs_body_limits(settings: Settings) -> dict[str, int]:
    """`POST /inputs` takes one image upload, as `/generate` does."""
    return {INPUTS: settings.max_upload_bytes + FORM_OVERHEAD}


def store_input(owners: Ownership, tenant: str, sha: str, data: bytes) -> bool:
    """Store the input `inputs/<sha>` and make it `tenant`'s; True unless this tenant already had it stored."""
    key = input_key(sha)
    known = owners.owns(tenant, sha) and owners.store.exists(key)
    owners.store.put(key, data)  # content-addressed: an existing object already holds these bytes
    owners.record(tenant, sha)
    return not known


router = APIRouter(tags=["inputs"], responses=GUARDED)


@router.post(INPUTS, response_model=InputRef, status_code=201, dependencies=[Depends(single_valued_form)],
             responses={200: {"model": InputRef, "description": "already stored for this API key"},
                        **error_responses(400, 415)})
async def upload_input(settings: AppSettings, store: AppStore, tenant: Tenant,
                       image: Annotated[UploadFile, File(description="PNG, JPEG or WebP")]) -> Response:
    """Store an image as an input, checked and limited as `/generate` checks its upload; answers its key.

    201 when stored, 200 when this API key had stored the same bytes before (keys are content
    addresses). The key is what `POST /basis/fit` and `POST /score/basis/fit` take in `keys`."""
    data, sha = await accept_image(image, settings)
    created = await anyio.to_thread.run_sync(store_input, Ownership(store), tenant, sha, data)
    ref = InputRef(key=input_key(sha), sha256=sha)
    return Response(ref.model_dump_json(), status_code=201 if created else 200, media_type="application/json")
