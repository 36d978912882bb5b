"""Store keys and job ids of a generation job (the parameters themselves are genview.schemas.GenerationParams)."""

from __future__ import annotations

from genview.schemas import GenerationParams
from genview.store import fg_map_key as stored_fg_map_key
from genview.store import view_meta_key


def meta_key(sha: str, params: GenerationParams) -> str:
    """Where the result document of (input, params) lives."""
    return view_meta_key(sha, params.hash)


def fg_map_key(sha: str, params: GenerationParams) -> str:
    """Where the foreground map of (input, params) lives (a PNG, served by /views like the views)."""
    return stored_fg_map_key(sha, params.hash)


def cache_job_id(sha: str, params: GenerationParams) -> str:
    """The job id under which a cached result is reported (no queue job exists for it)."""
    return f"{sha}.{params.hash}"
