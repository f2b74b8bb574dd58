"""REST API (/api/*): thin translation between HTTP and the engine. The contract is in ARCHITECTURE.md."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any, Literal

import orjson
from fastapi import APIRouter, File, Request, UploadFile
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from engine import (
    Delta,
    EngineError,
    Finished,
    InvalidInput,
    Notice,
    Reasoning,
    Runtime,
    SamplingParams,
    TooLarge,
    ToolCall,
    ToolResult,
    Turn,
)

from .hub_api import build_hub_router
from .limits import MAX_BODY
from .streaming import cancel_on_disconnect, run_stream
from .tools_api import build_tools_router

log = logging.getLogger("webui.api")


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant"]
    content: str
    name: str | None = Field(None, max_length=200, description="In a group chat: who said it.")


class PersonaIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    description: str = Field("", max_length=20_000)


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    messages: list[MessageIn] = Field(min_length=1)
    preset: str | None = Field(None, description="Character preset name; its prompt and sampling apply.")
    params: SamplingParams | None = Field(None, description="Sampling overrides; unknown names are rejected.")
    session_id: str | None = Field(
        None, description='Absent: stateless. "new": create a session. An id: continue it with one user turn.'
    )
    persona: str | PersonaIn | None = Field(
        None,
        description="Who {{user}} is: a stored persona's name, or {name, description}. A session keeps it.",
    )
    lorebooks: list[str] | None = Field(
        None, max_length=50, description="Lorebooks attached to the chat, by name. A session keeps them."
    )
    reply_prefix: str | None = Field(
        None, max_length=10_000, description="Every reply starts with this text. A session keeps it."
    )
    show_reply_prefix: bool | None = Field(None, description="Keep the prefix in the reply (default true).")
    characters: list[str] | None = Field(
        None,
        min_length=1,
        max_length=16,
        description="Preset names, in place of `preset`: a group chat (with session_id new, a saved one).",
    )
    group: dict[str, Any] | None = Field(
        None,
        description="A new group chat's settings: order (natural|list|manual), muted, allow_self, prompt.",
    )
    speaker: str | None = Field(None, max_length=200, description="In a group chat: who answers now.")
    tools: Literal["auto", "none"] | list[str] | None = Field(
        None,
        description='MCP tools offered to the model: "auto" (every enabled tool), "none", or their names. '
        "The server runs the calls it may (tool_approval) and the model answers with the results.",
    )
    tool_choice: Literal["auto", "none", "required"] | dict[str, Any] | None = Field(
        None,
        description='As OpenAI\'s: "auto", "none", "required" or {"type": "function", "function": {"name"}}.',
    )
    tool_approval: Literal["auto", "ask"] | list[str] | None = Field(
        None,
        description='"auto": every call runs; a list: those tools run. The API never waits for a person: '
        "a call that would be asked about (tools.approval) is refused, and the model is told so.",
    )

    def group_args(self) -> dict[str, Any]:
        return {"characters": self.characters, "speaker": self.speaker, "group": self.group}

    def tool_args(self) -> dict[str, Any]:
        return {"tools": self.tools, "tool_choice": self.tool_choice, "tool_approval": self.tool_approval}

    def options(self) -> dict[str, Any]:
        """The chat options this request sets (only those given)."""
        out = self.model_dump(include=set(OPTION_FIELDS), exclude_none=True)
        return out


OPTION_FIELDS = ("persona", "lorebooks", "reply_prefix", "show_reply_prefix")


class DraftRequest(ChatRequest):
    """Preview and impersonate: with a session, `messages` may be empty."""

    messages: list[MessageIn] = Field(default_factory=list)


class ChatReply(BaseModel):
    reply: str
    reasoning: str = Field("", description="The model's thought, apart from the reply (thinking models).")
    session_id: str | None = None
    finish_reason: str
    metrics: dict[str, Any]
    warnings: list[str] = Field(
        default_factory=list, description="Problems that did not stop the turn, e.g. a failed save."
    )
    tool_calls: list[dict[str, Any]] = Field(
        default_factory=list,
        description='Calls: [{"id", "name", "arguments", "result": {"content", "is_error", "ms"}}].',
    )


class ErrorBody(BaseModel):
    type: str
    message: str


class ErrorReply(BaseModel):
    error: ErrorBody


class RenameRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=200)


class RegenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    params: SamplingParams | None = None
    index: int | None = Field(None, ge=0, description="The reply to regenerate; default the last one.")
    speaker: str | None = Field(None, max_length=200, description="In a group chat: who writes it now.")


class EditRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    index: int = Field(ge=0, description="The message to edit, counted from 0 on the visible path.")
    content: str = Field(min_length=1, max_length=1_000_000)
    params: SamplingParams | None = None


class SelectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    index: int = Field(ge=0, description="The message, counted from 0 on the visible path.")
    version: int = Field(ge=0, description="Its version to show, counted from 0.")


class ImportReply(BaseModel):
    id: str


class LoadModelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="A .gguf file name in models/, or a path inside the models folder.")
    n_ctx: int | None = None
    n_gpu_layers: int | Literal["auto"] | None = Field(
        None, description='Layers on the GPU; -1 all, "auto" the most that fit in free VRAM.'
    )
    n_batch: int | None = None
    flash_attn: bool | None = None
    cache_type_k: str | None = None
    cache_type_v: str | None = None
    chat_format: str | None = None
    force: bool = Field(False, description="Load even when the memory estimate says it will not fit.")


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorReply},
    404: {"model": ErrorReply},
    413: {"model": ErrorReply},
    503: {"model": ErrorReply},
}


def sse(data: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + orjson.dumps(data) + b"\n\n"


async def read_limited(request: Request, limit: int = MAX_BODY) -> bytes:
    size = request.headers.get("content-length")
    if size and size.isdecimal() and int(size) > limit:
        raise TooLarge(f"The body is over {limit // (1024 * 1024)} MB.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise TooLarge(f"The body is over {limit // (1024 * 1024)} MB.")
    return bytes(body)


def check_message_count(rt: Runtime, n: int) -> None:
    limit = rt.settings.server.max_messages
    if n > limit:
        raise InvalidInput(
            f"The request has {n} messages; at most {limit} are accepted (server.max_messages).",
            field="messages",
        )


def sse_response(turn: Turn) -> StreamingResponse:
    """Stream a turn as the contract's SSE events; a client that goes away cancels the turn."""

    async def events() -> AsyncIterator[bytes]:
        warnings: list[str] = []  # e.g. a failed save: sent in the done event, the turn goes on
        try:
            async for event in run_stream(lambda _cancel: iter(turn), turn.cancel):
                if isinstance(event, Delta):
                    yield sse({"delta": event.text})
                elif isinstance(event, Reasoning):
                    yield sse({"reasoning": event.text})
                elif isinstance(event, ToolCall):
                    yield sse(
                        {"tool_call": {"id": event.id, "name": event.name, "arguments": event.arguments}}
                    )
                elif isinstance(event, ToolResult):
                    result = {
                        "id": event.id,
                        "content": event.content,
                        "is_error": event.is_error,
                        "ms": event.ms,
                    }
                    yield sse({"tool_result": result})
                elif isinstance(event, Notice):
                    if event.message not in warnings:
                        warnings.append(event.message)
                elif isinstance(event, Finished):
                    done: dict[str, Any] = {
                        "done": True,
                        "finish_reason": event.finish_reason,
                        "metrics": event.metrics.to_dict(),
                    }
                    if turn.session_id:
                        done["session_id"] = turn.session_id
                    if warnings:
                        done["warnings"] = warnings
                    yield sse(done)
        except EngineError as exc:
            yield sse({"error": exc.to_dict()}, event="error")
        except Exception:  # never a traceback on the wire; the log has it
            log.exception("the turn's stream failed")
            yield sse({"error": {"type": "internal_error", "message": "Generation failed."}}, event="error")
        finally:
            turn.stop()

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def check_body(rt: Runtime, body: ChatRequest) -> None:
    check_message_count(rt, len(body.messages))
    if body.characters and body.preset:
        raise InvalidInput("Give `preset` or `characters` (a group chat), not both.", field="characters")


