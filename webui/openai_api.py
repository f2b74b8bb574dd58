"""OpenAI-compatible API: GET /v1/models, POST /v1/chat/completions (streaming and not)."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from engine import Delta, EngineError, Finished, InvalidInput, Reasoning, Runtime, ToolCall, Turn

from .api import check_message_count
from .streaming import cancel_on_disconnect, run_stream

log = logging.getLogger("webui.openai_api")


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str
    text: str | None = None


class OAIMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[ContentPart] | None = ""
    tool_calls: list[dict[str, Any]] | None = Field(None, description="An assistant message's calls.")
    tool_call_id: str | None = Field(None, max_length=200, description="The call a tool message answers.")
    name: str | None = Field(None, max_length=200)

    def message(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "role": "system" if self.role == "developer" else self.role,
            "content": self.text(),
        }
        if self.role == "assistant" and self.tool_calls:
            out["tool_calls"] = self.tool_calls
        if self.role == "assistant" and self.name:
            out["name"] = self.name  # a group chat's speaker
        if self.role == "tool":
            out |= {"tool_call_id": self.tool_call_id or "", "name": self.name or ""}
        return out

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text or "" for p in self.content if p.type == "text")
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """Unknown OpenAI fields are ignored; known ones are validated with our bounds."""

    model_config = ConfigDict(extra="ignore")
    messages: list[OAIMessage] = Field(min_length=1)
    model: str | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1, le=131072)
    max_completion_tokens: int | None = Field(None, ge=1, le=131072)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-1, le=2**32 - 1)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    stream: bool = False
    stream_options: StreamOptions | None = None
    # llama.cpp-style extras that many clients send
    top_k: int | None = Field(None, ge=0, le=1000)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    repeat_penalty: float | None = Field(None, ge=0.0, le=3.0)
    grammar: str | None = Field(
        None, max_length=100_000, description="GBNF grammar, as llama-server takes it."
    )
    # tools the client runs: the reply may be calls to them (finish_reason "tool_calls")
    tools: list[dict[str, Any]] | None = Field(
        None, max_length=128, description='OpenAI function specs: [{"type": "function", "function": {...}}].'
    )
    tool_choice: Literal["auto", "none", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    # this server's chat extras (see /api/chat)
    preset: str | None = Field(
        None,
        max_length=200,
        description="A character preset: its prompt and sampling apply, as in /api/chat.",
    )
    persona: str | dict[str, str] | None = None
    lorebooks: list[str] | None = Field(None, max_length=50)
    reply_prefix: str | None = Field(None, max_length=10_000)
    show_reply_prefix: bool | None = None
    characters: list[str] | None = Field(
        None, min_length=1, max_length=16, description="Preset names, in place of `preset`: a group chat."
    )
    group: dict[str, Any] | None = Field(None, description="A group chat's settings, as in /api/chat.")
    speaker: str | None = Field(None, max_length=200, description="In a group chat: who answers now.")

    def options(self) -> dict[str, Any]:
        return self.model_dump(
            include={"persona", "lorebooks", "reply_prefix", "show_reply_prefix"}, exclude_none=True
        )

    # thinking models
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high"] | None = Field(
        None, description="none turns thinking off; the others set thinking_budget from the config."
    )
    thinking: Literal["auto", "on", "off"] | None = None
    thinking_budget: int | None = Field(None, ge=0, le=131072)
    chat_template_kwargs: dict[str, Any] | None = Field(
        None, description="Only enable_thinking is read: it sets thinking on or off."
    )
    reasoning_format: str | None = Field(
        None, max_length=40, description='"none": the thought stays in content, with its tags.'
    )

    def thinking_params(self, budgets: dict[str, int]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        enable = (self.chat_template_kwargs or {}).get("enable_thinking")
        if isinstance(enable, bool):
            out["thinking"] = "on" if enable else "off"
        if self.reasoning_effort == "none":
            out["thinking"] = "off"
        elif self.reasoning_effort is not None:
            effort = self.reasoning_effort
            budget = budgets.get(effort, budgets.get("low")) if effort == "minimal" else budgets.get(effort)
            if budget is not None:
                out["thinking_budget"] = budget
        if self.thinking is not None:
            out["thinking"] = self.thinking
        if self.thinking_budget is not None:
            out["thinking_budget"] = self.thinking_budget
        return out

    def sampling(self) -> dict[str, Any]:
        out = self.model_dump(
            include={
                "temperature",
                "top_p",
                "max_tokens",
                "stop",
                "seed",
                "presence_penalty",
                "frequency_penalty",
                "top_k",
                "min_p",
                "repeat_penalty",
                "grammar",
            },
            exclude_none=True,
        )
        if self.max_completion_tokens and "max_tokens" not in out:
            out["max_tokens"] = self.max_completion_tokens
        return out


def _finish_reason(reason: str) -> str:
    return reason if reason in ("length", "tool_calls") else "stop"


def _usage(done: Finished) -> dict[str, int]:
    m = done.metrics
    prompt, completion = m.prompt_tokens or 0, m.completion_tokens or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def model_id(rt: Runtime) -> str:
    info = rt.model_info()
    return str(info.get("name") or rt.settings.model.path)


def prepare(rt: Runtime, body: ChatCompletionRequest) -> Turn:
    """The turn, checked before any response is sent."""
    check_message_count(rt, len(body.messages))
    if body.messages[-1].role not in ("user", "assistant", "tool"):
        raise InvalidInput("The last message must be from the user.", field="messages")
    msgs = [m.message() for m in body.messages]
    wanted = {**body.sampling(), **body.thinking_params(rt.settings.model.reasoning_effort_budgets)}
    if body.characters and body.preset:
        raise InvalidInput("Give `preset` or `characters` (a group chat), not both.", field="characters")
    return rt.turn(
        msgs,
        preset=body.preset,
        options=body.options(),
        params=wanted,
        characters=body.characters,
        group=body.group,
        speaker=body.speaker,
        tools=body.tools or None,  # the client runs them: this server never calls MCP for /v1
        tool_choice=body.tool_choice,
    )


def raw_tags(rt: Runtime) -> tuple[str, str] | None:
    """The format's tags, for reasoning_format "none" (the thought stays in content)."""
    return rt.reasoning_tags()


