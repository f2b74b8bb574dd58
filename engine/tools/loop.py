"""A turn with tools: offer them, stream, take the calls out of the reply, run the approved ones, give the
results back to the model and let it go on, for at most `tools.max_rounds` rounds.

    offer = prepare_tools(rt, "auto", None, "auto", approve=None)   # checked now: bad input raises
    for event in run_tools(rt, offer, messages, params, cancel):  # Delta, ToolCall, ToolResult, Finished
        ...

Two kinds of offer:
- the MCP servers' tools (`tools` "auto" or a list of names): the calls run here, each as the approval policy
  decides (`tools.approval`, or the request's `tool_approval`; `approve` asks a person, and without one a
  call that would be asked about is refused with a message the model reads);
- tools the caller describes and runs itself (`tools` a list of OpenAI function specs, as /v1 gets them):
  one round; its calls come back as ToolCall events and the turn ends with finish_reason "tool_calls".

A forced choice ("required" or a named tool) holds for the first round; later rounds are "auto", and the
last round offers no tools at all, so the turn always ends with an answer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..backends.base import Delta, Finished, Message, ToolCall, ToolResult
from ..errors import InvalidInput
from ..params import SamplingParams
from .approval import ApprovalPolicy, refusal
from .formats import FORMATS
from .parse import ToolCall as ParsedCall
from .parse import ToolCallParser

if TYPE_CHECKING:
    from ..chat import StreamEvent
    from ..runtime import Runtime

Answer = Literal["allow", "always", "deny"]
Approve = Callable[[ToolCall], Answer]
Choice = str | dict[str, Any]
READY_WAIT_S = 10.0  # a request for tools waits this long for servers that are still starting


@dataclass
class ToolOffer:
    specs: list[dict[str, Any]]  # OpenAI function specs: {"type": "function", "function": {...}}
    choice: Choice = "auto"
    policy: ApprovalPolicy | None = None  # None: the caller runs the calls (/v1)
    approve: Approve | None = None
    max_rounds: int = 5
    timeout: float = 30.0
    parallel: bool = False

    @property
    def runs_calls(self) -> bool:
        return self.policy is not None


def prepare_tools(
    rt: Runtime,
    tools: Any,
    tool_choice: Any = None,
    tool_approval: Any = None,
    approve: Approve | None = None,
    *,
    parallel: bool = False,
) -> ToolOffer | None:
    """The tools a turn offers, checked; None when it offers none (a plain turn)."""
    choice = _check_choice(tool_choice)
    if tools is None or tools == "none" or choice == "none":
        return None
    if isinstance(tools, list) and all(isinstance(t, dict) for t in tools):
        specs = [_check_spec(t, i) for i, t in enumerate(tools)]
        offer = ToolOffer(specs, choice, parallel=parallel)
    else:
        infos = _mcp_tools(rt, tools)
        settings = rt.settings.tools
        policy = ApprovalPolicy.from_setting(
            settings.approval if tool_approval is None else tool_approval, interactive=approve is not None
        )
        offer = ToolOffer(
            [i.to_openai() for i in infos],
            choice,
            policy,
            approve,
            max_rounds=settings.max_rounds,
            timeout=settings.call_timeout_s,
            parallel=parallel,
        )
    _check_named(offer)
    return offer if offer.specs else None


def _mcp_tools(rt: Runtime, tools: Any) -> list[Any]:
    if tools != "auto" and not (isinstance(tools, list) and all(isinstance(t, str) for t in tools)):
        raise InvalidInput(
            'tools must be "auto", "none" or a list of tool names (or, on /v1, OpenAI function specs).',
            field="tools",
        )
    hub = rt.tools
    hub.wait_ready(READY_WAIT_S)
    infos = hub.list_tools(enabled_only=True)
    if tools == "auto":
        return infos
    known = {i.name: i for i in infos}
    unknown = [t for t in tools if t not in known]
    if unknown:
        have = ", ".join(known) or "none (see GET /api/tools/servers)"
        raise InvalidInput(
            f"No enabled tool is named {', '.join(repr(u) for u in unknown)}. The tools: {have}.",
            field="tools",
        )
    return [known[t] for t in dict.fromkeys(tools)]


def _check_choice(choice: Any) -> Choice:
    if choice is None:
        return "auto"
    if choice in ("auto", "none", "required"):
        return str(choice)
    if isinstance(choice, dict) and isinstance((choice.get("function") or {}).get("name"), str):
        return {"type": "function", "function": {"name": choice["function"]["name"]}}
    raise InvalidInput(
        'tool_choice must be "auto", "none", "required" or {"type": "function", "function": {"name": ...}}.',
        field="tool_choice",
    )


def _check_spec(spec: dict[str, Any], i: int) -> dict[str, Any]:
    fn = spec.get("function") if spec.get("type", "function") == "function" else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise InvalidInput(
            f'tools[{i}] must be {{"type": "function", "function": {{"name", "parameters"}}}}.',
            field=f"tools.{i}",
        )
    params = fn.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise InvalidInput(
            f"tools[{i}].function.parameters must be a JSON schema object.", field=f"tools.{i}"
        )
    return {"type": "function", "function": fn}


def _check_named(offer: ToolOffer) -> None:
    if isinstance(offer.choice, dict):
        name = offer.choice["function"]["name"]
        names = ", ".join(s["function"]["name"] for s in offer.specs) or "none"
        if name not in [s["function"]["name"] for s in offer.specs]:
            raise InvalidInput(
                f"tool_choice names '{name}', which is not one of the tools offered ({names}).",
                field="tool_choice",
            )
    elif offer.choice == "required" and not offer.specs:
        raise InvalidInput('tool_choice is "required" but no tool is offered.', field="tool_choice")


# --- the loop ------------------------------------------------------------------------------------------

OnRound = Callable[[Message, list[Message]], None]


def run_tools(
    rt: Runtime,
    offer: ToolOffer,
    messages: list[Message],
    params: SamplingParams,
    cancel: threading.Event,
    on_round: OnRound | None = None,
    *,
    label: str | None = None,
) -> Iterator[StreamEvent]:
    """The turn's events, round after round. `on_round(assistant, tool_messages)` learns each round's
    messages as they enter the history (a session keeps them). `label` names the chat (Engine.stream)."""
    messages = list(messages)
    fmt = _call_format(rt)
    rounds = offer.max_rounds if offer.runs_calls else 1
    for n in range(rounds):
        choice: Choice = offer.choice if n == 0 else "auto"
        if offer.runs_calls and n == rounds - 1 and n > 0:
            choice = "none"  # the last round answers
        calls: list[ParsedCall] = []
        text: list[str] = []
        done: Finished | None = None
        for event in _round(rt, offer, messages, params, cancel, choice, fmt, calls, label):
            if isinstance(event, Finished):
                done = event
            else:
                if isinstance(event, Delta):
                    text.append(event.text)
                yield event
        if done is None:
            return
        if not calls or done.finish_reason == "cancelled":
            yield done
            return
        if not offer.runs_calls:  # the caller runs them
            for call in calls:
                yield ToolCall(call.id, call.name, call.arguments)
            yield Finished("tool_calls", done.metrics)
            return
        prefill = ""
        if messages and messages[-1]["role"] == "assistant":
            prefill = str(messages.pop()["content"])  # a reply prefix the model continued
        assistant: Message = {
            "role": "assistant",
            "content": prefill + "".join(text),
            "tool_calls": [c.to_openai() for c in calls],
        }
        results: list[Message] = []
        for call in calls:
            yield ToolCall(call.id, call.name, call.arguments)
            result = _run_call(rt, offer, call, cancel)
            yield result
            results.append(
                {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": result.content}
            )
        messages += [assistant, *results]
        if on_round is not None:
            on_round(assistant, results)
        if cancel.is_set():
            yield Finished("cancelled", done.metrics)
            return


def _round(
    rt: Runtime,
    offer: ToolOffer,
    messages: list[Message],
    params: SamplingParams,
    cancel: threading.Event,
    choice: Choice,
    fmt: str | None,
    calls: list[ParsedCall],
    label: str | None = None,
) -> Iterator[StreamEvent]:
    """One generation: text as Delta events, calls collected into `calls`, Finished last."""
    parser = ToolCallParser(FORMATS[fmt]) if fmt and choice != "none" else None
    specs = offer.specs if choice != "none" else None
    stream = rt.engine.stream(
        messages,
        params,
        cancel,
        tools=specs,
        tool_choice=choice,
        parallel_tool_calls=offer.parallel,
        label=label,
    )
    for event in stream:
        if isinstance(event, Delta) and parser is not None:
            yield from _pieces(parser.feed(event.text), calls)
        elif isinstance(event, ToolCall):  # a remote backend's structured call
            calls.append(ParsedCall(event.name, dict(event.arguments), id=event.id))
        elif isinstance(event, Finished):
            if parser is not None:
                yield from _pieces(parser.flush(), calls)
            yield event
        else:
            yield event


def _pieces(pieces: list[str | ParsedCall], calls: list[ParsedCall]) -> Iterator[Delta]:
    for piece in pieces:
        if isinstance(piece, str):
            if piece:
                yield Delta(piece)
        else:
            calls.append(piece)


def _call_format(rt: Runtime) -> str | None:
    """The format the model writes calls in; None for a backend that returns them structured (remote)."""
    backend = rt.engine.backend
    name = backend.model_info().get("tool_call_format") if backend is not None else None
    return name if name in FORMATS else None


def _run_call(rt: Runtime, offer: ToolOffer, call: ParsedCall, cancel: threading.Event) -> ToolResult:
    """Run one call if the policy (or the person asked) allows it; every outcome is a result to read."""
    if call.error:
        why = f"The call to '{call.name}' could not be read: {call.error}. It did not run."
        return ToolResult(call.id, why, is_error=True)
    if cancel.is_set():
        return ToolResult(call.id, "The user stopped the reply before this call ran.", is_error=True)
    assert offer.policy is not None
    decision = offer.policy.decide(call.name)
    if decision == "ask":
        answer: Answer = "deny"
        if offer.approve is not None:
            answer = offer.approve(ToolCall(call.id, call.name, call.arguments))
        if not offer.policy.answer(call.name, answer):
            return ToolResult(call.id, refusal(call.name), is_error=True)
    elif decision == "deny":
        asked = call.name in offer.policy.denied
        return ToolResult(call.id, refusal(call.name, asked=asked), is_error=True)
    result = rt.tools.call(call.name, call.arguments, timeout=offer.timeout)
    return ToolResult(call.id, result.content, result.is_error, round(result.ms, 1))
