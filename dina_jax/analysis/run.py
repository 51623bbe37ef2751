"""The interpretability analyses of a trained run (paper Sec. 4.4-4.5, Fig. 5-6) in one call.

    from dina_jax.analysis.run import analyze
    summary = analyze(config, workdir)

restores the best checkpoint of ``workdir``, takes the first ``config.analysis.n_images`` test
stimuli of the run's split and runs, in this order:

  pathways    SSIM of the local-only / global-only image feature maps to the full map (Fig. 5a);
  occlusion   Gaussian-occlusion importance maps, one compiled computation per image (Fig. 5b-c);
  blobs       blobs of every map, their sizes, counts and Shape-Texture Index (Fig. 5d-h);
  ablation    response-ranked vs random neuron subsets (Fig. 6a);
  attention   streamed attention-score histogram with a log-normal fit (Fig. 6b);
  validation  (simulated data only) occlusion maps vs the simulated RFs that drive the population,
              and the ablation ranking vs the simulator's high-gain neurons.

Results go to ``workdir/analysis.h5`` (one group per part), a summary to
``workdir/analysis.json`` and figures to ``workdir/figures/fig5*.png`` and ``fig6*.png``. The run
is resumable: a part whose group is complete and was computed with the same settings and stimuli
is skipped, and occlusion maps are stored image by image. The model, data and split come from the
workdir (the checkpoint's config); the ``analysis`` settings from ``config``.
"""

from __future__ import annotations

import functools
import json
import os
import time

import h5py
import jax
import numpy as np
from tqdm import tqdm

from dina_jax import plots
from dina_jax.analysis import ablation, attention_stats, blobs, occlusion, pathways, validation

FIGURES = "figures"


# ------------------------------------------------------------------------- HDF5 bookkeeping


# Bump a stage's number when its results change for the same settings (forces a recompute).
STAGE_VERSIONS = dict(pathways=2, occlusion=3, blobs=2, ablation=2, attention=2, validation=3)


def _settings_key(name: str, settings: dict) -> str:
    return json.dumps(dict(settings, version=STAGE_VERSIONS[name]), sort_keys=True, default=str)


def _open_stage(h5: h5py.File, name: str, settings: dict) -> tuple[h5py.Group, bool]:
    """Returns (group, done): the stored group if it was completed with these settings, else a
    fresh (emptied) group."""
    key = _settings_key(name, settings)
    if name in h5:
        group = h5[name]
        if group.attrs.get("settings") == key and group.attrs.get("complete", False):
            return group, True
        if group.attrs.get("settings") == key and name == "occlusion":
            return group, False  # Partially done occlusion maps are kept.
        del h5[name]
    group = h5.create_group(name)
    group.attrs["settings"] = key
    group.attrs["complete"] = False
    return group, False


def _write(group: h5py.Group, arrays: dict, attrs: dict | None = None) -> None:
    for name, value in arrays.items():
        if name in group:
            del group[name]
        group.create_dataset(name, data=np.asarray(value))
    for name, value in (attrs or {}).items():
        group.attrs[name] = value
    group.attrs["complete"] = True
    group.file.flush()


def _scalars(group: h5py.Group) -> dict:
    return {
        k: (v.item() if hasattr(v, "item") else v)
        for k, v in group.attrs.items()
        if k not in ("settings", "complete")
    }


# ------------------------------------------------------------------------------- the stages


def _pathway_stage(h5, model, params, images, an, rows):
    settings = dict(rows=rows.tolist(), win=an.pathways.ssim_window)
    group, done = _open_stage(h5, "pathways", settings)
    if not done:
        result = pathways.pathway_ssim(model, params, images, win_size=an.pathways.ssim_window)
        _write(
            group,
            result,
            dict(
                mean_local=float(result["local"].mean()), mean_global=float(result["global"].mean())
            ),
        )
    return {name: group[name][...] for name in ("local", "global")}, _scalars(group)


def occlusion_batch(configured: int) -> int:
    """Chunk of occluded images per feature-map call; 0 picks 256 on GPU/TPU and 8 on CPU."""
    if configured > 0:
        return int(configured)
    return 8 if jax.default_backend() == "cpu" else 256