def prepare_turn(rt: Runtime, body: ChatRequest) -> Turn:
    """The turn, checked before any response is sent: input errors (unknown preset or session, empty
    message, bad params, no model) raise here, so the client gets a JSON error, not a failing stream."""
    check_body(rt, body)
    return rt.turn(
        [m.model_dump(exclude_none=True) for m in body.messages],
        session=body.session_id,
        preset=body.preset,
        params=body.params.model_dump(exclude_unset=True) if body.params else None,
        options=body.options(),
        characters=body.characters,
        group=body.group,
        speaker=body.speaker,
        **body.tool_args(),
    )


def preview_chat(rt: Runtime, body: DraftRequest) -> dict[str, Any]:
    """What a chat request would send: a stateless one's messages, or a session's next turn (with the last
    user message in `messages` sent). A group body previews the chosen speaker's turn."""
    check_body(rt, body)
    msgs = [m.model_dump(exclude_none=True) for m in body.messages]
    return rt.preview(
        msgs,
        session=body.session_id,
        user_text=next((m["content"] for m in reversed(msgs) if m["role"] == "user"), None),
        preset=body.preset,
        params=body.params.model_dump(exclude_unset=True) if body.params else None,
        options=body.options(),
        **body.group_args(),
    )


def build_chat_router(rt: Runtime) -> APIRouter:
    """/chat (whole reply, stream, preview, impersonate) and /health."""
    api = APIRouter()  # included in the /api router

    @api.post("/chat/preview", summary="The prompt a chat request would send, with the lore that fired")
    def chat_preview(body: DraftRequest) -> dict[str, Any]:
        return preview_chat(rt, body)

    @api.post(
        "/chat/impersonate",
        summary="Draft the user's next message (server-sent events); saves nothing",
        response_class=StreamingResponse,
    )
    async def chat_impersonate(body: DraftRequest) -> StreamingResponse:
        def prepare() -> Turn:
            check_body(rt, body)
            overrides = body.params.model_dump(exclude_unset=True) if body.params else None
            msgs = [m.model_dump(exclude_none=True) for m in body.messages]
            common = {"params": overrides, "options": body.options(), **body.group_args()}
            common["mode"] = "impersonate"
            if body.session_id not in (None, "new"):
                return rt.turn(session=body.session_id, **common)
            return rt.turn(msgs, preset=body.preset, **common)

        return sse_response(await run_in_threadpool(prepare))

    @api.get("/health", summary="Server, model, backend and GPU status")
    def health(request: Request) -> dict[str, Any]:
        status = rt.health()
        if getattr(request.state, "authenticated", True) is False:
            return {"status": status["status"]}  # without credentials: up or not, nothing more
        return status

    @api.post("/chat", response_model=ChatReply, summary="One chat turn, whole reply")
    async def chat(body: ChatRequest, request: Request) -> dict[str, Any]:
        turn = await run_in_threadpool(prepare_turn, rt, body)
        async with cancel_on_disconnect(request, turn.cancel):
            async for _event in run_stream(lambda _cancel: iter(turn), turn.cancel):
                pass
        done = turn.finished or Finished("stop")
        out = {
            "reply": turn.text(),
            "reasoning": turn.reasoning,
            "finish_reason": done.finish_reason,
            "metrics": done.metrics.to_dict(),
            "warnings": turn.warnings,
            "tool_calls": turn.tool_calls,
        }
        if turn.session_id:
            out["session_id"] = turn.session_id
        return out

    @api.post(
        "/chat/stream",
        summary="One chat turn as server-sent events",
        response_class=StreamingResponse,
        responses={
            200: {"content": {"text/event-stream": {}}, "description": "data: {delta} ... data: {done}"}
        },
    )
    async def chat_stream(body: ChatRequest) -> StreamingResponse:
        return sse_response(await run_in_threadpool(prepare_turn, rt, body))

    return api


