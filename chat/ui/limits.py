"""The server's limits as the UI applies them: heavy events join their kind's concurrency group (chat.budget), and a
busy server, a bad value or an unreadable file becomes a clear gr.Error in the user's language."""
from __future__ import annotations

import gradio as gr
from gradio.context import get_blocks_context

from chat import budget
from chat.llm.params import LIMITS
from chat.ui.i18n import tr

STEPS = {"temperature": 0.05, "top_p": 0.01, "top_k": 1, "max_new_tokens": 1, "repetition_penalty": 0.01}


def heavy(kind: str) -> dict:
    """Keyword arguments for an event of this kind: it joins the kind's queue group (see chat.budget)."""
    return budget.queue_options(kind)


def busy(request: gr.Request | None, error: budget.BusyError) -> gr.Error:
    if getattr(error, "place", None) is not None:  # the chat engine's line (chat.serving.Busy)
        return gr.Error(tr(request, "serving.busy", place=error.place, running=error.running))
    return gr.Error(tr(request, "app.busy", limit=error.limit, kind=error.kind))


def events_since(first_id: int) -> list:
    """The events declared in the app being built since `first_id` (see next_event_id)."""
    return [fn for fn_id, fn in get_blocks_context().fns.items() if fn_id >= first_id]


def next_event_id() -> int:
    return get_blocks_context().fn_id


def join(kind: str, events: list) -> None:
    """Put events a component declared itself (ChatInterface's submit, retry, edit, example and API events) into
    the kind's group, so they share its limit with everything else of the kind."""
    for fn in events:
        fn.concurrency_id = kind
        fn.concurrency_limit = budget.limit(kind)


def setting(name: str, value, **options) -> gr.Slider:
    """A slider for a generation setting, its range the one the service checks (chat.llm.params.LIMITS)."""
    low, high = LIMITS[name]
    return gr.Slider(low, high, value, step=STEPS[name], **options)
