"""What the Inside-the-model tab draws: the thumbnail grid of every head (one <canvas> drawn in the browser with
gr.HTML's js_on_load, from the weights packed as bytes: lower triangles, √weight × 255, ~0.8 MB of base64 for 270
heads at 64 tokens), one head as lines and as a heatmap (SVG built here), one head step by step, and the logit lens.
Plain functions of an inspection (chat.llm.inside) to HTML; the tab's handlers are in inside_tab.py.
"""
from __future__ import annotations

import base64
import html
import math
import time

import gradio as gr
import torch

from chat.llm import inside
from chat.ui.i18n import tr

GRID_CELL = 28  # px per thumbnail


# --- colours and small pieces ---------------------------------------------------------------------------------------


def _blue(weight: float) -> str:
    """White (0) to deep blue (1)."""
    t = min(1.0, max(0.0, weight))
    return f"rgb({255 - round(226 * t)},{255 - round(177 * t)},{255 - round(39 * t)})"


def _diverging(value: float, scale: float) -> str:
    """Blue for negative, white for 0, red for positive, saturating at |value| = scale."""
    t = max(-1.0, min(1.0, value / scale)) if scale else 0.0
    if t >= 0:
        return f"rgb(255,{255 - round(190 * t)},{255 - round(200 * t)})"
    return f"rgb({255 + round(200 * t)},{255 + round(140 * t)},255)"


def _short(label: str, width: int = 12) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


# --- all heads: the thumbnail grid (drawn in the browser) -------------------------------------------------------------


def grid_value(inspection: inside.Inspection, hide: bool, request: gr.Request | None) -> dict:
    """What the grid's canvas draws: every head's lower triangle as bytes (√weight × 255, row by row), base64."""
    weights = inside.hide_sink(inspection.attention) if hide else inspection.attention  # (layers, heads, T, T)
    n = weights.shape[-1]
    rows, cols = torch.tril_indices(n, n)
    packed = (weights[..., rows, cols].clamp(0, 1).sqrt() * 255).round().to(torch.uint8)
    sink = (inside.sink_share(inspection.attention) * 100).round().int().tolist()
    return {"layers": inspection.layers, "heads": inspection.heads, "n": n, "cell": GRID_CELL,
            "data": base64.b64encode(packed.numpy().tobytes()).decode(), "sink": sink,
            "tip": tr(request, "inside.grid_tip", layer="{layer}", head="{head}", sink="{sink}"),
            "axis": [tr(request, "inside.grid_layer"), tr(request, "inside.grid_head")], "stamp": time.time_ns()}