def _occlusion_stage(h5, feature_fn, images, an, rows):
    settings = dict(
        rows=rows.tolist(),
        sigma=an.occlusion.sigma,
        stride=an.occlusion.stride,
        alpha=an.occlusion.alpha,
        measure=an.occlusion.measure,
        window=an.occlusion.ssim_window,
        repeats=an.occlusion.repeats,
    )
    group, done = _open_stage(h5, "occlusion", settings)
    n = len(images)
    if "maps" not in group:
        group.create_dataset("maps", shape=(n,) + images.shape[1:], dtype="float32")
        group.create_dataset("done", data=np.zeros(n, bool))
    todo = np.nonzero(~group["done"][...])[0]
    options = dict(
        sigma=an.occlusion.sigma,
        stride=an.occlusion.stride,
        alpha=an.occlusion.alpha,
        measure=an.occlusion.measure,
        ssim_window=an.occlusion.ssim_window,
        repeats=an.occlusion.repeats,  # App. A.1's N = 5; one pass for a deterministic model.
        batch_size=occlusion_batch(an.occlusion.batch),
    )
    seconds = []
    for i in tqdm(todo, desc="occlusion maps", unit="image", disable=not len(todo)):
        start = time.perf_counter()
        rf = np.asarray(occlusion.occlusion_map(feature_fn, images[i], **options))
        seconds.append(time.perf_counter() - start)
        group["maps"][i] = rf
        group["done"][i] = True
        h5.flush()
    if not done:
        group.attrs["complete"] = True
        if seconds:  # The first image includes compilation.
            group.attrs["seconds_first_image"] = seconds[0]
            group.attrs["seconds_per_image"] = float(np.mean(seconds[1:] or seconds))
        group.attrs["n_centres"] = int(
            np.prod(
                [len(g) for g in occlusion.occlusion_grid(*images.shape[1:], an.occlusion.stride)]
            )
        )
    return group["maps"][...], _scalars(group)


def _blob_stage(h5, rf_maps, images, an, rows):
    settings = dict(
        rows=rows.tolist(),
        threshold=an.blobs.threshold,
        tex_alpha=an.blobs.tex_alpha,
        orientation=an.blobs.orientation,
        min_segment_length=an.blobs.min_segment_length,
        edge_binarization=an.blobs.edge_binarization,
        maps=h5["occlusion"].attrs["settings"],
    )
    options = dict(
        threshold=an.blobs.threshold,
        tex_alpha=an.blobs.tex_alpha,
        orientation=an.blobs.orientation,
        min_segment_length=an.blobs.min_segment_length,
        edge_binarization=an.blobs.edge_binarization,
    )
    per_image = [
        blobs.extract_blobs(m, im, **options) for m, im in zip(rf_maps, images, strict=True)
    ]
    group, done = _open_stage(h5, "blobs", settings)
    if not done:
        table = blobs.blob_table(per_image)
        sti = table["sti"][np.isfinite(table["sti"])]
        _write(
            group,
            table,
            dict(
                count_mean=float(table["count"].mean()),
                count_std=float(table["count"].std()),
                area_mean=float(table["area"].mean()) if table["area"].size else float("nan"),
                area_std=float(table["area"].std()) if table["area"].size else float("nan"),
                sti_mean=float(sti.mean()) if sti.size else float("nan"),
                sti_median=float(np.median(sti)) if sti.size else float("nan"),
                sti_fraction_negative=float((sti < 0).mean()) if sti.size else float("nan"),
                n_blobs=int(table["area"].size),
                n_blobs_without_edges=int(np.sum(~np.isfinite(table["sti"]))),
            ),
        )
    return {k: group[k][...] for k in group}, per_image, _scalars(group)


