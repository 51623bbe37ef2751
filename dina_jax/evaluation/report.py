"""The paper's numbers beside a reproduction's, aggregated over mice (experiments/reproduce.py).

The paper's headline results are means and spreads over mice (Table 1; blobs per image; the
fraction of neurons for SSIM >= 0.9; the range of map SSIM and LPIPS) and four-mouse panels
(Fig. 5e, 5h, 6a, 6b). Each run here is one (condition, mouse, model) workdir; three modules turn
their ``results.json`` / ``analysis.json`` / ``analysis.h5`` into those numbers:

  ``paper.py``        :data:`PAPER`, every number (or claim) of the paper the report compares
                      with, and :func:`comparison`, the paper-vs-run table;
  ``across_mice.py``  :func:`collect` (one record per run) and :func:`aggregate` (mean, sd, SEM,
                      min and max over mice of every quantity, and the table);
  this module         :func:`write_json` ``report.json``, :func:`to_markdown` ``report.md``;
                      :func:`write_figures` the four-mouse panels and the class confusion figure.

Every public name of the three is importable from here, as experiments/reproduce.py does.
"""

from __future__ import annotations

import json
import math
import os
import pathlib

import numpy as np

from dina_jax.evaluation.across_mice import (
    _select,
    aggregate,
    collect,
    load_json,
    load_panels,
    semantic_check,
    spread,
)
from dina_jax.evaluation.paper import (
    CONDITIONS,
    MODEL_LABELS,
    MODELS,
    PAPER,
    TOPK,
    _num,
    comparison,
)

__all__ = [
    "CONDITIONS",
    "MODELS",
    "MODEL_LABELS",
    "PAPER",
    "TOPK",
    "aggregate",
    "collect",
    "comparison",
    "load_json",
    "load_panels",
    "semantic_check",
    "semantic_confusion_figure",
    "spread",
    "to_markdown",
    "write_figures",
    "write_json",
]

# ----------------------------------------------------------------------------- outputs


