"""chat.ui.inside_views: the Inside tab's drawings of a real inspection (of a tiny random model)."""
from __future__ import annotations

import base64

import torch

from chat.llm import inside
from chat.ui import inside_views

TEXT = "When Mary and John went to the store, John gave a drink to"


def test_the_grid_packs_every_heads_lower_triangle(tiny_inside):
    found = inside.inspect_text(TEXT, tiny_inside)
    value = inside_views.grid_value(found, False, None)
    n = len(found.ids)
    data = torch.frombuffer(bytearray(base64.b64decode(value["data"])), dtype=torch.uint8).float()
    assert (value["layers"], value["heads"], value["n"]) == (2, 6, n) and data.numel() == 12 * n * (n + 1) // 2
    rows, cols = torch.tril_indices(n, n)
    back = (data.view(2, 6, -1) / 255) ** 2
    assert (back - found.attention[..., rows, cols]).abs().max() < 2 / 255
    assert len(value["sink"]) == 2 and len(value["sink"][0]) == 6


def test_the_head_views_draw_every_token_and_the_weights(tiny_inside):
    found = inside.inspect_text(TEXT, tiny_inside)
    weights = inside.head_weights(found, 1, 4, hide=True)
    n = len(found.tokens)
    lines = inside_views.lines_svg(found.tokens, weights)
    assert lines.count("<line ") == int((weights >= 0.01).sum()) and lines.count("data-q=") == n
    heatmap = inside_views.heatmap_svg(found.tokens, weights)
    assert heatmap.count("<title>") == n * (n + 1) // 2
    assert f"{float(weights[3, 2]):.3f}</title>" in heatmap
    steps = inside_views.steps_html(inside.head_steps(tiny_inside, found, 1, 4), 6, 2, None)
    assert "−∞" in steps and "RoPE" in steps and 'data-head="4"' in steps
    lens = inside_views.lens_html(found, None)
    assert lens.count("<tr") == 1 + 2