def _ablation_stage(h5, model, params, responses, an, rows, seed):
    settings = dict(
        rows=rows.tolist(),
        fractions=list(an.ablation.fractions),
        draws=an.ablation.random_draws,
        target=an.ablation.ssim_target,
        win=an.ablation.ssim_window,
        seed=seed,
    )
    group, done = _open_stage(h5, "ablation", settings)
    if not done:
        neural_fn = jax.tree_util.Partial(
            functools.partial(_encode_neurons, model), {"params": params}
        )
        result = ablation.neuron_ablation(
            neural_fn,
            responses,
            fractions=an.ablation.fractions,
            n_random=an.ablation.random_draws,
            key=jax.random.fold_in(jax.random.key(seed), 6),
            target=an.ablation.ssim_target,
            win_size=an.ablation.ssim_window,
            mask_batch=an.ablation.mask_batch,
            progress=lambda it: tqdm(it, desc="neuron ablation", unit="chunk"),
        )
        scalars = {k: v for k, v in result.items() if np.ndim(v) == 0}
        arrays = {k: v for k, v in result.items() if np.ndim(v) > 0}
        _write(group, arrays, scalars)
    return {k: group[k][...] for k in group}, _scalars(group)


def _attention_stage(h5, model, params, responses, an, rows, block_size):
    n = min(an.attention.samples, len(responses))
    settings = dict(rows=rows[:n].tolist(), bins=an.attention.bins, block=block_size)
    group, done = _open_stage(h5, "attention", settings)
    if not done:
        qk_fn = jax.tree_util.Partial(functools.partial(_attention_qk, model), {"params": params})
        edges = attention_stats.attention_bin_edges(responses.shape[1], an.attention.bins)
        counts, moments = attention_stats.attention_histogram_stream(
            qk_fn,
            responses[:n],
            edges,
            batch_size=1,
            block_size=block_size,
            progress=lambda it: tqdm(it, desc="attention scores", unit="stimulus"),
        )
        summary = attention_stats.attention_summary(counts, moments, edges)
        _write(group, dict(bin_edges=edges, counts=counts), summary)
    return {k: group[k][...] for k in group}, _scalars(group)


def _validation_stage(h5, rf_maps, responses, ground_truth, order, an, rows):
    settings = dict(
        rows=rows.tolist(), maps=h5["occlusion"].attrs["settings"], q=an.validation.gain_quantile
    )
    group, done = _open_stage(h5, "validation", settings)
    if not done:
        footprints = validation.drive_footprints(responses, ground_truth, rf_maps.shape[1:])
        occ = validation.occlusion_footprint_score(rf_maps, footprints)
        truth = validation.high_gain_neurons(ground_truth, an.validation.gain_quantile)
        overlap = ablation.ground_truth_overlap(order, truth)
        _write(
            group,
            dict(
                occlusion_score=occ["score"],
                occlusion_control=occ["control"],
                occlusion_percentile=occ["percentile"],
                high_gain=truth,
            ),
            dict(
                occlusion_mean_score=occ["mean_score"],
                occlusion_mean_control=occ["mean_control"],
                occlusion_area_fraction=occ["area_fraction"],
                occlusion_median_percentile=float(np.median(occ["percentile"])),
                occlusion_p_value=occ["p_value"],
                **{f"ablation_{k}": v for k, v in overlap.items()},
            ),
        )
    return _scalars(group)


def _encode_neurons(model, variables, responses, neuron_mask):
    return model.apply(variables, responses, neuron_mask=neuron_mask, method="encode_neurons")


def _attention_qk(model, variables, responses):
    return model.apply(variables, responses, method="neural_attention_qk")


# ------------------------------------------------------------------------------------ figures


def _sti_examples(per_image, images, edge_binarization, n_examples=5):
    """Blobs at evenly spaced STI quantiles, with their crops and edge skeletons (Fig. 5g)."""
    from skimage import morphology

    candidates = [(b.sti, i, b) for i, bl in enumerate(per_image) for b in bl if np.isfinite(b.sti)]
    if not candidates:
        return []
    candidates.sort(key=lambda c: c[0])
    picks = np.unique(np.linspace(0, len(candidates) - 1, n_examples).round().astype(int))
    examples = []
    for p in picks:
        sti, i, blob = candidates[p]
        rows, cols = np.nonzero(blob.mask)
        box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
        edges = blobs.binarize_edges(blobs.sobel_magnitude(images[i]), blob.mask, edge_binarization)
        skeleton = morphology.skeletonize(edges)
        examples.append(
            dict(
                crop=images[i][box],
                mask=blob.mask[box],
                skeleton=skeleton[box],
                sti=sti,
                coherence=blob.coherence,
                tortuosity=blob.tortuosity,
            )
        )
    return examples