def build_session_router(rt: Runtime) -> APIRouter:
    """/sessions: list, export, import, delete, rename, regenerate, edit, select a version, and the prompt
    a session sends."""
    api = APIRouter()  # included in the /api router

    @api.get("/sessions", summary="Sessions, newest first")
    def sessions(q: str = "") -> list[dict[str, Any]]:
        return [s.model_dump() for s in rt.sessions.list(q)]

    @api.get("/sessions/{session_id}", summary="A session's JSON, as the UI downloads it")
    def session(session_id: str) -> Response:
        return Response(rt.sessions.export_bytes(session_id), media_type="application/json")

    @api.get(
        "/sessions/{session_id}/sillytavern.jsonl", summary="The chat as a SillyTavern chat file (JSONL)"
    )
    def session_sillytavern(session_id: str) -> Response:
        return Response(
            rt.sessions.to_sillytavern(session_id),
            media_type="application/jsonl",
            headers={"Content-Disposition": f'attachment; filename="{session_id}.jsonl"'},
        )

    @api.get("/sessions/{session_id}/openai.json", summary="The chat's visible path as OpenAI chat messages")
    def session_openai(session_id: str) -> Response:
        return Response(
            rt.sessions.to_openai(session_id),
            media_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="{session_id}.openai.json"'},
        )

    @api.get("/sessions/{session_id}/markdown", summary="A readable transcript")
    def session_markdown(session_id: str) -> Response:
        md = rt.sessions.to_markdown(rt.sessions.get(session_id))
        return Response(md, media_type="text/markdown; charset=utf-8")

    @api.post(
        "/sessions/import",
        response_model=ImportReply,
        summary="Import a session: ours, OpenAI messages, text-generation-webui or SillyTavern (JSONL)",
        openapi_extra={"requestBody": {"content": {"application/json": {"schema": {}}}, "required": True}},
        description="The body is JSON; SillyTavern JSONL may also be sent as application/jsonl, "
        "application/x-ndjson or application/x-jsonlines.",
    )
    async def import_session(request: Request) -> dict[str, str]:
        data = await read_limited(request)
        return {"id": rt.sessions.import_bytes(data).id}

    @api.delete("/sessions/{session_id}", summary="Move a session to the trash")
    def delete_session(session_id: str) -> dict[str, Any]:
        rt.sessions.delete(session_id)
        return {"deleted": session_id}

    @api.patch("/sessions/{session_id}", summary="Rename a session")
    def rename_session(session_id: str, body: RenameRequest) -> dict[str, Any]:
        s = rt.sessions.rename(session_id, body.title)
        return {"id": s.id, "title": s.title}

    @api.post(
        "/sessions/{session_id}/regenerate",
        summary="Regenerate the last reply (kept as an alternative), as server-sent events",
        response_class=StreamingResponse,
    )
    async def regenerate(session_id: str, body: RegenerateRequest | None = None) -> StreamingResponse:
        overrides = body.params.model_dump(exclude_unset=True) if body and body.params else None

        index = body.index if body else None

        def prepare() -> Turn:
            return rt.turn(
                session=session_id,
                mode="regenerate",
                params=overrides,
                index=index,
                speaker=body.speaker if body else None,
            )

        return sse_response(await run_in_threadpool(prepare))

    @api.post(
        "/sessions/{session_id}/edit",
        summary="A new version of a message; for the user's, the new reply streams as server-sent events",
        responses={200: {"content": {"text/event-stream": {}, "application/json": {}}}},
    )
    async def edit(session_id: str, body: EditRequest) -> Any:
        def prepare() -> Turn | Response:
            session = rt.sessions.get(session_id)
            shown = session.messages
            if body.index < len(shown) and shown[body.index].role == "user":  # the new reply streams
                overrides = body.params.model_dump(exclude_unset=True) if body.params else None
                return rt.turn(
                    session=session, mode="edit", index=body.index, user_text=body.content, params=overrides
                )
            rt.edit(session_id, body.index, body.content)  # no reply to write: the chat, as saved
            return Response(rt.sessions.export_bytes(session_id), media_type="application/json")

        prepared = await run_in_threadpool(prepare)
        return sse_response(prepared) if isinstance(prepared, Turn) else prepared

    @api.post("/sessions/{session_id}/select", summary="Show a version of a message, and its branch")
    def select(session_id: str, body: SelectRequest) -> Response:
        rt.select_version(session_id, body.index, body.version)
        return Response(rt.sessions.export_bytes(session_id), media_type="application/json")

    @api.get("/sessions/{session_id}/prompt", summary="The exact messages the model gets for this session")
    def session_prompt(session_id: str) -> list[dict[str, str]]:
        return rt.draft(session=session_id).messages

    return api


