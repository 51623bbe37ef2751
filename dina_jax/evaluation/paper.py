"""The paper's numbers, and the table that sets a reproduction's beside them.

  :data:`PAPER`        every number (or claim) of the paper the report compares with, with the
                       section it comes from;
  :func:`comparison`   the paper-vs-run table: one row per quantity, the paper's value and the
                       run's (from :func:`dina_jax.evaluation.across_mice.aggregate`) as text;
  :data:`MODELS`, :data:`CONDITIONS`, :data:`TOPK`   the models, stimulus conditions and
                       top-k of the paper's retrieval results; :data:`MODEL_LABELS` their
                       names in the tables.

The table's cells show mean ± SEM over mice (sd where the paper gives one), or the mean alone for
a single mouse, and '–' for none.
"""

from __future__ import annotations

import math

MODELS = ("dina", "vgg16_mlp", "vit_mlp")
MODEL_LABELS = {"dina": "DINA", "vgg16_mlp": "VGG-16-MLP", "vit_mlp": "ViT-MLP"}
CONDITIONS = ("natural", "whitened", "8D")
TOPK = (1, 5, 10)

# ----------------------------------------------------------------------------- the paper

PAPER: dict = {
    "table1": {
        "section": "Sec. 4.3, Table 1",
        "unit": "% top-1 / top-5 / top-10, 280-way",
        "per_mouse": {
            "dina": {
                "M1": (36.07, 60.71, 72.50),
                "M2": (22.14, 43.57, 43.57),
                "M3": (59.29, 85.71, 90.00),
                "M4": (29.64, 51.79, 61.43),
            },
            "vgg16_mlp": {
                "M1": (22.50, 52.86, 66.79),
                "M2": (13.93, 38.93, 47.14),
                "M3": (49.64, 81.79, 92.14),
                "M4": (20.71, 50.71, 63.93),
            },
            "vit_mlp": {
                "M1": (0.71, 5.71, 10.36),
                "M2": (1.43, 8.93, 13.57),
                "M3": (2.14, 7.14, 13.21),
                "M4": (0.71, 5.00, 9.64),
            },
        },
        "mean": {
            "dina": (36.79, 60.45, 68.75),
            "vgg16_mlp": (26.70, 56.57, 67.50),
            "vit_mlp": (1.25, 6.70, 11.70),
        },
    },
    "whitened": {
        "section": "Sec. 4.3, Fig. 4c (mean of two mice)",
        "mean": {"dina": (4.82, 9.29, 12.68)},
    },
    "8D": {
        "section": "Sec. 4.3, Fig. 4c (mean of two mice)",
        "mean": {"dina": (32.86, 70.54, 86.43)},
    },
    "map_ssim": {
        "section": "Sec. 4.3",
        # (mean, sd over test stimuli) of the lowest and the highest mouse.
        "range": ((0.655, 0.065), (0.757, 0.068)),
    },
    "map_lpips": {"section": "Sec. 4.3", "range": ((0.177, 0.023), (0.229, 0.023))},
    "blob_count": {
        "section": "Sec. 4.4, Fig. 5e",
        "mean": 6.21,
        "spread": 0.23,
        "spread_kind": "std (the paper's; over mice, judging by its size)",
    },
    "blob_area": {
        "section": "Sec. 4.4, Fig. 5f",
        "mean": 148.4,
        "spread": 29.5,
        "spread_kind": "std (the paper's)",
        "unit": "px",
    },
    "sti": {
        "section": "Sec. 4.4, Fig. 5h",
        "claim": "centred near zero with a broad spread over four mice; mixed shape/texture "
        "blobs the most common",
    },
    "ablation_fraction": {
        "section": "Sec. 4.5, Fig. 6a",
        "mean": 12.00,
        "spread": 2.31,
        "spread_kind": "SEM over four mice",
        "unit": "% of neurons (response-ranked) for SSIM >= 0.9",
    },
    "attention_lognormal": {
        "section": "Sec. 4.5, Fig. 6b",
        "claim": "highly skewed, closely resembling a log-normal in all four mice (no fit "
        "parameters given)",
    },
    "pathways": {
        "section": "Sec. 4.4, Fig. 5a",
        "claim": "keeping the global pathway gives a map much closer to the full one than "
        "keeping the local pathway",
    },
    "semantic": {
        "section": "Abstract; Sec. 4.3, Fig. 3",
        "claim": "decoding rests on coarse low-level structure rather than semantic category "
        "(argued from the spectra and examples; not measured)",
    },
    "attention_contribution": {
        "section": "not in the paper (Fig. 6 presupposes that the attention matters)",
    },
    "notes": (
        "Table 1's DINA top-10 mean (68.75) is not the mean of its rows (66.88); M2's top-10 "
        "equals its top-5 (43.57), a likely typo.",
        "Table 1's VGG-16-MLP top-5 mean (56.57) is not the mean of its rows (56.07).",
    ),
}

