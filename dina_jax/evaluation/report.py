"""The paper's numbers beside a reproduction's, aggregated over mice (experiments/reproduce.py).

The paper's headline results are means and spreads over mice (Table 1; blobs per image; the
fraction of neurons for SSIM >= 0.9; the range of map SSIM and LPIPS) and four-mouse panels
(Fig. 5e, 5h, 6a, 6b). Each run here is one (condition, mouse, model) workdir; this module turns
their ``results.json`` / ``analysis.json`` / ``analysis.h5`` into those numbers:

  :data:`PAPER`       every number (or claim) of the paper the report compares with, with the
                      section it comes from;
  :func:`collect`     one record per run: its results, analysis summary and semantic check;
  :func:`aggregate`   mean, sd, SEM, min and max over mice of every quantity, and the
                      paper-vs-run table (``aggregate(records)["comparison"]``);
  :func:`to_markdown` ``report.md``; :func:`write_figures` the four-mouse panels and the class
                      confusion figure.

Spreads: ``sd`` is the sample standard deviation over mice (ddof 1) and ``sem`` = sd / sqrt(n);
both are NaN (null in JSON) for a single mouse.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from collections.abc import Iterable

import numpy as np

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

# ----------------------------------------------------------------------------- statistics


def spread(values: dict) -> dict:
    """Mean, sample sd (ddof 1), SEM, n, min and max over mice of ``{mouse: value}``.

    None and NaN values are left out (and listed under ``values`` as given).
    """
    finite = {k: float(v) for k, v in values.items() if v is not None and math.isfinite(v)}
    x = np.asarray(list(finite.values()), np.float64)
    n = int(x.size)
    nan = float("nan")
    sd = float(x.std(ddof=1)) if n > 1 else nan
    return {
        "mean": float(x.mean()) if n else nan,
        "sd": sd,
        "sem": sd / math.sqrt(n) if n > 1 else nan,
        "n": n,
        "min": float(x.min()) if n else nan,
        "max": float(x.max()) if n else nan,
        "values": {k: (None if v is None else float(v)) for k, v in values.items()},
    }


def _get(tree, *keys):
    for key in keys:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _by_mouse(records: Iterable[dict], *keys, scale: float = 1.0) -> dict:
    out = {}
    for r in records:
        value = _get(r, *keys)
        out[r["mouse"]] = None if value is None else scale * float(value)
    return out


def _select(records, condition: str, model: str) -> list[dict]:
    return [r for r in records if r["condition"] == condition and r["model"] == model]


# ----------------------------------------------------------------------------- aggregation


def aggregate(records: list[dict]) -> dict:
    """Every quantity of the report over mice, and the paper-vs-run table.

    Args:
      records: one per run (:func:`collect`): ``mouse``, ``condition`` ("natural", "whitened",
        "8D"), ``model``, ``results`` (``results.json``), ``analysis`` (``analysis.json`` or
        None), ``semantic`` (:func:`dina_jax.evaluation.semantic.class_retrieval` scalars or
        None).

    Returns:
      dict with ``retrieval`` ({condition: {model: {"top1": spread in %, ...}}}),
      ``map_ssim`` / ``map_lpips`` ({model: per-mouse mean and sd, ``range`` of the per-mouse
      means}), ``blobs``, ``sti``, ``ablation``, ``attention``, ``attention_contribution``,
      ``pathways`` (DINA on natural images, spreads over mice), ``semantic`` ({model: spreads})
      and ``comparison`` (rows of the paper-vs-run table).
    """
    out: dict = {"retrieval": {}, "map_ssim": {}, "map_lpips": {}, "semantic": {}}
    for condition in CONDITIONS:
        for model in MODELS:
            runs = _select(records, condition, model)
            if runs:
                out["retrieval"].setdefault(condition, {})[model] = {
                    f"top{k}": spread(_by_mouse(runs, "results", "retrieval", f"top{k}", scale=100))
                    for k in TOPK
                } | {
                    "linear_top1": spread(
                        _by_mouse(runs, "results", "linear_baseline", "top1", scale=100)
                    ),
                    "ceiling_top1": spread(
                        _by_mouse(runs, "results", "noise_ceiling", "top1", scale=100)
                    ),
                }
    for model in MODELS:
        runs = _select(records, "natural", model)
        if not runs:
            continue
        out["map_ssim"][model] = _map_range(runs, "ssim")
        out["map_lpips"][model] = _map_range(runs, "lpips")
        semantic = [r for r in runs if r.get("semantic")]
        if semantic:
            keys = [k for k, v in semantic[0]["semantic"].items() if isinstance(v, int | float)]
            out["semantic"][model] = {k: spread(_by_mouse(semantic, "semantic", k)) for k in keys}
            out["semantic"][model]["class_names"] = semantic[0]["semantic"].get("class_names")

    dina = [r for r in _select(records, "natural", "dina") if r.get("analysis")]
    a = ("analysis",)
    out["blobs"] = {
        "count": spread(_by_mouse(dina, *a, "blobs", "count_mean")),
        "area": spread(_by_mouse(dina, *a, "blobs", "area_mean")),
        "count_sd_within": spread(_by_mouse(dina, *a, "blobs", "count_std")),
        "area_sd_within": spread(_by_mouse(dina, *a, "blobs", "area_std")),
        "n_blobs": spread(_by_mouse(dina, *a, "blobs", "n_blobs")),
    }
    out["sti"] = {
        key: spread(_by_mouse(dina, *a, "blobs", key))
        for key in ("sti_mean", "sti_median", "sti_fraction_negative")
    }
    pooled = np.concatenate(
        [np.asarray(r["panels"]["sti"], float) for r in dina if "sti" in (r.get("panels") or {})]
        or [np.zeros(0)]
    )
    pooled = pooled[np.isfinite(pooled)]
    out["sti"]["pooled"] = {
        "n": int(pooled.size),
        **{
            f"q{q:02d}": float(np.percentile(pooled, q)) if pooled.size else float("nan")
            for q in (5, 25, 50, 75, 95)
        },
    }
    out["ablation"] = {
        "ranked_fraction_pct": spread(
            _by_mouse(dina, *a, "ablation", "ranked_fraction", scale=100)
        ),
        "random_fraction_pct": spread(
            _by_mouse(dina, *a, "ablation", "random_fraction", scale=100)
        ),
    }
    attention = {
        key: spread(_by_mouse(dina, *a, "attention", key))
        for key in ("mu", "sigma", "ks", "ks_normal", "r2_density")
    }
    ks, ks_normal = attention["ks"]["values"], attention["ks_normal"]["values"]
    attention["lognormal_better"] = sum(
        1 for m in ks if ks[m] is not None and ks_normal.get(m) is not None and ks[m] < ks_normal[m]
    )
    out["attention"] = attention
    out["attention_contribution"] = {
        key: spread(
            _by_mouse(dina, *a, "attention_contribution", key, scale=100 if "top" in key else 1)
        )
        for key in (
            "intact_top1",
            "uniform_top1",
            "removed_top1",
            "uniform_top1_cost",
            "sd_log_p",
            "relative_entropy",
        )
    }
    pathways = {
        key: spread(_by_mouse(dina, *a, "pathways", key)) for key in ("mean_local", "mean_global")
    }
    local, global_ = pathways["mean_local"]["values"], pathways["mean_global"]["values"]
    pathways["global_higher"] = sum(
        1 for m in local if None not in (local[m], global_.get(m)) and global_[m] > local[m]
    )
    out["pathways"] = pathways
    out["comparison"] = comparison(out)
    return out


def _map_range(runs: list[dict], metric: str) -> dict:
    """Per-mouse mean ± sd (over stimuli) of paired-map SSIM or LPIPS, and the range of means."""
    per_mouse = {}
    for r in runs:
        block = _get(r, "results", metric) or {}
        if metric == "lpips" and block.get("status") != "computed":
            continue
        if block.get("mean") is not None:
            per_mouse[r["mouse"]] = (float(block["mean"]), block.get("std"))
    if not per_mouse:
        return {"status": "not computed", "per_mouse": {}}
    low = min(per_mouse, key=lambda m: per_mouse[m][0])
    high = max(per_mouse, key=lambda m: per_mouse[m][0])
    return {
        "status": "computed",
        "per_mouse": {m: {"mean": v[0], "sd": v[1]} for m, v in per_mouse.items()},
        "range": {
            "low": {"mouse": low, **_pair(per_mouse[low])},
            "high": {"mouse": high, **_pair(per_mouse[high])},
        },
    }


def _pair(value) -> dict:
    return {"mean": value[0], "sd": value[1]}


# ----------------------------------------------------------------------------- the table


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


# ----------------------------------------------------------------------------- collection


def load_json(path) -> dict | None:
    path = pathlib.Path(path)
    return json.loads(path.read_text()) if path.exists() else None


def load_panels(workdir) -> dict:
    """The arrays of a DINA run's ``analysis.h5`` the four-mouse panels draw (empty if none)."""
    import h5py

    path = pathlib.Path(workdir) / "analysis.h5"
    if not path.exists():
        return {}
    panels = {}
    with h5py.File(path, "r") as h5:

        def read(name):
            return h5[name][...] if name in h5 else None

        for key, name in (
            ("blob_counts", "blobs/count"),
            ("blob_areas", "blobs/area"),
            ("sti", "blobs/sti"),
            ("local", "pathways/local"),
            ("global", "pathways/global"),
            ("fractions", "ablation/fractions"),
            ("ranked_curve", "ablation/ranked_curve"),
            ("random_curve", "ablation/random_curve"),
            ("bin_edges", "attention/bin_edges"),
            ("counts", "attention/counts"),
        ):
            value = read(name)
            if value is not None:
                panels[key] = value
        if "attention" in h5:
            for key in ("mu", "sigma", "ks"):
                if key in h5["attention"].attrs:
                    panels[f"attention_{key}"] = float(h5["attention"].attrs[key])
    return panels


