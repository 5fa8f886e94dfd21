"""The explorer's panel (ipywidgets): a view over an ``explorer.Explorer`` (given, never imported), no logic of its own.

Usage::

    display(pa.explore(emb).widget())
"""
from __future__ import annotations

import html

SEPARATOR = " | "   # several prompts for one domain (averaged) are typed separated by this


def panel(ex):
    """Text boxes (one per domain; Enter applies), a preset menu, a source menu, a refit button, the results."""
    import ipywidgets as w
    boxes = {d: w.Text(value=_shown(ex.prompts[d]), description=d, continuous_update=False,
                       layout=w.Layout(width="95%"), style={"description_width": "110px"}) for d in ex.emb.domains}
    preset = w.Dropdown(options=["(typed)", *ex.presets], value="(typed)", description="preset")
    source = w.Dropdown(options=list(ex.emb.domains), value=ex.source, description="source")
    refit = w.Button(description="refit out-of-date methods", layout=w.Layout(width="240px"))
    out = w.HTML(value=_results(ex.last))

    def show(edit):
        for d, box in boxes.items():   # a preset or a source change rewrites the boxes; their observers see no edit
            box.unobserve(typed, "value")
            box.value = _shown(edit.prompts[d])
            box.observe(typed, "value")
        out.value = _results(edit)

    def typed(change):
        domain = next(d for d, box in boxes.items() if box is change["owner"])
        show(ex.apply({domain: _parsed(change["new"])}))

    def chose_preset(change):
        if change["new"] != "(typed)":
            show(ex.preset(change["new"]))

    for box in boxes.values():
        box.observe(typed, "value")
    preset.observe(chose_preset, "value")
    source.observe(lambda change: show(ex.use_source(change["new"])), "value")
    refit.on_click(lambda _: show(ex.refit()))
    box = w.VBox([w.HBox([source, preset, refit]), *boxes.values(), out])
    box.controls = {"boxes": boxes, "preset": preset, "source": source, "refit": refit, "results": out}
    return box


def _shown(prompts) -> str:
    return SEPARATOR.join(prompts) if isinstance(prompts, list) else str(prompts)


def _parsed(text: str):
    parts = [p.strip() for p in text.split(SEPARATOR.strip()) if p.strip()]
    return parts[0] if len(parts) == 1 else parts


def _results(edit) -> str:
    """The edit as HTML: accuracy per method and target with its change, the Sim rows, the time it took."""
    if edit is None:
        return ""
    table = edit.table().to_html(classes="pacs-embed-explorer", escape=True)
    sim = edit.similarity.map(lambda v: f"{v:.3f}").to_html(escape=True)
    stale = (f"<p><b>Out of date</b> (heads trained on an earlier description; press refit): "
             f"{html.escape(', '.join(edit.stale))}</p>" if edit.stale else "")
    return (f"<p>applied in {edit.seconds:.2f} s: accuracy on each target (mean over seeds; in brackets the change from "
            f"the last description)</p>{table}{stale}<p>Sim(description, images): each domain's description (rows) "
            f"against every domain's images (mean cosine; Table 1's measure)</p>{sim}")