def make_figures(workdir, images, rf_maps, per_image, results, an) -> list[str]:
    """Writes Fig. 5a-h and Fig. 6a-b PNGs under ``workdir/figures`` and returns their paths."""
    out = os.path.join(workdir, FIGURES)
    paths = []
    if "pathways" in results:
        paths.append(
            plots.plot_pathway_ssim(
                results["pathways"]["local"],
                results["pathways"]["global"],
                os.path.join(out, "fig5a_pathway_ssim.png"),
            )
        )
    # Fig. 5b: the most structured map's stimulus, occluded at its peak and at a few other centres.
    shown = int(np.argmax([len(b) for b in per_image])) if per_image else 0
    peak = np.unravel_index(np.argmax(rf_maps[shown]), rf_maps[shown].shape)
    height, width = rf_maps.shape[1:]
    centres = np.array(
        [
            peak,
            (height // 2, width // 5),
            (height // 3, width // 2),
            (2 * height // 3, 4 * width // 5),
        ]
    )
    rows_c, cols_c = occlusion.occlusion_grid(height, width, 1)
    gy, iny = occlusion.gaussian_profiles(rows_c[[peak[0]]], height, an.occlusion.sigma)
    gx, inx = occlusion.gaussian_profiles(cols_c[[peak[1]]], width, an.occlusion.sigma)
    occluded = np.asarray(
        occlusion.occlude(images[shown], gy[0], gx[0], iny[0], inx[0], an.occlusion.alpha)
    )
    paths.append(
        plots.plot_occlusion_example(
            images[shown],
            occluded,
            rf_maps[shown],
            centres,
            os.path.join(out, "fig5b_occlusion.png"),
            sigma=an.occlusion.sigma,
        )
    )
    n_show = min(6, len(images))
    paths.append(
        plots.plot_occlusion_maps(
            images[:n_show], rf_maps[:n_show], os.path.join(out, "fig5c_importance_maps.png")
        )
    )
    table = results["blobs"]
    paths.append(
        plots.plot_blobs(
            images[shown],
            rf_maps[shown],
            [b.mask for b in per_image[shown]],
            os.path.join(out, "fig5d_blobs.png"),
            threshold=an.blobs.threshold,
            sti=[b.sti for b in per_image[shown]],
        )
    )
    paths.append(plots.plot_blob_counts(table["count"], os.path.join(out, "fig5e_blob_count.png")))
    paths.append(plots.plot_blob_sizes(table["area"], os.path.join(out, "fig5f_blob_size.png")))
    examples = _sti_examples(per_image, images, an.blobs.edge_binarization)
    if examples:
        paths.append(plots.plot_sti_examples(examples, os.path.join(out, "fig5g_sti_examples.png")))
    paths.append(plots.plot_sti_distribution(table["sti"], os.path.join(out, "fig5h_sti.png")))
    if "ablation" in results:
        ab = results["ablation"]
        paths.append(
            plots.plot_ablation(
                ab["fractions"],
                ab["ranked_curve"],
                ab["random_curve"],
                os.path.join(out, "fig6a_ablation.png"),
                target=an.ablation.ssim_target,
            )
        )
    if "attention" in results:
        at, fit = results["attention"], results["summary"]["attention"]
        paths.append(
            plots.plot_attention_distribution(
                at["bin_edges"],
                at["counts"],
                os.path.join(out, "fig6b_attention.png"),
                mu=fit["mu"],
                sigma=fit["sigma"],
                ks=fit["ks"],
            )
        )
    return paths


# ------------------------------------------------------------------------------------- driver


def analyze(config, workdir: str) -> dict:
    """Runs every analysis on the test stimuli of a trained run; see the module docstring.

    Args:
      config: full ConfigDict; its ``analysis`` section sets what is computed.
      workdir: a trained run (``checkpoints/best``, ``split.json``).

    Returns:
      A summary dict (also written to ``workdir/analysis.json``): per part the scalar results,
      and ``figures``, the PNGs written.
    """
    from dina_jax import train
    from dina_jax.data import pipeline
    from dina_jax.models import build_model

    an = config.analysis
    params, run_config, stats = train.restore(workdir, "best")
    run_config = with_defaults(run_config)
    model = build_model(
        run_config,
        int(stats["n_neurons"]),
        image_mean=float(stats["image_mean"]),
        image_std=float(stats["image_std"]),
    )
    dataset = pipeline.load_dataset(run_config, workdir=workdir)
    split_path = os.path.join(workdir, "split.json")
    split = pipeline.load_split(split_path) if os.path.exists(split_path) else dataset.split
    rows = np.asarray(split.test[: an.n_images])
    images = np.asarray(dataset.images[rows], np.float32)
    responses = np.asarray(dataset.responses[rows], np.float32)
    is_dina = run_config.model.name == "dina"
    print(
        f"analysing {len(rows)} test stimuli of {workdir} ({run_config.model.name}, "
        f"{responses.shape[1]} neurons) on {jax.devices()[0].platform}",
        flush=True,
    )

    results: dict = {}
    summary: dict = {}
    feature_fn = jax.tree_util.Partial(
        functools.partial(model.apply, method="encode_images"), {"params": params}
    )
    path = os.path.join(workdir, "analysis.h5")
    with h5py.File(path, "a") as h5:
        h5.attrs["workdir"] = os.path.abspath(workdir)
        _write_rows(h5, rows)
        if is_dina:
            results["pathways"], summary["pathways"] = _pathway_stage(
                h5, model, params, images, an, rows
            )
        rf_maps, summary["occlusion"] = _occlusion_stage(h5, feature_fn, images, an, rows)
        results["blobs"], per_image, summary["blobs"] = _blob_stage(h5, rf_maps, images, an, rows)
        results["ablation"], summary["ablation"] = _ablation_stage(
            h5, model, params, responses, an, rows, run_config.seed
        )
        if is_dina:
            results["attention"], summary["attention"] = _attention_stage(
                h5, model, params, responses, an, rows, run_config.model.neural.block_size
            )
        if dataset.ground_truth is not None:
            summary["validation"] = _validation_stage(
                h5, rf_maps, responses, dataset.ground_truth, results["ablation"]["order"], an, rows
            )
    results["summary"] = summary
    summary["figures"] = make_figures(workdir, images, rf_maps, per_image, results, an)
    with open(os.path.join(workdir, "analysis.json"), "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True, default=float)
        f.write("\n")
    _print_summary(summary)
    return summary


def with_defaults(config):
    """The base config updated with ``config``: fields added after a run was trained take their
    defaults, so older runs stay analysable.

    The flat ``analysis`` fields of older configs (``analysis.occlusion_stride``, ...) move to
    their per-stage blocks (``analysis.occlusion.stride``; ``config.LEGACY_ANALYSIS_FIELDS``).
    """
    from dina_jax.config import LEGACY_ANALYSIS_FIELDS, get_base_config

    values = config.to_dict()
    analysis = values.get("analysis", {})
    for old, new in LEGACY_ANALYSIS_FIELDS.items():
        if old in analysis:
            block, field = new.split(".")
            analysis.setdefault(block, {})[field] = analysis.pop(old)
    merged = get_base_config()
    merged.update(values)
    return merged


def _write_rows(h5, rows):
    if "rows" in h5 and not np.array_equal(h5["rows"][...], rows):
        del h5["rows"]
    if "rows" not in h5:
        h5.create_dataset("rows", data=rows)


def _print_summary(summary: dict) -> None:
    for part, values in summary.items():
        if part == "figures":
            continue
        text = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in sorted(values.items())
        )
        print(f"[{part}] {text}", flush=True)
