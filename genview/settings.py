"""All runtime configuration, read from `GENVIEW_*` environment variables."""

from __future__ import annotations

import os
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from genview.images import MAX_PIXELS
from genview.method.defaults import FG_FRACTION

CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
GeneratorDtype = Literal["auto", "fp16", "bf16", "fp32"]


def package_version() -> str:
    """The installed genview version (what `genview --version` and every start-up line say)."""
    try:
        return version("genview")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "0+unknown"



def default_store_url() -> str:
    """The per-user data folder, whatever the working directory: $XDG_DATA_HOME/genview or ~/.local/share/genview."""
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return "file://" + os.path.join(data_home, "genview")

class Settings(BaseSettings):
    """One settings class for every service, worker and CLI command."""

    model_config = SettingsConfigDict(env_prefix="GENVIEW_", extra="ignore")

    redis_url: str | None = Field(None, description="Redis URL; unset → embedded in-memory queue")
    store_url: str = Field(default_factory=default_store_url,
                           description="object store: file://, s3://, memory://; default: the per-user data folder")
    s3_endpoint_url: str | None = Field(None, description="S3 endpoint (MinIO, moto)")
    model: str = Field("sd21-unclip-h", description="generator preset name, hub id or folder")
    scorer_model: str = Field("convnext-base-w", description="scorer preset name or folder")
    device: str = Field("auto", description="torch device: auto, cpu, cuda, cuda:1 …")
    model_cache: str = Field("~/.cache/genview", description="where tiny presets are written")
    compile: bool = Field(False, description="torch.compile the UNet on CUDA (slow first batch, faster after)")
    compile_mode: CompileMode = Field("default", description="torch.compile mode of the UNet (max-autotune: "
                                      "autotuned kernels and CUDA graphs on the padded batch shape)")
    dtype: GeneratorDtype = Field("auto", description="generator dtype; auto: fp16 on CUDA, fp32 on the CPU "
                                  "(bf16 is approximate: opt-in)")
    fuse_qkv: bool = Field(True, description="fuse the attention q/k/v projections of the UNet and VAE (exact)")
    channels_last: bool | None = Field(None, description="channels-last memory format for the UNet and VAE; "
                                       "unset: on CUDA only (on the CPU it moves pixels by rounding)")
    fp8: bool = Field(False, description="FP8 linear layers in the UNet (torchao, dynamic activation scaling; "
                      "approximate, opt-in; CUDA compute capability ≥ 8.9; pip install 'genview[fp8]')")
    api_keys: str = Field("", description="comma-separated API keys, each a tenant; empty → no auth")
    allow_anonymous: bool = Field(False, description="let an API without API keys serve on a non-loopback address "
                                  "(on purpose: anyone who reaches it may use it)")
    metrics_key: str = Field("", description="key for /metrics (Bearer or X-API-Key); empty → /metrics is open")
    public_base_url: str | None = Field(None, description="base of URLs in answers; unset → relative URLs")
    max_queue_depth: int = Field(0, ge=0, description="answer 429 while the queue holds this many jobs (0: off)")
    access_log: bool = Field(False, description="log every HTTP request (uvicorn access log)")
    keep_alive_s: int = Field(75, ge=1, description="how long an idle HTTP connection stays open: longer than the "
                              "idle timeouts of clients (httpx 5 s) and load balancers (60 s), so none of them sends "
                              "on a connection the server is closing")
    port: int | None = Field(None, ge=1, le=65535,
                             description="port of `genview serve` and the APIs (unset: 8000, the scorer API 8001)")
    debug: bool = Field(False, description="a failing `genview` command prints its traceback (as --debug)")

    visibility_timeout_s: float = Field(300.0, gt=0, description="reclaim a job unacked this long")
    max_deliveries: int = Field(3, ge=1, description="deliveries before a job is failed")
    retry_backoff_s: float = Field(1.0, ge=0, description="backoff before retrying a failed job (doubles per failure)")
    job_ttl_s: int = Field(7 * 24 * 3600, gt=0, description="lifetime of job state")
    max_batch_size: int = Field(8, ge=1, description="worker micro-batch size (images)")
    max_batch_wait_ms: int = Field(50, ge=0, description="how often a busy worker looks for jobs for its next batch")
    heartbeat_file: str | None = Field(None, description="workers touch this file between batches (liveness probes)")
    worker_metrics_port: int | None = Field(None, ge=1, le=65535,
                                            description="a worker process serves its Prometheus /metrics here")

    max_upload_bytes: int = Field(20 * 1024 * 1024, gt=0, description="largest accepted upload")
    max_pixels: int = Field(MAX_PIXELS, gt=0, description="largest accepted image (width·height)")
    max_wait_s: float = Field(600.0, gt=0, description="longest `wait=true` a request may ask for")

    max_inflight_body_bytes: int = Field(256 * 1024 * 1024, gt=0,
                                         description="request body bytes an API process holds at once; "
                                         "past it requests are answered 503 before their bodies are read")
    max_score_batch_bytes: int = Field(128 * 1024 * 1024, gt=0,
                                       description="largest /score/batch body (JPEG crops of a training batch fit: "
                                       "1024 pairs of crops up to 64 KB; raise it for large raw uint8 batches)")
    max_score_pairs: int = Field(1024, ge=1, description="most pairs in one /score/batch request")
    max_score_side: int = Field(512, ge=16, description="largest image side in /score/batch")
    score_timeout_s: float = Field(120.0, gt=0, description="how long /score waits before answering 202")

    min_fit_images: int = Field(16, ge=1, description="fewest usable images a PCA basis fit accepts")
    fg_fraction: float = Field(FG_FRACTION, gt=0, lt=1, description="foreground share of tokens for PCA threshold")
    view_format: Literal["png", "webp", "jpeg"] = Field("png", description="encoding of stored views")
    view_quality: int = Field(95, ge=1, le=100, description="quality of webp/jpeg views")
    encode_threads: int = Field(4, ge=0, description="generator worker threads that decode, encode and store while the model runs (0: serial)")

    @property
    def api_key_set(self) -> frozenset[str]:
        """The configured API keys (empty: authentication is off)."""
        return frozenset(k.strip() for k in self.api_keys.split(",") if k.strip())


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
