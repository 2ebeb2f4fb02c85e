"""The Tiny GPT tab's last step, "which stage did this?": the same questions answered by each stage side by side, each
later stage's tokens coloured by their rank under the stage before (URIAL's unshifted / marginal / shifted); a blind
comparison of two consecutive stages with the win rate's 95% interval; and a chat with any stage."""
from __future__ import annotations

import html

import gradio as gr

from chat.llm.prompt import flatten_content
from chat.tinygpt import sample, stages
from chat.tinygpt.recipe import Recipe
from chat.training.compare import shift_kind
from chat.training.run import TrainingError
from chat.ui.i18n import tr
from chat.ui.tinygpt_views import ASKS, explain, html_table, read_questions

SHIFT_COLORS = {"unshifted": "transparent", "marginal": "#fde68a", "shifted": "#fca5a5"}


def _tokens_html(tokens: list[tuple[str, int]], before: str, request) -> str:
    spans = []
    for text, rank in tokens:
        kind = shift_kind(rank)
        shown = html.escape(text).replace("\n", "↵")
        title = html.escape(tr(request, "tinygpt.rank_title", rank=rank, stage=before), quote=True)
        spans.append(f'<span class="tinygpt-token" data-rank="{rank}" data-kind="{kind}" title="{title}" '
                     f'style="background:{SHIFT_COLORS[kind]};border-radius:3px">{shown}</span>')
    return "".join(spans)


def compare_html(rows: list[dict], names: list[str], request: gr.Request | None) -> str:
    if not rows:
        return f'<p id="tinygpt-compare-empty">{html.escape(tr(request, "tinygpt.compare_empty"))}</p>'
    head = [html.escape(tr(request, "tinygpt.col_question"))] + [html.escape(tr(request, f"tinygpt.stage_{n}"))
                                                                 for n in names]
    cells = []
    for row in rows:
        line = [f"<b>{html.escape(row['question'])}</b>"]
        for i, name in enumerate(names):
            if name in row["tokens"]:
                shares = row["shares"][name]
                note = tr(request, "tinygpt.shares", shifted=shares["shifted"], marginal=shares["marginal"])
                line.append(_tokens_html(row["tokens"][name], tr(request, f"tinygpt.stage_{names[i - 1]}"), request)
                            + f'<br><small style="opacity:.75">{html.escape(note)}</small>')
            else:
                line.append(html.escape(row["answers"][name] or "∅"))
        cells.append(line)
    totals = " · ".join(
        tr(request, "tinygpt.shares_total", stage=tr(request, f"tinygpt.stage_{name}"),
           shifted=stages.overall_shares(rows, name)["shifted"]) for name in names[1:])
    legend = " ".join(f'<span style="background:{SHIFT_COLORS[k]};border-radius:3px;padding:0 4px">'
                      f'{html.escape(tr(request, f"tinygpt.kind_{k}"))}</span>' for k in SHIFT_COLORS)
    return (f'<div id="tinygpt-compare"><p>{legend}</p>' + html_table(head, cells, "tinygpt-compare-table",
                                                                 "tinygpt-compare-row")
            + f'<p id="tinygpt-compare-totals"><b>{html.escape(totals)}</b></p></div>')


def compare_stages(questions, recipe: Recipe | None, request: gr.Request):
    recipe = recipe if recipe is not None else Recipe()
    asks = read_questions(questions, request) or stages.held_out_questions(count=ASKS)
    found = recipe.stages()
    if len(found) < 2:
        raise explain(request, TrainingError("missing_stage", "", stage="sft" if found else "pretrain"))
    try:
        rows = stages.side_by_side(found, asks)
    except TrainingError as error:
        raise explain(request, error) from None
    return compare_html(rows, [s.name for s in found], request)


def blind_html(recipe: Recipe | None, request: gr.Request | None) -> tuple[str, str, str, str]:
    """(the pair to judge, as Markdown; answer A; answer B; the tally so far, as HTML)."""
    test = recipe.blind if recipe is not None else None
    if test is None:
        return "", "", "", f'<p id="tinygpt-blind-result">{html.escape(tr(request, "tinygpt.blind_idle"))}</p>'
    result = test.result()
    tally = tr(request, "tinygpt.blind_result", later=tr(request, f"tinygpt.stage_{test.later}"),
               earlier=tr(request, f"tinygpt.stage_{test.earlier}"), wins=result["later_wins"],
               votes=result["votes"], rate=result["win_rate"], low=result["low"], high=result["high"]) \
        if result["votes"] else tr(request, "tinygpt.blind_none")
    if result["judged"]:
        tally += " " + tr(request, "tinygpt.blind_judge", rate=result["judge_win_rate"])
    tally_html = (f'<p id="tinygpt-blind-result" data-votes="{result["votes"]}">{html.escape(tally)}</p>')
    current = test.current()
    if current is None:
        return tr(request, "tinygpt.blind_done"), "", "", tally_html
    index, pair = current
    a, b = pair.shown
    return (tr(request, "tinygpt.blind_question", n=index + 1, total=len(test.pairs), question=pair.prompt),
            a or "∅", b or "∅", tally_html)


def start_blind(pair: str, recipe: Recipe | None, request: gr.Request):
    recipe = recipe if recipe is not None else Recipe()
    earlier, later = pair.split("-")
    try:
        recipe.start_blind(earlier, later, stages.held_out_questions(count=12))
    except TrainingError as error:
        raise explain(request, error) from None
    return (recipe, *blind_html(recipe, request))


def vote(first: bool):
    def pick(recipe: Recipe | None, request: gr.Request):
        current = recipe.blind.current() if recipe is not None and recipe.blind is not None else None
        if current is None:
            raise gr.Error(tr(request, "tinygpt.error_no_blind"))
        recipe.blind.vote(current[0], first)
        return (recipe, *blind_html(recipe, request))

    return pick


def _exchanges(history) -> list[tuple[str, str]]:
    """(user, bot) pairs of the chat so far."""
    pairs, user = [], None
    for message in history or []:
        role = message.get("role") if isinstance(message, dict) else getattr(message, "role", None)
        text = flatten_content(message.get("content") if isinstance(message, dict) else getattr(message, "content", ""))
        if role == "user":
            user = text
        elif role == "assistant" and user is not None:
            pairs.append((user, text))
            user = None
    return pairs


def chat(message: str, history, temperature, stage_name, recipe: Recipe | None, request: gr.Request):
    """A stage's reply, prompted in the training format (`User: ...\\nBot:`)."""
    history = list(history or [])
    if recipe is not None and recipe.training():
        gr.Warning(tr(request, "tinygpt.error_busy"))
        return history, message
    stage = recipe.stage(stage_name) if recipe is not None else None
    if stage is None:
        gr.Warning(tr(request, "tinygpt.error_no_model", stage=tr(request, f"tinygpt.stage_{stage_name}")))
        return history, message
    if not (message or "").strip():
        return history, ""
    try:
        stages.check_question(message)
        answer = sample.reply(stage.model, stage.tokenizer, _exchanges(history), message, float(temperature))
    except TrainingError as error:
        raise explain(request, error) from None
    answer = answer or tr(request, "tinygpt.empty_reply")
    return history + [{"role": "user", "content": message}, {"role": "assistant", "content": answer}], ""
