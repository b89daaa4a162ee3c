"""Where the dashboard joins the app: its pages, sign-in, and its static files at /static."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from ciserver.web import pages, signin
from ciserver.web.render import HERE


def install(app: FastAPI) -> None:
    app.include_router(signin.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