GRID_HTML = '<div class="grid-wrap"><canvas></canvas><div class="sel"></div><div class="tip"></div></div>'
GRID_CSS = """
.grid-wrap { position: relative; overflow-x: auto; padding: 2px; }
canvas { display: block; cursor: pointer; }
.sel { position: absolute; border: 2px solid #dc2626; border-radius: 3px; pointer-events: none; display: none; }
.tip { position: absolute; pointer-events: none; display: none; background: #111827; color: #fff; font-size: 12px;
       padding: 2px 6px; border-radius: 4px; white-space: nowrap; z-index: 5; }
"""
GRID_JS = """
const wrap = element.querySelector('.grid-wrap');
const canvas = element.querySelector('canvas');
const sel = element.querySelector('.sel');
const tip = element.querySelector('.tip');
const GAP = 3, LEFT = 34, TOP = 34;
let shape = null;

function draw() {
  const v = props.value;
  if (!v || !v.data) { canvas.width = 0; canvas.height = 0; shape = null; sel.style.display = 'none'; return; }
  const t0 = performance.now();
  const n = v.n, L = v.layers, H = v.heads, cell = v.cell;
  const raw = atob(v.data);
  const tri = n * (n + 1) / 2;
  const off = document.createElement('canvas');
  off.width = L * n; off.height = H * n;
  const octx = off.getContext('2d');
  const img = octx.createImageData(off.width, off.height);
  const px = img.data;
  for (let l = 0; l < L; l++) for (let h = 0; h < H; h++) {
    const base = (l * H + h) * tri;
    for (let i = 0; i < n; i++) {
      const row = base + i * (i + 1) / 2;
      let p = ((h * n + i) * off.width + l * n) * 4;
      for (let j = 0; j < n; j++, p += 4) {
        if (j > i) { px[p] = 241; px[p + 1] = 245; px[p + 2] = 249; }
        else {
          const t = raw.charCodeAt(row + j) / 255;
          px[p] = 255 - 226 * t; px[p + 1] = 255 - 177 * t; px[p + 2] = 255 - 39 * t;
        }
        px[p + 3] = 255;
      }
    }
  }
  octx.putImageData(img, 0, 0);
  const dpr = window.devicePixelRatio || 1;
  const width = LEFT + L * (cell + GAP), height = TOP + H * (cell + GAP);
  canvas.width = Math.round(width * dpr); canvas.height = Math.round(height * dpr);
  canvas.style.width = width + 'px'; canvas.style.height = height + 'px';
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.imageSmoothingEnabled = n > cell;
  ctx.fillStyle = '#6b7280'; ctx.font = '10px sans-serif'; ctx.textAlign = 'center';
  for (let l = 0; l < L; l++) {
    ctx.fillText(String(l), LEFT + l * (cell + GAP) + cell / 2, TOP - 5);
    for (let h = 0; h < H; h++) {
      ctx.drawImage(off, l * n, h * n, n, n, LEFT + l * (cell + GAP), TOP + h * (cell + GAP), cell, cell);
    }
  }
  ctx.textAlign = 'right';
  for (let h = 0; h < H; h++) ctx.fillText('H' + h, LEFT - 5, TOP + h * (cell + GAP) + cell / 2 + 3);
  ctx.textAlign = 'left';
  ctx.fillText(v.axis[0] + '   ' + v.axis[1], 0, 11);
  shape = {L, H, cell};
  place();
  element.dataset.renderMs = (performance.now() - t0).toFixed(1);
  element.dataset.stamp = String(v.stamp);
}

function place() {
  const s = props.selected;
  if (!shape || !s) { sel.style.display = 'none'; return; }
  sel.style.display = 'block';
  sel.style.left = (2 + LEFT + s[0] * (shape.cell + GAP) - 2) + 'px';
  sel.style.top = (2 + TOP + s[1] * (shape.cell + GAP) - 2) + 'px';
  sel.style.width = sel.style.height = (shape.cell + 4 - 4) + 'px';
}

function headAt(event) {
  if (!shape) return null;
  const box = canvas.getBoundingClientRect();
  const x = event.clientX - box.left - LEFT, y = event.clientY - box.top - TOP;
  const l = Math.floor(x / (shape.cell + GAP)), h = Math.floor(y / (shape.cell + GAP));
  if (x < 0 || y < 0 || l >= shape.L || h >= shape.H) return null;
  return [l, h];
}

canvas.addEventListener('mousemove', (event) => {
  const at = headAt(event);
  if (!at) { tip.style.display = 'none'; return; }
  const v = props.value;
  tip.textContent = v.tip.replace('{layer}', at[0]).replace('{head}', at[1]).replace('{sink}', v.sink[at[0]][at[1]]);
  tip.style.display = 'block';
  const box = wrap.getBoundingClientRect();
  tip.style.left = (event.clientX - box.left + 12) + 'px';
  tip.style.top = (event.clientY - box.top + 12) + 'px';
});
canvas.addEventListener('mouseleave', () => { tip.style.display = 'none'; });
canvas.addEventListener('click', (event) => {
  const at = headAt(event);
  if (!at) return;
  props.selected = at;
  place();
  trigger('open_head', {layer: at[0], head: at[1]});
});
watch('value', draw);
watch('selected', place);
draw();
"""