# ----------------------------------------------------------------------------- the table


def _get(tree, *keys):
    for key in keys:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _num(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}"


def _stat(stat: dict, digits: int = 2, kind: str = "sem") -> str:
    """'mean ± SEM (n)', or the mean alone for one mouse, or '–' for none."""
    if not stat or stat.get("n", 0) == 0:
        return "–"
    text = _num(stat["mean"], digits)
    if stat["n"] > 1:
        text += f" ± {_num(stat[kind], digits)} {kind.upper() if kind == 'sem' else kind}"
    return f"{text} (n={stat['n']})"


def _triple(stats: dict, digits: int = 2) -> str:
    if not stats or stats["top1"]["n"] == 0:
        return "–"
    means = " / ".join(_num(stats[f"top{k}"]["mean"], digits) for k in TOPK)
    n = stats["top1"]["n"]
    if n > 1:
        sems = " / ".join(_num(stats[f"top{k}"]["sem"], digits) for k in TOPK)
        return f"{means} (SEM {sems}; n={n})"
    return f"{means} (n=1)"


def _contribution_note(contribution: dict) -> str:
    cost = contribution.get("uniform_top1_cost", {})
    if not cost.get("n"):
        return ""
    return (
        f"uniform attention costs {_num(cost['mean'], 1)} points of top-1 (0: the decoding does "
        "not pass through the attention's scores)"
    )


