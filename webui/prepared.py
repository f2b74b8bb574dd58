"""Streaming handlers that postprocess their own updates, in the thread that already runs them.

Gradio postprocesses each output of each streamed update in a worker thread of its own: for a turn's
update of the chat, the session id and the status line that is three hops through anyio on the event
loop, most of what the update costs the loop. A handler wrapped by `prepared` postprocesses its updates
itself, in the thread Gradio runs the generator in, and its event is registered with postprocess=False.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any

from gradio.blocks import Block
from gradio.components import Component
from gradio.data_classes import GradioModel, GradioRootModel
from gradio.utils import is_prop_update


def prepared(
    fn: Callable[..., Generator[Any, None, None]], outputs: Sequence[Component]
) -> Callable[..., Iterator[Any]]:
    """`fn`, a generator handler, with each update postprocessed for `outputs` as Gradio would.

    Register the result with postprocess=False. Closing it (Stop, the page going away) closes `fn`."""

    @functools.wraps(fn)  # Gradio reads the parameters (gr.Request) through __wrapped__
    def run(*args: Any, **kwargs: Any) -> Iterator[Any]:
        updates = fn(*args, **kwargs)
        try:
            for update in updates:
                yield prepare(update, outputs)
        finally:
            updates.close()

    return run


def prepare(update: Any, outputs: Sequence[Component]) -> Any:
    """One update of a handler, postprocessed: a value per output (a tuple or list), or one skip for all."""
    if len(outputs) == 1:
        return value_of(update, outputs[0])
    if is_prop_update(update):  # a single gr.skip() / gr.update() for every output
        return update
    if len(update) != len(outputs):
        raise ValueError(f"{len(update)} values for {len(outputs)} outputs")
    return tuple(value_of(value, block) for value, block in zip(update, outputs, strict=True))


def value_of(value: Any, block: Component) -> Any:
    """What Gradio would send the page for `value` in `block`."""
    if isinstance(value, Block):  # a component as an update: Gradio postprocesses what it carries
        raise TypeError("return gr.update(...) from a prepared handler, not a component")
    if is_prop_update(value):
        if "value" not in value:
            return value
        return {**value, "value": serialized(block.postprocess(value["value"]))}
    return serialized(block.postprocess(value))


def serialized(value: Any) -> Any:
    return value.model_dump() if isinstance(value, GradioModel | GradioRootModel) else value