# --- one head: lines and heatmap (SVG) ------------------------------------------------------------------------------


def lines_svg(tokens: list[str], weights: torch.Tensor) -> str:
    """BertViz's head view: each token (left) joined to the tokens it attends to (right), opacity = weight."""
    n, row, left, right = len(tokens), 18, 150, 300
    height = n * row + 8
    out = [f'<svg class="lines" width="{right + 150}" height="{height}" viewBox="0 0 {right + 150} {height}" '
           'xmlns="http://www.w3.org/2000/svg" font-size="12" font-family="ui-monospace, monospace">']
    w = weights.tolist()
    for i in range(n):
        for j in range(i + 1):
            if w[i][j] >= 0.01:
                out.append(f'<line class="q{i}" x1="{left + 6}" y1="{i * row + 13}" x2="{right - 6}" '
                           f'y2="{j * row + 13}" stroke="#1d4ed8" stroke-width="2" '
                           f'stroke-opacity="{w[i][j]:.3f}"/>')
    for i, token in enumerate(tokens):
        label = _esc(_short(token))
        out.append(f'<text x="{left}" y="{i * row + 17}" text-anchor="end" data-q="{i}">{label}</text>')
        out.append(f'<text x="{right}" y="{i * row + 17}" fill="#374151">{label}</text>')
    out.append("</svg>")
    return "".join(out)


LINES_JS = """
element.addEventListener('mouseover', (event) => {
  const svg = element.querySelector('svg.lines');
  if (!svg) return;
  svg.querySelectorAll('line.on').forEach((line) => line.classList.remove('on'));
  const token = event.target.closest('[data-q]');
  if (!token) { svg.classList.remove('focus'); return; }
  svg.classList.add('focus');
  svg.querySelectorAll('line.q' + token.dataset.q).forEach((line) => line.classList.add('on'));
});
element.addEventListener('mouseleave', () => element.querySelector('svg.lines')?.classList.remove('focus'));
"""
CAPTION_CSS = ".cap { color: #6b7280; font-size: 13px; margin: 2px 0 6px; }"
LINES_CSS = CAPTION_CSS + """
.lines-box { max-height: 640px; overflow: auto; }
svg.focus line { opacity: 0.06; }
svg.focus line.on { opacity: 1; }
text[data-q] { cursor: pointer; }
"""


