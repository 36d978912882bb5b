"""What a service's routes share, kept on `app.state` and injected with `Annotated` dependencies."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from genview.basis import BasisStore
from genview.queue import JobQueue
from genview.settings import Settings
from genview.store import ObjectStore
from services.jobs import JobWaiter
from services.metrics import ServiceMetrics
from services.tenancy import Ownership
from services.urls import Urls


@dataclass
class ServiceState:
    """One service's settings, queue, store and metrics, and what its routes derive from them."""

    settings: Settings
    queue: JobQueue
    store: ObjectStore
    metrics: ServiceMetrics
    encoder_id: str  # whose PCA basis versions the service resolves requests to
    bases: BasisStore = field(init=False)
    owners: Ownership = field(init=False)
    urls: Urls = field(init=False)
    waiter: JobWaiter = field(init=False)

    def __post_init__(self) -> None:
        self.bases = BasisStore(self.store, self.encoder_id)
        self.owners = Ownership(self.store)
        self.urls = Urls(self.settings)
        self.waiter = JobWaiter(self.queue, self.settings)


# Dependencies are `async def`: FastAPI runs a plain `def` one in the thread pool, a hop per request each.
async def app_settings(request: Request) -> Settings:
    return request.app.state.settings


async def app_store(request: Request) -> ObjectStore:
    return request.app.state.store


AppSettings = Annotated[Settings, Depends(app_settings)]  # what `base_app` keeps for every route of an app
AppStore = Annotated[ObjectStore, Depends(app_store)]


async def generator_state(request: Request) -> ServiceState:
    return request.app.state.generator


async def scorer_state(request: Request) -> ServiceState:
    return request.app.state.scorer


Generator = Annotated[ServiceState, Depends(generator_state)]
Scorer = Annotated[ServiceState, Depends(scorer_state)]