def build_preset_router(rt: Runtime) -> APIRouter:
    """/presets: character presets, card import and export."""
    api = APIRouter()  # included in the /api router

    @api.get("/presets", summary="Character presets")
    def presets() -> list[dict[str, Any]]:
        return [
            {**c.model_dump(exclude={"card"}), "shipped": rt.presets.is_shipped(c.name)}
            for c in rt.presets.list()
        ]

    @api.get("/presets/{name}", summary="One preset")
    def preset(name: str) -> dict[str, Any]:
        return rt.presets.get(name).model_dump()

    @api.put("/presets/{name}", summary="Create or replace a preset")
    async def put_preset(name: str, request: Request) -> dict[str, Any]:
        from engine import Character

        try:
            data = orjson.loads(await read_limited(request))
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"The body is not valid JSON: {exc}.") from None
        if not isinstance(data, dict):
            raise InvalidInput("Expected a preset object.")
        character = Character.from_dict({**data, "name": name}, source="request body")
        rt.presets.save(character)
        return character.model_dump()

    @api.delete("/presets/{name}", summary="Move a preset to the trash")
    def delete_preset(name: str) -> dict[str, Any]:
        rt.presets.delete(name)
        return {"deleted": name}

    @api.post(
        "/presets/import", summary="Import a character card (PNG/JSON V1-V3, tgw YAML, TavernAI) or preset"
    )
    async def import_preset(file: UploadFile = File(...)) -> dict[str, Any]:
        data = await file.read(MAX_BODY + 1)
        if len(data) > MAX_BODY:
            raise TooLarge("The file is over 10 MB.")
        return rt.presets.import_bytes(file.filename or "card", data).model_dump()

    @api.get("/presets/{name}/card.json", summary="Export as a V2 character card (JSON)")
    def card_json(name: str) -> Response:
        return Response(
            rt.presets.export_card_json(name),
            media_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="{name}.json"'},
        )

    @api.get("/presets/{name}/card.png", summary="Export as a V2/V3 character card (PNG)")
    def card_png(name: str) -> Response:
        return Response(
            rt.presets.export_card_png(name),
            media_type="image/png",
            headers={"Content-Disposition": f'attachment; filename="{name}.png"'},
        )

    return api


