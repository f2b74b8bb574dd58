"""REST routes for MCP tools: the tools and their servers, per-tool on/off, and reloading config/mcp.json.
Thin: the engine's ToolHub (`Runtime.tools`) does the work. Included by webui/api.py."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from engine import Runtime


class ToolSwitch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(description="false turns the tool off: the model is not offered it.")


def build_tools_router(rt: Runtime) -> APIRouter:
    api = APIRouter()  # included in the /api router

    @api.get("/tools", summary="The MCP servers' tools: server, name, description, input_schema, enabled")
    def tools() -> list[dict[str, Any]]:
        return [t.to_dict() for t in rt.tools.list_tools()]

    @api.get("/tools/servers", summary="Each MCP server's state, error and stderr tail; config file problems")
    def servers() -> dict[str, Any]:
        return rt.tools.status()

    @api.post("/tools/reload", summary="Read config/mcp.json again: start new servers, stop removed ones")
    def reload() -> dict[str, Any]:
        return rt.tools.reload()

    @api.put("/tools/{name}", summary="Turn a tool on or off (remembered in the data dir)")
    def switch(name: str, body: ToolSwitch) -> dict[str, Any]:
        return rt.tools.set_enabled(name, body.enabled).to_dict()

    return api