def semantic_check(workdir, classes) -> dict | None:
    """:func:`~dina_jax.evaluation.semantic.class_retrieval` of a run's ``test_maps.npz``.

    Args:
      workdir: an evaluated run; classes: a ``stringer.ClassAssignment`` of its images file.

    Returns:
      The scalars, ``class_counts`` and the confusions as lists, ``class_names``; None without
      ``test_maps.npz``.

    Raises:
      DataError: the class file has fewer entries than the run's images file rows.
    """
    from dina_jax.data.stringer import DataError
    from dina_jax.evaluation.semantic import class_retrieval

    path = pathlib.Path(workdir) / "test_maps.npz"
    if not path.exists():
        return None
    with np.load(path) as maps:
        similarity, index = maps["similarity"], maps["image_index"]
    if index.size and index.max() >= classes.labels.size:
        raise DataError(
            f"class assignment has {classes.labels.size} images but the run {workdir} uses "
            f"image {index.max() + 1} (another images file?)"
        )
    result = class_retrieval(
        similarity.T,  # test_maps: image (rows) x neural (columns); queries are neural.
        classes.labels[index],
        labelled=classes.labelled[index],
        n_classes=len(classes.names),
    )
    out = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in result.items()}
    out["class_names"] = list(classes.names)
    return out


def collect(run, classes=None) -> dict:
    """The record of one run for :func:`aggregate` (``run``: mouse, condition, model, workdir)."""
    workdir = pathlib.Path(run["workdir"])
    record = {k: run[k] for k in ("mouse", "condition", "model")}
    record["workdir"] = str(workdir)
    record["results"] = load_json(workdir / "results.json")
    record["analysis"] = load_json(workdir / "analysis.json")
    record["panels"] = load_panels(workdir) if record["analysis"] else {}
    record["semantic"] = semantic_check(workdir, classes) if classes is not None else None
    return record


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