def build_model_router(rt: Runtime) -> APIRouter:
    """/gpu, /models and /models/load."""
    api = APIRouter()  # included in the /api router

    @api.get("/gpu", summary="GPU devices and VRAM, or why there is none")
    def gpu() -> dict[str, Any]:
        return rt.gpu_status()

    @api.get("/models", summary="GGUF files in models/ (with remembered settings and a memory estimate)")
    def models() -> dict[str, Any]:
        return {"loaded": rt.model_info(), "available": rt.models.catalog()}

    @api.post(
        "/models/load",
        summary="Load another model with its remembered settings; the current one stays if loading fails",
    )
    def load_model(body: LoadModelRequest) -> dict[str, Any]:
        overrides = body.model_dump(exclude_none=True, exclude={"path"})
        return rt.models.load(body.path, **overrides)

    return api


def build_router(rt: Runtime) -> APIRouter:
    """The /api router: the routers of each concern, in the order their routes are matched."""
    from .lore_api import build_lore_router

    api = APIRouter(prefix="/api", responses=ERRORS)
    api.include_router(build_chat_router(rt))
    api.include_router(build_lore_router(rt, read_limited))
    api.include_router(build_session_router(rt))
    api.include_router(build_preset_router(rt))
    api.include_router(build_model_router(rt))
    api.include_router(build_hub_router(rt))  # hub listing, downloads, estimates, per-model settings
    api.include_router(build_tools_router(rt))  # MCP tools: GET /api/tools, servers, reload, on/off
    return api
