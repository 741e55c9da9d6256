"""The service's routes, one module per resource, gathered into one router for the app."""

from __future__ import annotations

from fastapi import APIRouter

from responder.service.routes import health, metrics, respond, retrieve

api_router = APIRouter()
for _module in (respond, retrieve, health, metrics):
    api_router.include_router(_module.router)
