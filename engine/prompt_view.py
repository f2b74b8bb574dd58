"""The prompt as the model sees it: the chat template applied, and its length in tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .backends.base import Message
from .chat import fit_messages, validate_messages
from .errors import InvalidInput
from .params import SamplingParams
from .template_text import render_text

if TYPE_CHECKING:
    from .chat_prompt import PromptPlan
    from .runtime import Runtime
    from .session_formats import Session


@dataclass
class Draft:
    """The prompt a turn would send, built and not sent: the messages for the model, the sampling, and the
    plan behind them (None: the messages go to the model as they are)."""

    plan: PromptPlan | None
    messages: list[Message]
    params: SamplingParams

    @property
    def lore(self) -> list[dict[str, Any]]:
        """The lore entries that fired: book, uid, comment, why and where."""
        return self.plan.lore if self.plan is not None else []


def draft(
    rt: Runtime,
    messages: list[Message],
    *,
    session: Session | str | None,
    user_text: str | None = None,
    preset: Any = None,
    params: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
    characters: list[str] | None = None,
    speaker: str | None = None,
    group: dict[str, Any] | None = None,
    mode: str = "normal",
) -> Draft:
    """See `Runtime.draft`."""
    from .conversation import session_draft, stateless_plan
    from .turn import TurnRequest, group_plan

    if characters and session not in (None, "new"):
        raise InvalidInput(
            "`characters` starts a group chat; an open chat keeps its own.", field="characters"
        )
    if session is None or session == "new":
        msgs = validate_messages(messages) if messages or session is None else []
        if characters:
            r = TurnRequest(
                messages=msgs,
                mode="impersonate" if mode == "impersonate" else "send",
                params=params,
                options=options,
                speaker=speaker,
                characters=characters,
                group=group,
            )
            group_draft, sampling = group_plan(rt, msgs, r)
            return Draft(group_draft, group_draft.messages, sampling)
        plan, prompt, sampling = stateless_plan(
            rt, msgs, preset=preset, options=options, params=params, mode=mode, always=session == "new"
        )
        return Draft(plan, prompt, sampling)
    if isinstance(session, str):
        session = rt.sessions.get(session)
    plan, sampling = session_draft(
        rt, session, user_text=user_text, options=options, params=params, mode=mode, speaker=speaker
    )
    return Draft(plan, plan.messages, sampling)


def rendered_prompt(backend: Any, messages: list[Message]) -> tuple[str, int | None]:
    """(templated prompt text, prompt tokens).

    A backend that can render its template gives the exact text. A local model's text is rendered here
    from its GGUF file's chat template, and its tokens counted by the backend. A remote server gets a
    plain transcript and the backend's own token count, if it has one.
    """
    own = getattr(backend, "render_text", None)
    if callable(own):
        text, n = own(messages)
        return str(text), n
    tokens = backend.count_tokens(messages) if backend is not None else None
    path = getattr(backend, "path", None)
    text = render_text(path, messages) if path else None
    if text is None:
        text = "".join(f"[{m['role']}]\n{m['content']}\n\n" for m in messages)
    return text, tokens


def preview(
    rt: Runtime, messages: list[Message], plan: PromptPlan | None, sampling: SamplingParams
) -> dict[str, Any]:
    """What a turn would send, generating nothing: the messages after context fitting, the templated
    prompt, its tokens, and which lore fired, why and where."""
    backend = rt.engine.backend
    dropped = 0
    n_ctx = backend.context_size() if backend is not None else None
    if backend is not None and n_ctx:
        budget = n_ctx - min(sampling.max_tokens, n_ctx // 2)
        messages, dropped = fit_messages(
            messages, backend.count_tokens, budget, anchors=rt.engine.cuts, headroom=budget // 4
        )
    text, tokens = rendered_prompt(backend, messages)
    out: dict[str, Any] = {
        "messages": messages,
        "prompt": text,
        "prompt_tokens": tokens,
        "lore": plan.lore if plan else [],
        "dropped_messages": dropped,
    }
    if plan is not None:
        out["persona"] = plan.persona.model_dump(exclude={"avatar"})
        out["lore_budget"] = {"tokens": plan.activation.tokens, "budget": plan.activation.budget}
        out["warnings"] = plan.activation.warnings
    return out
