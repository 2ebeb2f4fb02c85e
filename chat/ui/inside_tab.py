"""The Inside-the-model tab: every head's attention (a clickable thumbnail grid, then one head as lines and as a
heatmap), one head step by step with the real numbers, heads that do a job, and the logit lens. The drawings are
inside_views.py's.
"""
from __future__ import annotations

from typing import Literal

import gradio as gr
import pandas as pd

from chat.llm import inside, models
from chat.settings import ModelSettings, Settings
from chat.ui import limits
from chat.ui.handlers import bind
from chat.ui.i18n import T, tr
from chat.ui.inside_views import (CAPTION_CSS, GRID_CSS, GRID_HTML, GRID_JS, LENS_CSS, LINES_CSS, LINES_JS, STEPS_CSS,
                                  _esc, grid_value, heatmap_svg, lens_html, lines_svg, steps_html)

EXAMPLES = [
    ["When Mary and John went to the store, John gave a drink to"],
    ["The cat sat on the mat. The dog sat on the rug. The cat sat on the"],
    ["我爱北京天安门。我爱北京"],
    ["def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return"],
    ["The capital of France is Paris. The capital of Germany is"],
]
DEFAULT_LAYER, DEFAULT_HEAD = 18, 6  # an induction head of SmolLM2-135M (score 0.87 on the induction probe)
PROBE_ORDER = ("induction", "previous_token", "pronoun")


# --- handlers -------------------------------------------------------------------------------------------------------


def _model_ready(model: ModelSettings) -> bool:
    return models.is_loaded(model) and models.get_model(model).transformers_model.done()


def _inspect(text: str, model: ModelSettings, request: gr.Request | None) -> tuple[models.LoadedModel,
                                                                                 inside.Inspection]:
    """The inspection of `text` (cached by chat.inside), every failure as a message in the page's language."""
    if not isinstance(text, str) or not text.strip():
        raise gr.Error(tr(request, "inside.empty"))
    if not _model_ready(model):
        gr.Warning(tr(request, "inside.loading"))
    try:
        loaded = inside.ready_model(model)
        return loaded, inside.inspect_text(text, loaded)
    except inside.ModelStillLoading:
        raise gr.Error(tr(request, "inside.still_loading")) from None
    except inside.ModelBusy:
        raise gr.Error(tr(request, "inside.busy")) from None
    except (inside.InsideError, models.ModelLoadError) as error:
        raise gr.Error(tr(request, "inside.error", error=error)) from None


def _head_views(loaded, inspection, layer, head, hide: bool, request):
    """(title, lines, heatmap, steps) for one head."""
    try:
        layer, head = inside.check_head(loaded, layer, head)
    except inside.InsideError as error:
        raise gr.Error(tr(request, "inside.error", error=error)) from None
    _, heads, kv_heads = inside.shape(loaded.model)
    weights = inside.head_weights(inspection, layer, head, hide)
    steps = inside.head_steps(loaded, inspection, layer, head)
    title = tr(request, "inside.head_title", layer=layer, head=head, kv=steps.kv_head,
               sharing=", ".join(map(str, steps.sharing)),
               sink=float(inside.sink_share(inspection.attention[layer, head])),
               hidden=tr(request, "inside.sink_hidden") if hide else "")
    lines = f'<p class="cap">{_esc(tr(request, "inside.lines"))}</p><div class="lines-box">' \
            f"{lines_svg(inspection.tokens, weights)}</div>"
    heatmap = f'<p class="cap">{_esc(tr(request, "inside.heatmap"))}</p>{heatmap_svg(inspection.tokens, weights)}'
    return title, lines, heatmap, steps_html(steps, heads, kv_heads, request)


def look(text: str, layer: int, head: int, hide: bool, request: gr.Request, model: ModelSettings = ModelSettings()):
    """Inspect the text: the state, status, grid, the selected head's four views, the lens, and the selectors."""
    loaded, inspection = _inspect(text, model, request)
    layers, heads, _ = inside.shape(loaded.model)
    layer, head = min(int(layer), layers - 1), min(int(head), heads - 1)
    total = len(inspection.tokens) + inspection.cut
    if inspection.cut:
        gr.Warning(tr(request, "inside.cut", total=total, shown=len(inspection.tokens)))
    status = tr(request, "inside.status", tokens=len(inspection.tokens), layers=layers, heads=heads,
                total=layers * heads, seconds=inspection.seconds, answer=inspection.answer.label,
                p=inspection.answer.prob)
    if inspection.cut:
        status += " · ⚠️ " + tr(request, "inside.cut", total=total, shown=len(inspection.tokens))
    grid = gr.HTML(value=grid_value(inspection, hide, request), selected=[layer, head])
    views = _head_views(loaded, inspection, layer, head, hide, request)
    selectors = gr.Slider(maximum=layers - 1, value=layer), gr.Radio([(str(h), h) for h in range(heads)], value=head)
    return text, status, grid, *views, lens_html(inspection, request), *selectors