def comparison(agg: dict) -> list[dict]:
    """The paper-vs-run table: rows of ``quantity``, ``section``, ``paper``, ``run``, ``note``."""
    rows = []

    def row(quantity, section, paper, run, note=""):
        rows.append(dict(quantity=quantity, section=section, paper=paper, run=run, note=note))

    table1 = PAPER["table1"]
    for model in MODELS:
        run = _get(agg, "retrieval", "natural", model)
        row(
            f"Table 1 mean, {MODEL_LABELS[model]} (top-1/5/10 %)",
            table1["section"],
            " / ".join(_num(v) for v in table1["mean"][model]),
            _triple(run),
        )
    for condition, label in (("whitened", "whitened images"), ("8D", "8D images")):
        row(
            f"DINA on {label} (top-1/5/10 %)",
            PAPER[condition]["section"],
            " / ".join(_num(v) for v in PAPER[condition]["mean"]["dina"]),
            _triple(_get(agg, "retrieval", condition, "dina")),
        )
    for metric, label in (("map_ssim", "SSIM"), ("map_lpips", "LPIPS")):
        (lo, lo_sd), (hi, hi_sd) = PAPER[metric]["range"]
        run = _get(agg, metric, "dina") or {}
        if run.get("status") == "computed":
            low, high = run["range"]["low"], run["range"]["high"]
            text = (
                f"{_num(low['mean'], 3)} ± {_num(low['sd'], 3)} ({low['mouse']}) to "
                f"{_num(high['mean'], 3)} ± {_num(high['sd'], 3)} ({high['mouse']})"
            )
        else:
            text = "not computed" + (" (no LPIPS weights given)" if metric == "map_lpips" else "")
        row(
            f"Paired-map {label}, DINA: range over mice of mean ± sd over stimuli",
            PAPER[metric]["section"],
            f"{lo:.3f} ± {lo_sd:.3f} to {hi:.3f} ± {hi_sd:.3f}",
            text,
        )
    blobs = agg.get("blobs", {})
    for key, quantity, digits in (
        ("blob_count", "Blobs per image (mean over mice)", 2),
        ("blob_area", "Blob size, px (mean over mice)", 1),
    ):
        paper = PAPER[key]
        stat = blobs.get("count" if key == "blob_count" else "area", {})
        row(
            quantity,
            paper["section"],
            f"{paper['mean']:.{digits}f} ± {paper['spread']:.{digits}f} ({paper['spread_kind']})",
            f"{_stat(stat, digits, 'sd')}; SEM {_num(stat.get('sem'), digits)}" if stat else "–",
        )
    sti = agg.get("sti", {})
    row(
        "STI distribution",
        PAPER["sti"]["section"],
        PAPER["sti"]["claim"],
        (
            f"median {_num(sti['pooled']['q50'])} (IQR {_num(sti['pooled']['q25'])} to "
            f"{_num(sti['pooled']['q75'])}; {sti['pooled']['n']} blobs); per-mouse medians "
            f"{_stat(sti['sti_median'])}; negative (texture) {_stat(sti['sti_fraction_negative'])}"
        )
        if sti.get("pooled", {}).get("n")
        else "–",
    )
    ablation = agg.get("ablation", {})
    paper = PAPER["ablation_fraction"]
    row(
        "Neurons for SSIM >= 0.9, response-ranked (%)",
        paper["section"],
        f"{paper['mean']:.2f} ± {paper['spread']:.2f} ({paper['spread_kind']})",
        _stat(ablation.get("ranked_fraction_pct", {})),
        f"random subsets: {_stat(ablation.get('random_fraction_pct', {}))}",
    )
    attention = agg.get("attention", {})
    n_fit = attention.get("mu", {}).get("n", 0)
    row(
        "Attention scores: log-normal fit",
        PAPER["attention_lognormal"]["section"],
        PAPER["attention_lognormal"]["claim"],
        (
            f"mu {_stat(attention['mu'])}, sigma {_stat(attention['sigma'])}; KS log-normal "
            f"{_num(attention['ks']['mean'], 3)} vs normal "
            f"{_num(attention['ks_normal']['mean'], 3)}"
            f"; log-normal fits better in {attention['lognormal_better']} of {n_fit} mice"
        )
        if n_fit
        else "–",
    )
    pathways = agg.get("pathways", {})
    n_path = pathways.get("mean_global", {}).get("n", 0)
    row(
        "Pathway masking: SSIM to the full map",
        PAPER["pathways"]["section"],
        PAPER["pathways"]["claim"],
        (
            f"global only {_stat(pathways['mean_global'], 3)}, local only "
            f"{_stat(pathways['mean_local'], 3)}; global higher in {pathways['global_higher']} "
            f"of {n_path} mice"
        )
        if n_path
        else "–",
    )
    contribution = agg.get("attention_contribution", {})
    row(
        "Attention contribution: DINA top-1 % intact / uniform attention / attention removed",
        PAPER["attention_contribution"]["section"],
        "–",
        (
            " / ".join(
                _num(contribution[k]["mean"], 1)
                for k in ("intact_top1", "uniform_top1", "removed_top1")
            )
            + f" (n={contribution['intact_top1']['n']}); sd of ln P "
            f"{_num(contribution['sd_log_p']['mean'], 3)}"
        )
        if contribution.get("intact_top1", {}).get("n")
        else "–",
        _contribution_note(contribution),
    )
    for model, stats in agg.get("semantic", {}).items():
        row(
            f"Same-class retrievals, {MODEL_LABELS[model]}: top-1 / top-5 others vs chance",
            PAPER["semantic"]["section"],
            PAPER["semantic"]["claim"],
            (
                f"top-1 {_num(100 * stats['top1_others']['mean'], 1)}% vs "
                f"{_num(100 * stats['top1_others_chance']['mean'], 1)}%; top-5 "
                f"{_num(100 * stats['top5_others']['mean'], 1)}% vs "
                f"{_num(100 * stats['top5_others_chance']['mean'], 1)}% "
                f"(n={stats['top5_others']['n']})"
            ),
            "own image excluded; chance from the class sizes",
        )
    return rows