def _finite(tree):
    """JSON-ready: arrays to lists, NaN/inf to None."""
    if isinstance(tree, dict):
        return {str(k): _finite(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return [_finite(v) for v in tree]
    if isinstance(tree, np.ndarray):
        return _finite(tree.tolist())
    if isinstance(tree, np.generic):
        tree = tree.item()
    if isinstance(tree, float) and not math.isfinite(tree):
        return None
    return tree


def write_json(path, report: dict) -> str:
    """Writes ``report`` as JSON (NaN as null) atomically; returns the path."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_finite(report), indent=1, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return str(path)


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def clean(cell):
        return str(cell).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(clean(c) for c in r) + " |" for r in rows]
    return lines


def to_markdown(report: dict) -> str:
    """``report.md``: how the run was made, the paper-vs-run table, the per-mouse details."""
    agg, meta = report["aggregate"], report.get("meta", {})
    lines = ["# DINA: the paper's numbers and this reproduction's", ""]
    for key, value in meta.items():
        if not isinstance(value, dict | list):
            lines.append(f"- {key}: {value}")
    lines += ["", "## Paper vs this run", ""]
    lines += _md_table(
        ["Quantity", "Paper", "This run", "Source", "Note"],
        [[r["quantity"], r["paper"], r["run"], r["section"], r["note"]] for r in agg["comparison"]],
    )
    lines += ["", "Spreads over mice: SEM = sd / sqrt(n), sd with ddof 1.", ""]
    lines += ["Notes on the paper's values:", ""] + [f"- {n}" for n in PAPER["notes"]]

    lines += ["", "## Retrieval per mouse (top-1 / top-5 / top-10 %)", ""]
    rows = []
    for condition, models in agg["retrieval"].items():
        for model, stats in models.items():
            for mouse in stats["top1"]["values"]:
                values = [stats[f"top{k}"]["values"][mouse] for k in TOPK]
                rows.append(
                    [
                        condition,
                        mouse,
                        MODEL_LABELS[model],
                        " / ".join(_num(v) for v in values),
                        _num(stats["linear_top1"]["values"].get(mouse)),
                        _num(stats["ceiling_top1"]["values"].get(mouse)),
                    ]
                )
    lines += _md_table(
        ["Condition", "Mouse", "Model", "Top-1/5/10", "Ridge top-1", "Ceiling top-1"], rows
    )
    paper_rows = [
        ["Paper " + mouse, MODEL_LABELS[model], " / ".join(_num(v) for v in values)]
        for model, mice in PAPER["table1"]["per_mouse"].items()
        for mouse, values in mice.items()
    ]
    lines += ["", "Paper, Table 1 per mouse:", ""]
    lines += _md_table(["Mouse", "Model", "Top-1/5/10"], paper_rows)

    lines += ["", "## Paired maps per mouse (natural images; mean ± sd over test stimuli)", ""]
    rows = []
    for model, block in agg["map_ssim"].items():
        lpips = agg["map_lpips"].get(model, {}).get("per_mouse", {})
        for mouse, v in block.get("per_mouse", {}).items():
            lp = lpips.get(mouse)
            rows.append(
                [
                    mouse,
                    MODEL_LABELS[model],
                    f"{_num(v['mean'], 3)} ± {_num(v['sd'], 3)}",
                    f"{_num(lp['mean'], 3)} ± {_num(lp['sd'], 3)}" if lp else "not computed",
                ]
            )
    lines += _md_table(["Mouse", "Model", "SSIM", "LPIPS"], rows)

    lines += ["", "## DINA analyses per mouse (natural images)", ""]
    blobs, sti, ablation = agg["blobs"], agg["sti"], agg["ablation"]
    attention, contribution = agg["attention"], agg["attention_contribution"]
    rows = []
    for mouse in blobs["count"]["values"]:

        def v(stat, digits=2, mouse=mouse):
            return _num(stat["values"].get(mouse), digits)

        rows.append(
            [
                mouse,
                v(blobs["count"]),
                v(blobs["area"], 1),
                v(sti["sti_median"]),
                v(sti["sti_fraction_negative"]),
                v(ablation["ranked_fraction_pct"], 1),
                v(ablation["random_fraction_pct"], 1),
                f"{v(attention['mu'])}, {v(attention['sigma'])}",
                f"{v(attention['ks'], 3)} / {v(attention['ks_normal'], 3)}",
                " / ".join(
                    v(contribution[k], 1) for k in ("intact_top1", "uniform_top1", "removed_top1")
                ),
            ]
        )
    lines += _md_table(
        [
            "Mouse",
            "Blobs/image",
            "Blob px",
            "STI median",
            "STI < 0",
            "Ranked % for 0.9",
            "Random % for 0.9",
            "ln P mu, sigma",
            "KS log-normal / normal",
            "Top-1 intact / uniform / removed",
        ],
        rows,
    )

    lines += ["", "## Semantic category (natural images)", ""]
    if agg["semantic"]:
        lines += [
            "Fraction of each neural query's retrievals that share its class, against the rate",
            "a ranking blind to the images would give with the same class sizes. *All*: the",
            "top-k including the query's own image; *others*: the top-k with it taken out",
            "(what the model confuses the query with). p: label permutations.",
            "",
        ]
        rows = []
        for model, stats in agg["semantic"].items():
            for mouse in stats["top1_others"]["values"]:

                def pct(key, mouse=mouse, stats=stats):
                    value = stats.get(key, {}).get("values", {}).get(mouse)
                    return _num(None if value is None else 100 * value, 1)

                rows.append(
                    [
                        MODEL_LABELS[model],
                        mouse,
                        f"{pct('top1_all')} / {pct('top1_all_chance')}",
                        f"{pct('top1_others')} / {pct('top1_others_chance')}",
                        f"{pct('top5_others')} / {pct('top5_others_chance')}",
                        _num(stats.get("top5_others_p", {}).get("values", {}).get(mouse), 3),
                    ]
                )
        lines += _md_table(
            [
                "Model",
                "Mouse",
                "Top-1 all % / chance",
                "Top-1 others % / chance",
                "Top-5 others % / chance",
                "p (top-5 others)",
            ],
            rows,
        )
    else:
        lines.append(report.get("semantic_status", "No class-assignment file: not computed."))
    if report.get("semantic_status"):
        lines += ["", report["semantic_status"]]

    figures = report.get("figures", [])
    if figures:
        lines += ["", "## Figures", ""]
        for path in figures:
            lines.append(f"![{pathlib.Path(path).stem}]({path})")
    timings = report.get("timings")
    if timings:
        lines += ["", "## Time", ""]
        lines += ["Wall seconds (CPU seconds of the process, all threads, in brackets).", ""]

        def seconds(t, key):
            wall, cpu = t.get(f"{key}_s"), t.get(f"{key}_cpu_s")
            return _num(wall, 0) + (f" ({_num(cpu, 0)})" if cpu is not None else "")

        lines += _md_table(
            ["Run", "Train + evaluate", "Analyse", "Reused this time"],
            [
                [name, seconds(t, "train"), seconds(t, "analyze"), t.get("reused", "")]
                for name, t in timings.items()
            ],
        )
    return "\n".join(lines) + "\n"


def write_figures(records: list[dict], agg: dict, folder) -> list[str]:
    """The four-mouse panels (Fig. 5a, 5e, 5f, 5h, 6a, 6b; one colour per mouse, from
    ``dina_jax.plots``) and the class confusion figure; returns the paths written."""
    from dina_jax import plots

    folder = pathlib.Path(folder)
    dina = {
        r["mouse"]: r["panels"]
        for r in _select(records, "natural", "dina")
        if r.get("panels") and "blob_counts" in r["panels"]
    }
    paths = []

    def save(fig, name):
        paths.append(plots.save(fig, folder / f"{name}.png"))

    def per_mouse(group, key):
        return {mouse: panels[key] for mouse, panels in group.items()}

    def sharing(group, key, grid):
        """The mice whose ``grid`` (fractions, bin edges) equals the first mouse's."""
        reference = next(iter(group.values())).get(grid)
        return {m: p for m, p in group.items() if key in p and np.array_equal(p[grid], reference)}

    if dina:
        first = next(iter(dina.values()))
        save(plots.plot_blob_counts(per_mouse(dina, "blob_counts")), "fig5e_blob_count_mice")
        save(plots.plot_blob_sizes(per_mouse(dina, "blob_areas")), "fig5f_blob_size_mice")
        save(plots.plot_sti_distribution(per_mouse(dina, "sti")), "fig5h_sti_mice")
        with_path = {m: p for m, p in dina.items() if "local" in p}
        if with_path:
            save(
                plots.plot_pathway_ssim(
                    per_mouse(with_path, "local"), per_mouse(with_path, "global")
                ),
                "fig5a_pathway_ssim_mice",
            )
        same_grid = sharing(dina, "fractions", "fractions")
        if same_grid:
            save(
                plots.plot_ablation(
                    first["fractions"],
                    per_mouse(same_grid, "ranked_curve"),
                    per_mouse(same_grid, "random_curve"),
                ),
                "fig6a_ablation_mice",
            )
        same_bins = sharing(dina, "counts", "bin_edges")
        if same_bins:
            save(
                plots.plot_attention_distribution(
                    first["bin_edges"],
                    per_mouse(same_bins, "counts"),
                    mu=per_mouse(same_bins, "attention_mu"),
                    sigma=per_mouse(same_bins, "attention_sigma"),
                ),
                "fig6b_attention_mice",
            )
    confusion = semantic_confusion_figure(records, folder / "semantic_confusion.png")
    if confusion:
        paths.append(confusion)
    return [str(p) for p in paths]


def semantic_confusion_figure(records: list[dict], path, k: int = 5) -> str | None:
    """One panel per model: query class (rows) vs the class of its top-``k`` retrievals other
    than its own image, summed over mice, as a fraction of the row; the title gives the
    same-class rate (the diagonal's share) and its chance level (the mean over mice of
    ``top{k}_others_chance``). None without data."""
    from matplotlib.figure import Figure

    panels = {}
    for model in MODELS:
        runs = [r for r in _select(records, "natural", model) if r.get("semantic")]
        if runs:
            confusion = np.sum([np.asarray(r["semantic"][f"confusion_top{k}"]) for r in runs], 0)
            counts = np.sum([np.asarray(r["semantic"]["class_counts"]) for r in runs], 0)
            chance = float(np.mean([r["semantic"][f"top{k}_others_chance"] for r in runs]))
            names = runs[0]["semantic"]["class_names"]
            panels[model] = (confusion, counts, names, len(runs), chance)
    if not panels:
        return None
    n_classes = max(len(p[2]) for p in panels.values())
    size = 1.2 + 0.32 * n_classes
    fig = Figure(figsize=(1.25 * size * len(panels), size + 0.8), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for i, (ax, (model, panel)) in enumerate(zip(axes, panels.items(), strict=True)):
        confusion, counts, names, n_mice, chance = panel
        keep = counts > 0
        confusion = confusion[np.ix_(keep, keep)]
        names = [n for n, kept in zip(names, keep, strict=True) if kept]
        rows = confusion.sum(axis=1, keepdims=True)
        fraction = np.divide(confusion, rows, out=np.zeros(confusion.shape), where=rows > 0)
        image = ax.imshow(fraction, cmap="magma", vmin=0, vmax=max(fraction.max(), 1e-6))
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
        ax.set_yticks(range(len(names)), names, fontsize=6)
        ax.set_xlabel(f"class of top-{k} retrievals (own image excluded)", fontsize=7)
        if i == 0:
            ax.set_ylabel("query class", fontsize=7)
        same = np.trace(confusion) / max(confusion.sum(), 1)
        ax.set_title(
            f"{MODEL_LABELS[model]} ({n_mice} mice): same class {100 * same:.1f}%\n"
            f"(chance from the class sizes {100 * chance:.1f}%)",
            fontsize=8,
        )
        fig.colorbar(image, ax=ax, shrink=0.8).ax.tick_params(labelsize=6)
    fig.suptitle("Semantic class of the retrieved images (natural test images)", fontsize=9)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return str(path)