def open_tab(inspected: str | None, text: str, layer: int, head: int, hide: bool, request: gr.Request,
             model: ModelSettings = ModelSettings()):
    """Opening the tab inspects the text shown, unless there is an inspection already."""
    if inspected is not None:
        return (gr.skip(),) * 10
    return look(text, layer, head, hide, request, model)


def show_head(inspected: str | None, layer: int, head: int, hide: bool, request: gr.Request,
              model: ModelSettings = ModelSettings()):
    """A head picked with the selectors: the grid's outline and the head's views."""
    if inspected is None:
        raise gr.Error(tr(request, "inside.no_inspection"))
    loaded, inspection = _inspect(inspected, model, request)
    return gr.HTML(selected=[int(layer), int(head)]), *_head_views(loaded, inspection, layer, head, hide, request)


def open_head(inspected: str | None, hide: bool, evt: gr.EventData, request: gr.Request, model: ModelSettings = ModelSettings()):
    """A thumbnail clicked in the grid: the selectors follow, and the head's views."""
    layer, head = int(evt.layer), int(evt.head)
    return layer, head, *show_head(inspected, layer, head, hide, request, model)


def toggle_sink(inspected: str | None, layer: int, head: int, hide: bool, request: gr.Request,
                model: ModelSettings = ModelSettings()):
    """Hiding token 0 or showing it again redraws every view that shows weights."""
    if inspected is None:
        return (gr.skip(),) * 5
    loaded, inspection = _inspect(inspected, model, request)
    grid = gr.HTML(value=grid_value(inspection, hide, request), selected=[int(layer), int(head)])
    return grid, *_head_views(loaded, inspection, layer, head, hide, request)


def run_probe(name: str, model: ModelSettings):
    def handler(request: gr.Request):
        if not _model_ready(model):
            gr.Warning(tr(request, "inside.loading"))
        try:
            result = inside.head_scores(name, inside.ready_model(model))
        except inside.ModelStillLoading:
            raise gr.Error(tr(request, "inside.still_loading")) from None
        except inside.ModelBusy:
            raise gr.Error(tr(request, "inside.busy")) from None
        except models.ModelLoadError as error:
            raise gr.Error(tr(request, "inside.error", error=error)) from None
        probe = inside.PROBES[name]
        job = tr(request, f"inside.job_{name}")
        table = pd.DataFrame({
            tr(request, "inside.col_rank"): range(1, len(result.ranked) + 1),
            tr(request, "inside.col_layer"): [h.layer for h in result.ranked],
            tr(request, "inside.col_head"): [h.head for h in result.ranked],
            tr(request, "inside.col_score"): [round(h.score, 3) for h in result.ranked],
            tr(request, "inside.col_job"): [job if h.score >= probe.threshold else "" for h in result.ranked],
        })
        best = result.ranked[0]
        fmt = {"n": inside.INDUCTION_LENGTH} if name == "induction" else {}
        if name == "pronoun":
            fmt = {"n": len(inside.PRONOUN_SENTENCES), "example": inside.PRONOUN_SENTENCES[0][0]}
        note = tr(request, f"inside.explain_{name}", **fmt) + "\n\n" + tr(
            request, "inside.probe_best", layer=best.layer, head=best.head, score=best.score,
            labelled=sum(h.score >= probe.threshold for h in result.ranked), threshold=probe.threshold)
        return note, table
    return handler


def open_ranked_head(inspected: str | None, text: str, hide: bool, evt: gr.SelectData, request: gr.Request,
                     model: ModelSettings = ModelSettings()):
    """A row of a probe's ranking clicked: open that head on the inspected text (or inspect the text box's)."""
    row = evt.row_value
    layer, head = int(row[1]), int(row[2])
    if inspected is None:
        return look(text, layer, head, hide, request, model)
    grid, *views = show_head(inspected, layer, head, hide, request, model)
    return (gr.skip(), gr.skip(), grid, *views, gr.skip(), layer, head)


# --- the API --------------------------------------------------------------------------------------------------------


def _api_call(fn):
    try:
        return fn()
    except (inside.InsideError, inside.ModelStillLoading, inside.ModelBusy, models.ModelLoadError) as error:
        raise gr.Error(str(error)) from None


