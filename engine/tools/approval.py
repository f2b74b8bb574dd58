"""Whether a tool call may run: `ask` (a person says yes or no), `auto`, or a list of tools that run unasked.

The API and anything else that cannot wait for a person is `interactive=False`: a call that would be asked
about is refused instead. A refused call goes back to the model as a tool result it can read (`refusal`),
so the turn continues with an answer rather than stopping.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import InvalidInput

Decision = Literal["allow", "ask", "deny"]
Answer = Literal["allow", "always", "deny"]  # the approval prompt's three buttons


@dataclass
class ApprovalPolicy:
    mode: Literal["ask", "auto"] = "ask"
    allowed: set[str] = field(default_factory=set)  # tools that run without asking
    interactive: bool = True  # a person can be asked (the UI, the terminal); the API never waits
    denied: set[str] = field(default_factory=set)  # said no to in this turn: not asked again

    @classmethod
    def from_setting(cls, value: Any, *, interactive: bool = True) -> ApprovalPolicy:
        """From `tools.approval` or a request's `tool_approval`: "ask", "auto" or a list of tool names."""
        if value in ("ask", "auto"):
            return cls(value, interactive=interactive)
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return cls("ask", set(value), interactive=interactive)
        raise InvalidInput(
            'tool_approval must be "auto", "ask" or a list of tool names.', field="tool_approval"
        )

    def decide(self, tool: str) -> Decision:
        if self.mode == "auto" or tool in self.allowed:
            return "allow"
        return "ask" if self.interactive and tool not in self.denied else "deny"

    def answer(self, tool: str, answer: Answer) -> bool:
        """A person's answer to the approval prompt; "always" also lets later calls of `tool` through."""
        if answer == "always":
            self.allowed.add(tool)
        elif answer == "deny":
            self.denied.add(tool)  # a model that calls it again in this turn is refused unasked
        return answer in ("allow", "always")

    def allow(self, tools: Iterable[str]) -> None:
        self.allowed.update(tools)


def refusal(tool: str, *, asked: bool = True) -> str:
    """The tool result a model reads when its call was not allowed."""
    who = (
        "The user did not allow" if asked else "Tool calls need the user's approval, so this one was refused:"
    )
    return (
        f"{who} the call to '{tool}'. It did not run. Do not call it again; answer with what you know, "
        "or tell the user you could not use the tool."
    )
