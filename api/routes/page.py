"""The technicians' status page: one self-contained HTML file, no external resources."""
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

router = APIRouter(tags=["page"])
_PAGE = files("api") / "page"


@router.get("/", response_class=HTMLResponse, summary="Status page")
def index() -> HTMLResponse:
    return HTMLResponse(_PAGE.joinpath("index.html").read_text(encoding="utf-8"))


@router.get("/static/{name}", summary="Status page assets",
            responses={404: {"description": "No such asset"}})
def asset(name: str) -> Response:
    types = {"style.css": "text/css", "app.js": "text/javascript"}
    if name not in types:
        return Response("no such asset", status_code=404, media_type="text/plain")
    return Response(_PAGE.joinpath(name).read_text(encoding="utf-8"), media_type=types[name])