def attention(text: str, layer: int, head: int, hide_sink: bool = False, model: ModelSettings = ModelSettings()) -> dict:
    """One attention head of the chat model (SmolLM2-135M-Instruct) reading a text: which earlier tokens each token
    looks at.

    Args:
        text: The text to read. At most 64 tokens are used; the rest is cut and "cut" says how many tokens were.
        layer: The layer, from 0 (nearest the input) to 29 (nearest the output).
        head: The query head in that layer, from 0 to 8. Heads 0-2, 3-5 and 6-8 each share one key/value head.
        hide_sink: Leave out token 0, the "attention sink" where most heads park unused attention, and renormalise
            each row over the other tokens.

    Returns:
        {"tokens": the token labels, "ids": their ids, "layer", "head", "kv_head": the key/value head it reads,
        "matrix": T x T weights where row i is how token i spreads its attention over tokens 0..i (each row sums to
        1, zeros above the diagonal; with hide_sink row 0 is all zeros), "sink_share": the mean weight on token 0,
        "hide_sink", "cut": tokens left out}.
    """
    def run():
        loaded = inside.ready_model(model)
        lay, hd = inside.check_head(loaded, layer, head)
        found = inside.inspect_text(text, loaded)
        _, heads, kv_heads = inside.shape(loaded.model)
        weights = inside.head_weights(found, lay, hd, bool(hide_sink))
        return {"tokens": found.tokens, "ids": found.ids, "layer": lay, "head": hd,
                "kv_head": hd // (heads // kv_heads), "matrix": weights.tolist(),
                "sink_share": float(inside.sink_share(found.attention[lay, hd])), "hide_sink": bool(hide_sink),
                "cut": found.cut}
    return _api_call(run)


def logit_lens(text: str, model: ModelSettings = ModelSettings()) -> dict:
    """The logit lens on the chat model (SmolLM2-135M-Instruct): after each of its 30 layers, the 5 tokens it would
    predict next if it stopped there (the running vector at the last token through the final norm and the output
    matrix), with their probabilities. The last layer's guesses are the model's real prediction.

    Args:
        text: The text whose next token is predicted. At most 64 tokens are used; "cut" says how many were left out.

    Returns:
        {"tokens": the token labels, "answer": the model's top next token {"token", "id", "prob"}, "layers": a list of
        {"layer", "top": [{"token", "id", "prob"}, ...] most likely first, "answer_prob": the probability this layer
        gives the final answer}, "cut"}.
    """
    def run():
        found = inside.inspect_text(text, inside.ready_model(model))
        def guess(g: inside.Guess) -> dict:
            return {"token": g.label, "id": g.token_id, "prob": g.prob}

        return {"tokens": found.tokens, "answer": guess(found.answer),
                "layers": [{"layer": row.layer, "top": [guess(g) for g in row.top], "answer_prob": row.answer_prob}
                           for row in found.lens], "cut": found.cut}
    return _api_call(run)


def head_scores(probe: Literal["induction", "previous_token", "pronoun"], model: ModelSettings = ModelSettings()) -> dict:
    """Rank every attention head of the chat model (SmolLM2-135M-Instruct, 30 layers x 9 heads) at one job, measured
    on a fixed test input: "induction" (random tokens repeated: at the second copy, attention on the token that
    followed the current token's first occurrence), "previous_token" (attention on the token just before, in
    ordinary text), "pronoun" (attention from a pronoun to the noun it refers to).

    Args:
        probe: Which job: "induction", "previous_token" or "pronoun".

    Returns:
        {"probe", "job": what a head with a high score does, "threshold": the score from which a head is labelled,
        "heads": all heads, best first, each {"layer", "head", "score": mean attention on the right tokens, 0..1,
        "labelled": score >= threshold}, "examples": the test inputs as text}.
    """
    def run():
        result = inside.head_scores(probe, inside.ready_model(model))
        spec = inside.PROBES[probe]
        return {"probe": probe, "job": spec.job, "threshold": spec.threshold,
                "heads": [{"layer": h.layer, "head": h.head, "score": h.score, "labelled": h.score >= spec.threshold}
                          for h in result.ranked], "examples": result.examples}
    return _api_call(run)


# --- the tab --------------------------------------------------------------------------------------------------------


def _next_token_prompt() -> gr.Textbox | None:
    """The Next-token tab's prompt box, when that tab is built before this one (as app.py does)."""
    root = gr.context.Context.root_block
    blocks = root.blocks.values() if root is not None else []
    return next((b for b in blocks if isinstance(b, gr.Textbox) and b.elem_id == "next-prompt"), None)


def take_text(prompt: str | None):
    return prompt if prompt and prompt.strip() else gr.skip()


