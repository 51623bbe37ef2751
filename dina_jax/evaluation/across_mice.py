"""From the workdirs of a reproduction to its statistics over mice (experiments/reproduce.py).

Each run is one (condition, mouse, model) workdir:

  :func:`collect`     one record per run: its ``results.json``, ``analysis.json`` summary, the
                      arrays of ``analysis.h5`` the four-mouse panels draw, and the semantic
                      check of ``test_maps.npz``;
  :func:`aggregate`   mean, sd, SEM, min and max over mice of every quantity, and the
                      paper-vs-run table (``aggregate(records)["comparison"]``, from
                      :func:`dina_jax.evaluation.paper.comparison`);
  :func:`spread`      those statistics of one ``{mouse: value}``.

Spreads: ``sd`` is the sample standard deviation over mice (ddof 1) and ``sem`` = sd / sqrt(n);
both are NaN (null in JSON) for a single mouse.
"""

from __future__ import annotations

import json
import math
import pathlib
from collections.abc import Iterable

import numpy as np

from dina_jax.evaluation.paper import CONDITIONS, MODELS, TOPK, _get, comparison

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
      workdir: an evaluated run; classes: a ``stimuli.ClassAssignment`` of its images file.

    Returns:
      The scalars, ``class_counts`` and the confusions as lists, ``class_names``; None without
      ``test_maps.npz``.

    Raises:
      DataError: the class file has fewer entries than the run's images file rows.
    """
    from dina_jax.data import DataError
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
