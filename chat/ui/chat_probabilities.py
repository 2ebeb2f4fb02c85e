"""The Chat tab's "show probabilities" view, like the OpenAI Playground's: each token of the last reply coloured by
the probability it was drawn with; a click on one shows the model's likeliest tokens at that step, and the reply can
continue from one of them instead. The tokens and their alternatives come from the reply stream's `choices`
(chat.llm.sampling.TokenChoice): the local sampler records them, a server sends them as `top_logprobs`."""
from __future__ import annotations

import json

import gradio as gr

from chat.llm.sampling import TokenChoice
from chat.ui.i18n import tr

ALTERNATIVES = 5  # the likeliest tokens shown for each step (OpenAI's API allows up to 20; the Playground shows 5)
# Buckets of the probability a token was drawn with, the colours of a traffic light.
BUCKETS = ((0.9, "≥ 90%"), (0.5, "50–90%"), (0.2, "20–50%"), (0.0, "< 20%"))
COLORS = {"≥ 90%": "#bbf7d0", "50–90%": "#fef9c3", "20–50%": "#fed7aa", "< 20%": "#fca5a5"}


def bucket(prob: float) -> str:
    return next(name for floor, name in BUCKETS if prob >= floor)


def shown(text: str) -> str:
    """A token as a quoted string, so its spaces and newlines can be seen: " Paris" → '" Paris"'."""
    return json.dumps(text, ensure_ascii=False)


def record(choices: list[TokenChoice]) -> list[dict]:
    """The reply's choices as the view keeps them in the session (a gr.State: plain, JSON-able values)."""
    return [{"id": c.token_id, "text": c.text, "prob": c.prob, "model_prob": c.model_prob,
             "alternatives": [list(a) for a in c.alternatives]} for c in choices]


def spans(tokens: list[dict]) -> list[tuple[str, str]]:
    """The reply as HighlightedText spans, one per token, each in its probability's bucket."""
    return [(t["text"] or "�", bucket(t["prob"])) for t in tokens]


def detail(tokens: list[dict], index: int, request: gr.Request | None):
    """What a click on token `index` shows: the model's likeliest tokens there (a gr.Label), a line on how this one
    was drawn, and the alternatives to continue with (a Radio; the first one that is not the drawn token chosen)."""
    if not tokens or not 0 <= index < len(tokens):
        return gr.update(value=None), "", gr.update(choices=[], value=None), None
    token = tokens[index]
    alternatives = token["alternatives"]
    bars = {f"{shown(text)}": prob for _, text, prob in alternatives}
    if shown(token["text"]) not in bars:  # drawn from outside the shown top few: it is shown too
        bars[shown(token["text"])] = token["model_prob"]
    rank = next((i + 1 for i, (_, text, _) in enumerate(alternatives) if text == token["text"]), None)
    line = tr(request, "chat.prob_picked" if token.get("picked") else "chat.prob_detail", n=index + 1,
              token=shown(token["text"]), model=token["model_prob"], drawn=token["prob"],
              rank=rank if rank else f"> {len(alternatives)}")
    others = [(f"{shown(text)} · {prob:.1%}", i) for i, (_, text, prob) in enumerate(alternatives)]
    first_other = next((i for i, (_, text, _) in enumerate(alternatives) if text != token["text"]), None)
    return (gr.update(value=bars, num_top_classes=len(bars)), line, gr.update(choices=others, value=first_other),
            index)


def prefix(tokens: list[dict], index: int | None, alternative: int | None, request: gr.Request | None) -> list[int]:
    """The token ids of a reply continued from token `index` with its `alternative`-th likeliest token instead. A
    gr.Error when there is nothing to continue from, or the tokens came from a server (it sends text, not ids)."""
    if not tokens or index is None or not 0 <= index < len(tokens):
        raise gr.Error(tr(request, "chat.prob_pick_token"))
    alternatives = tokens[index]["alternatives"]
    if alternative is None or not 0 <= int(alternative) < len(alternatives):
        raise gr.Error(tr(request, "chat.prob_pick_alternative"))
    ids = [t["id"] for t in tokens[:index]] + [alternatives[int(alternative)][0]]
    if any(i is None for i in ids):
        raise gr.Error(tr(request, "chat.prob_server_prefix"))
    return ids
