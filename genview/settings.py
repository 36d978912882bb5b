"""All runtime configuration, read from `GENVIEW_*` environment variables."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """One settings class for every service, worker and CLI command."""

    model_config = SettingsConfigDict(env_prefix="GENVIEW_", extra="ignore")

    redis_url: str | None = Field(None, description="Redis URL; unset → embedded in-memory queue")
    store_url: str = Field("file://./genview-data", description="object store: file://, s3://, memory://")
    s3_endpoint_url: str | None = Field(None, description="S3 endpoint (MinIO, moto)")
    model: str = Field("sd21-unclip-h", description="generator preset name, hub id or folder")
    scorer_model: str = Field("convnext-base-w", description="scorer preset name or folder")
    device: str = Field("auto", description="torch device: auto, cpu, cuda, cuda:1 …")
    model_cache: str = Field("~/.cache/genview", description="where tiny presets are written")
    compile: bool = Field(False, description="torch.compile the UNet on CUDA (slow first batch, faster after)")
    api_keys: str = Field("", description="comma-separated API keys; empty → no auth")

    visibility_timeout_s: float = Field(300.0, gt=0, description="reclaim a job unacked this long")
    max_deliveries: int = Field(3, ge=1, description="deliveries before a job is failed")
    retry_backoff_s: float = Field(1.0, ge=0, description="backoff before retrying a failed job (doubles per failure)")
    job_ttl_s: int = Field(7 * 24 * 3600, gt=0, description="lifetime of job state")
    max_batch_size: int = Field(8, ge=1, description="worker micro-batch size (images)")
    max_batch_wait_ms: int = Field(50, ge=0, description="worker waits this long to fill a batch")

    max_upload_bytes: int = Field(20 * 1024 * 1024, gt=0, description="largest accepted upload")
    max_pixels: int = Field(40_000_000, gt=0, description="largest accepted image (width·height)")
    max_wait_s: float = Field(600.0, gt=0, description="longest `wait=true` a request may ask for")

    max_score_pairs: int = Field(1024, ge=1, description="most pairs in one /score/batch request")
    max_score_side: int = Field(512, ge=16, description="largest image side in /score/batch")
    score_timeout_s: float = Field(120.0, gt=0, description="how long /score waits before answering 202")

    basis_refresh_s: float = Field(10.0, ge=0, description="how often services re-read the PCA basis")
    fg_fraction: float = Field(0.4, gt=0, lt=1, description="foreground share of tokens for PCA threshold")

    @property
    def api_key_set(self) -> frozenset[str]:
        """The configured API keys (empty: authentication is off)."""
        return frozenset(k.strip() for k in self.api_keys.split(",") if k.strip())


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