def build(settings: Settings) -> None:
    model = settings.model
    with gr.Tab(T("inside.tab"), id="inside") as tab:
        gr.Markdown(T("inside.intro"))
        inspected = gr.State(None)  # the text of the last inspection; the inspection itself is in chat.inside's cache
        with gr.Row():
            with gr.Column(scale=4):
                text = gr.Textbox(EXAMPLES[0][0], label=T("inside.text"), lines=2, elem_id="inside-text")
                gr.Examples(EXAMPLES, inputs=[text])
            with gr.Column(scale=1, min_width=200):
                run = gr.Button(T("inside.run"), variant="primary", elem_id="inside-run")
                next_prompt = _next_token_prompt()
                take = gr.Button(T("inside.take"), elem_id="inside-take", visible=next_prompt is not None)
        status = gr.Markdown(elem_id="inside-status")
        gr.Markdown(T("inside.attention_title"))
        with gr.Row():
            layer = gr.Slider(0, 29, DEFAULT_LAYER, step=1, label=T("inside.layer"), info=T("inside.layer_info"),
                              elem_id="inside-layer")
            head = gr.Radio([(str(h), h) for h in range(9)], value=DEFAULT_HEAD, label=T("inside.head"),
                            info=T("inside.head_info"), elem_id="inside-head")
            hide = gr.Checkbox(True, label=T("inside.hide_sink"), info=T("inside.sink_info"),
                               elem_id="inside-hide-sink")
        gr.Markdown(T("inside.grid_hint"))
        grid = gr.HTML(None, html_template=GRID_HTML, css_template=GRID_CSS, js_on_load=GRID_JS,
                       selected=[DEFAULT_LAYER, DEFAULT_HEAD], elem_id="inside-grid")
        title = gr.Markdown(elem_id="inside-head-title")
        with gr.Row():
            lines = gr.HTML(css_template=LINES_CSS, js_on_load=LINES_JS, elem_id="inside-lines")
            heatmap = gr.HTML(css_template=CAPTION_CSS, js_on_load=None, elem_id="inside-heatmap")
        with gr.Accordion(T("inside.steps_title"), open=True):
            steps = gr.HTML(css_template=STEPS_CSS, js_on_load=None, elem_id="inside-steps")
        gr.Markdown(T("inside.probes_title"))
        gr.Markdown(T("inside.probes_intro"))
        with gr.Row():
            probe_buttons = {name: gr.Button(T(f"inside.probe_{name}"), elem_id=f"inside-probe-{name}")
                             for name in PROBE_ORDER}
        probe_note = gr.Markdown(elem_id="inside-probe-note")
        probe_table = gr.Dataframe(interactive=False, max_height=320, elem_id="inside-probe-table")
        gr.Markdown(T("inside.lens_title"))
        lens = gr.HTML(css_template=LENS_CSS, js_on_load=None, elem_id="inside-lens")

        # passes of the model join the server's "model" group (chat.budget); redrawing a stored pass is light
        common = dict(api_visibility="private", concurrency_id="inside", concurrency_limit=2,
                      show_progress="minimal")
        passes = dict(common, **limits.heavy("model"))
        head_views = [title, lines, heatmap, steps]
        looked = [inspected, status, grid, *head_views, lens, layer, head]
        tab.select(bind(open_tab, model=model), [inspected, text, layer, head, hide], looked, **passes)
        run.click(bind(look, model=model), [text, layer, head, hide], looked, **passes)
        text.submit(bind(look, model=model), [text, layer, head, hide], looked, **passes)
        if next_prompt is not None:
            take.click(take_text, [next_prompt], [text], api_visibility="private", queue=False).then(
                bind(look, model=model), [text, layer, head, hide], looked, **passes)
        layer.input(bind(show_head, model=model), [inspected, layer, head, hide], [grid, *head_views],
                    trigger_mode="always_last", **common)
        head.input(bind(show_head, model=model), [inspected, layer, head, hide], [grid, *head_views], **common)
        hide.input(bind(toggle_sink, model=model), [inspected, layer, head, hide], [grid, *head_views], **common)
        grid.open_head(bind(open_head, model=model), [inspected, hide], [layer, head, grid, *head_views], **common)
        for name, button in probe_buttons.items():
            button.click(run_probe(name, model), None, [probe_note, probe_table], **passes)
        probe_table.select(bind(open_ranked_head, model=model), [inspected, text, hide], looked, **passes)
        gr.api(bind(attention, model=model), api_name="attention", **limits.heavy("model"))
        gr.api(bind(logit_lens, model=model), api_name="logit_lens", **limits.heavy("model"))
        gr.api(bind(head_scores, model=model), api_name="head_scores", **limits.heavy("model"))