class Completion:
    """One completion's reply, whole (`body`) or as OpenAI's chunks (`stream`)."""

    def __init__(self, turn: Turn, name: str, raw: tuple[str, str] | None) -> None:
        self.turn, self.name, self.raw = turn, name, raw
        self.cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())

    def events(self, _cancel: threading.Event) -> Iterator[Any]:
        return iter(self.turn)

    def body(self) -> dict[str, Any]:
        """The whole reply, once the turn has run."""
        turn, raw = self.turn, self.raw
        done = turn.finished or Finished("stop")
        message: dict[str, Any] = {"role": "assistant", "content": turn.text()}
        if turn.reasoning and raw:
            message["content"] = f"{raw[0]}{turn.reasoning}{raw[1]}" + message["content"]
        elif turn.reasoning:
            message["reasoning_content"] = turn.reasoning
        if turn.tool_calls:
            message["tool_calls"] = [
                ToolCall(c["id"], c["name"], c["arguments"]).to_openai() for c in turn.tool_calls
            ]
            message["content"] = message["content"] or None
        return {
            "id": self.cid,
            "object": "chat.completion",
            "created": self.created,
            "model": self.name,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": _finish_reason(done.finish_reason),
                    "logprobs": None,
                }
            ],
            "usage": _usage(done),
            "metrics": done.metrics.to_dict(),
        }

    def chunk(self, delta: dict[str, Any] | None, finish: str | None = None, usage: Any = None) -> bytes:
        payload: dict[str, Any] = {
            "id": self.cid,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.name,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
            if delta is not None
            else [],
        }
        if usage is not None:
            payload["usage"] = usage
        return b"data: " + orjson.dumps(payload) + b"\n\n"

    async def stream(self, include_usage: bool) -> AsyncIterator[bytes]:
        chunk, raw, cancel = self.chunk, self.raw, self.turn.cancel
        thinking = False  # raw format: inside the thought's tags
        calls = 0
        try:
            yield chunk({"role": "assistant", "content": ""})
            async for event in run_stream(self.events, cancel):
                if isinstance(event, Reasoning) and raw:
                    yield chunk({"content": ("" if thinking else raw[0]) + event.text})
                    thinking = True
                elif isinstance(event, Reasoning):
                    yield chunk({"reasoning_content": event.text})
                elif isinstance(event, Delta):
                    yield chunk({"content": (raw[1] if raw and thinking else "") + event.text})
                    thinking = False
                elif isinstance(event, ToolCall):
                    yield chunk({"tool_calls": [{"index": calls, **event.to_openai()}]})
                    calls += 1
                elif isinstance(event, Finished):
                    yield chunk({}, _finish_reason(event.finish_reason))
                    if include_usage:
                        yield chunk(None, usage=_usage(event))
        except EngineError as exc:
            err = {"error": {"message": exc.message, "type": exc.kind, "param": exc.field, "code": None}}
            yield b"data: " + orjson.dumps(err) + b"\n\n"
        except Exception:
            log.exception("the completion's stream failed")
            err = {
                "error": {
                    "message": "Generation failed.",
                    "type": "internal_error",
                    "param": None,
                    "code": None,
                }
            }
            yield b"data: " + orjson.dumps(err) + b"\n\n"
        finally:
            cancel.set()
        yield b"data: [DONE]\n\n"


def build_openai_router(rt: Runtime) -> APIRouter:
    v1 = APIRouter(prefix="/v1", tags=["OpenAI-compatible"])

    @v1.get("/models", summary="The loaded model, in OpenAI's list format")
    def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": model_id(rt), "object": "model", "created": int(rt.started_at), "owned_by": "local"}
            ],
        }

    @v1.post("/chat/completions", summary="Chat completion, OpenAI-compatible (stream or not)")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
        turn = await run_in_threadpool(
            prepare, rt, body
        )  # bad input or no model: an error now, not in a stream
        raw = raw_tags(rt) if (body.reasoning_format or "").lower() == "none" else None
        reply = Completion(turn, model_id(rt), raw)
        if not body.stream:
            async with cancel_on_disconnect(request, turn.cancel):
                async for _event in run_stream(reply.events, turn.cancel):
                    pass
            return reply.body()
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            reply.stream(include_usage), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    return v1
