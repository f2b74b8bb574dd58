"""REST routes for user personas (/api/personas) and lorebooks (/api/lorebooks). Thin: the engine checks."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from engine import InvalidInput, NotFound, Runtime, TooLarge


class PersonaBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, description="If given, must be the name in the path.")
    description: str = Field("", max_length=20_000)
    avatar: str | None = Field(None, description="An avatar file name already stored with the personas.")
    default: bool | None = Field(None, description="true: new chats use this persona; false: not any more.")


def persona_dict(rt: Runtime, p: Any) -> dict[str, Any]:
    """A persona (engine/personas.py) as the API shows it."""
    return {**p.model_dump(), "default": rt.personas.default_name() == p.name}


def build_lore_router(rt: Runtime, read_limited: Any) -> APIRouter:
    api = APIRouter()  # included in the /api router

    @api.get("/personas", summary="User personas (who {{user}} is)")
    def list_personas() -> list[dict[str, Any]]:
        return [persona_dict(rt, p) for p in rt.personas.list()]

    @api.get("/personas/{name}", summary="One persona")
    def get_persona(name: str) -> dict[str, Any]:
        return persona_dict(rt, rt.personas.get(name))

    @api.put("/personas/{name}", summary="Create or replace a persona")
    def put_persona(name: str, body: PersonaBody) -> dict[str, Any]:
        rt.personas.check_name(name)
        if body.name is not None and body.name != name:
            raise InvalidInput(
                f"The body's name {body.name!r} differs from the path's {name!r}.", field="name"
            )
        persona = rt.personas.put(name, body.description, body.avatar, make_default=body.default)
        return persona_dict(rt, persona)

    @api.post("/personas/{name}/avatar", summary="Set a persona's avatar (multipart `file`: PNG, JPEG, GIF)")
    async def put_avatar(name: str, file: UploadFile = File(...)) -> dict[str, Any]:
        rt.personas.get(name)  # an unknown persona: 404
        limit = rt.personas.max_avatar_bytes
        data = await file.read(limit + 1)
        if len(data) > limit:
            raise TooLarge(f"The avatar image is over {limit // (1024 * 1024)} MB.")
        return persona_dict(rt, rt.personas.set_avatar(name, data))

    @api.get("/personas/{name}/avatar", summary="A persona's avatar image")
    def get_avatar(name: str) -> Response:
        persona = rt.personas.get(name)
        path = rt.personas.avatar_path(persona)
        if path is None:
            raise NotFound(f"The persona {name!r} has no avatar.")
        kind = {".png": "image/png", ".jpg": "image/jpeg", ".gif": "image/gif"}[path.suffix]
        return Response(path.read_bytes(), media_type=kind)

    @api.delete("/personas/{name}", summary="Delete a persona")
    def delete_persona(name: str) -> dict[str, Any]:
        rt.personas.delete(name)
        return {"deleted": name}

    @api.get("/lorebooks", summary="Lorebooks (SillyTavern world info)")
    def list_books() -> list[dict[str, Any]]:
        return [
            {"name": name, "entries": len(book.entries), "description": book.description or ""}
            for name, book in rt.lorebooks.list()
        ]

    @api.post("/lorebooks/import", summary="Import a world-info JSON, or the lorebook of a character card")
    async def import_book(file: UploadFile = File(...), name: str | None = Form(None)) -> dict[str, Any]:
        data = await file.read(rt.lorebooks.max_bytes + 1)
        if len(data) > rt.lorebooks.max_bytes:
            raise TooLarge("The file is over 10 MB.")
        if name is not None:
            rt.lorebooks.check_name(name)
        saved, book = rt.lorebooks.import_bytes(file.filename or "lorebook.json", data, name)
        return {"name": saved, "entries": len(book.entries)}

    @api.get("/lorebooks/{name}", summary="A lorebook as SillyTavern world-info JSON")
    def get_book(name: str) -> Response:
        return Response(
            rt.lorebooks.export_bytes(name),
            media_type="application/json",
            headers={"Content-Disposition": "attachment; filename=lorebook.json"},
        )

    @api.put(
        "/lorebooks/{name}",
        summary="Create or replace a lorebook (body: SillyTavern world-info JSON)",
        openapi_extra={"requestBody": {"content": {"application/json": {"schema": {}}}, "required": True}},
    )
    async def put_book(name: str, request: Request) -> dict[str, Any]:
        rt.lorebooks.check_name(name)
        try:
            data = orjson.loads(await read_limited(request))
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"The body is not valid JSON: {exc}.") from None
        book = rt.lorebooks.put(name, data, "request body")
        return {"name": name, "entries": len(book.entries)}

    @api.delete("/lorebooks/{name}", summary="Move a lorebook to the trash")
    def delete_book(name: str) -> dict[str, Any]:
        rt.lorebooks.delete(name)
        return {"deleted": name}

    return api