def heatmap_svg(tokens: list[str], weights: torch.Tensor) -> str:
    """Row = the token looking, column = the token looked at; each cell's title gives its weight."""
    n = len(tokens)
    cell = max(7, min(24, 560 // n))
    font = max(7, min(12, cell - 1))
    left, top = 96, 96
    size = left + n * cell + 4
    out = [f'<svg class="heatmap" width="{size}" height="{top + n * cell + 4}" xmlns="http://www.w3.org/2000/svg" '
           f'font-size="{font}" font-family="ui-monospace, monospace">',
           f'<rect x="{left}" y="{top}" width="{n * cell}" height="{n * cell}" fill="#f1f5f9"/>']
    w = weights.tolist()
    for i in range(n):
        for j in range(i + 1):
            out.append(f'<rect x="{left + j * cell}" y="{top + i * cell}" width="{cell}" height="{cell}" '
                       f'fill="{_blue(w[i][j])}"><title>{_esc(tokens[i])} → {_esc(tokens[j])}: '
                       f'{w[i][j]:.3f}</title></rect>')
    for i, token in enumerate(tokens):
        label = _esc(_short(token))
        y = top + i * cell + cell * 0.75
        out.append(f'<text x="{left - 4}" y="{y:.1f}" text-anchor="end">{label}</text>')
        x = left + i * cell + cell * 0.7
        out.append(f'<text x="{x:.1f}" y="{top - 4}" transform="rotate(-60 {x:.1f} {top - 4})">{label}</text>')
    out.append("</svg>")
    return "".join(out)


# --- one head, step by step -----------------------------------------------------------------------------------------


def _strip(vector: torch.Tensor) -> str:
    """All numbers of a vector as a row of coloured cells (title = value), then the first four written out."""
    scale = float(vector.abs().max()) or 1.0
    cells = "".join(f'<i style="background:{_diverging(x, scale)}" title="{x:.4f}"></i>' for x in vector.tolist())
    first = ", ".join(f"{x:.2f}" for x in vector[:4].tolist())
    return f'<span class="strip">{cells}</span> <code>[{first}, …]</code>'


def _matrix(tokens: list[str], values: torch.Tensor, kind: str) -> str:
    """An S×S table: scores (numbers), masked scores (−∞ above the diagonal) or weights (shaded)."""
    head = "".join(f"<th>{_esc(_short(t, 8))}</th>" for t in tokens)
    rows = []
    for i, token in enumerate(tokens):
        cells = []
        for j in range(len(tokens)):
            x = float(values[i, j])
            if math.isinf(x):
                cells.append('<td class="masked">−∞</td>')
            elif kind == "weights":
                ink = "#fff" if x > 0.55 else "#111827"
                cells.append(f'<td style="background:{_blue(x)};color:{ink}">{x:.3f}</td>')
            else:
                cells.append(f"<td>{x:.2f}</td>")
        rows.append(f"<tr><th>{_esc(_short(token, 8))}</th>{''.join(cells)}</tr>")
    return f'<table class="mat"><tr><th></th>{head}</tr>{"".join(rows)}</table>'


def steps_html(steps: inside.HeadSteps, heads: int, kv_heads: int, request: gr.Request | None) -> str:
    d = steps.q.shape[1]
    sqrt = math.sqrt(d)
    sharing = ", ".join(map(str, steps.sharing))
    n = len(steps.tokens)
    i = n - 1
    j = int(steps.weights[i, 1:].argmax()) + 1 if i else 0  # the example avoids token 0 (the sink) when it can
    dot = float(steps.q[i] @ steps.k[j])
    vectors = "".join(
        f"<tr><th>{_esc(t)}</th><td>{_strip(steps.q[r])}</td><td>{_strip(steps.k[r])}</td>"
        f"<td>{_strip(steps.v[r])}</td></tr>" for r, t in enumerate(steps.tokens))
    numbers = "".join(
        f"<tr><th>{_esc(t)} · {name}</th><td><code>{', '.join(f'{x:.4f}' for x in vec[r].tolist())}</code></td></tr>"
        for r, t in enumerate(steps.tokens)
        for name, vec in ((tr(request, "steps.q"), steps.q), (tr(request, "steps.k"), steps.k),
                          (tr(request, "steps.v"), steps.v), (tr(request, "steps.out"), steps.output)))
    outputs = "".join(f"<tr><th>{_esc(t)}</th><td>{_strip(steps.output[r])}</td></tr>"
                      for r, t in enumerate(steps.tokens))

    def p(name: str, **fmt) -> str:
        return f"<p>{_md_bold(tr(request, name, **fmt))}</p>"

    return f"""<div class="steps" data-layer="{steps.layer}" data-head="{steps.head}">
{p("steps.intro", layer=steps.layer, head=steps.head, n=n, d=d)}
{p("steps.gqa", heads=heads, kv_heads=kv_heads, sharing=sharing, kv=steps.kv_head, ratio=heads // kv_heads)}
{p("steps.one", layer=steps.layer, head=steps.head, kv=steps.kv_head, d=d)}
<table class="vec"><tr><th>{tr(request, "steps.token")}</th><th>{tr(request, "steps.q")}</th>
<th>{tr(request, "steps.k")}</th><th>{tr(request, "steps.v")}</th></tr>{vectors}</table>
{p("steps.two", d=d, sqrt=sqrt)}
{_matrix(steps.tokens, steps.scores, "scores")}
{p("steps.worked", i=i, j=j, query=steps.tokens[i], looked=steps.tokens[j], dot=dot, sqrt=sqrt,
   score=float(steps.scores[i, j]))}
{p("steps.three")}
{_matrix(steps.tokens, steps.masked, "scores")}
{p("steps.four")}
{_matrix(steps.tokens, steps.weights, "weights")}
{p("steps.five", d=d, heads=heads, width=heads * d)}
<table class="vec"><tr><th>{tr(request, "steps.token")}</th><th>{tr(request, "steps.out")}</th></tr>{outputs}</table>
<details><summary>{tr(request, "steps.all_numbers", d=d)}</summary><table class="nums">{numbers}</table></details>
</div>"""


STEPS_CSS = """
.steps { overflow-x: auto; }
.steps p { margin: 10px 0 6px; }
.steps table { border-collapse: collapse; font-size: 12px; margin: 4px 0; }
.steps th, .steps td { border: 1px solid #e5e7eb; padding: 2px 6px; text-align: right; white-space: nowrap; }
.steps th { background: #f9fafb; font-weight: 600; font-family: ui-monospace, monospace; }
.steps td.masked { color: #9ca3af; background: #f3f4f6; }
.steps .strip { display: inline-flex; vertical-align: middle; border: 1px solid #d1d5db; }
.steps .strip i { display: inline-block; width: 2px; height: 14px; }
.steps table.vec td { text-align: left; }
.steps table.nums td { text-align: left; white-space: normal; font-size: 11px; }
.steps code { font-size: 11px; }
"""


def _md_bold(text: str) -> str:
    """The strings' **bold** as <b>, the rest escaped (the step texts are HTML, not Markdown)."""
    parts = _esc(text).split("**")
    return "".join(f"<b>{part}</b>" if k % 2 else part for k, part in enumerate(parts))


# --- the logit lens -------------------------------------------------------------------------------------------------


def lens_html(inspection: inside.Inspection, request: gr.Request | None) -> str:
    answer = inspection.answer
    first = next((row.layer for row in inspection.lens if row.top[0].token_id == answer.token_id), None)
    rows = []
    for row in inspection.lens:
        top = row.top[0]
        mark = ' class="hit"' if top.token_id == answer.token_id else ""
        more = " ".join(f"<span>{_esc(g.label)} {g.prob:.0%}</span>" for g in row.top[1:])
        rows.append(
            f"<tr{mark}><td>{row.layer}</td><td><code>{_esc(top.label)}</code></td>"
            f'<td><span class="bar" style="width:{top.prob * 120:.0f}px"></span> {top.prob:.1%}</td>'
            f'<td class="more">{more}</td>'
            f'<td><span class="bar answer" style="width:{row.answer_prob * 120:.0f}px"></span> '
            f"{row.answer_prob:.1%}</td></tr>")
    note = tr(request, "inside.lens_first", answer=answer.label, layer=first) if first is not None else ""
    return f"""<div class="lens"><p>{_esc(tr(request, "inside.lens_intro", token=inspection.tokens[-1]))}</p>
<table><tr><th>{tr(request, "inside.lens_layer")}</th><th colspan="2">{tr(request, "inside.lens_top")}</th>
<th>{tr(request, "inside.lens_more")}</th><th>{_esc(tr(request, "inside.lens_answer", answer=answer.label))}</th></tr>
{"".join(rows)}</table><p>{_esc(note)}</p></div>"""


LENS_CSS = """
.lens table { border-collapse: collapse; font-size: 13px; }
.lens th, .lens td { border-bottom: 1px solid #e5e7eb; padding: 2px 8px; text-align: left; white-space: nowrap; }
.lens tr.hit td { background: #ecfdf5; }
.lens .bar { display: inline-block; height: 10px; background: #60a5fa; vertical-align: middle; }
.lens .bar.answer { background: #34d399; }
.lens td.more span { color: #6b7280; margin-right: 8px; font-size: 12px; }
"""
