"""Evaluation of a trained image-neural alignment model (paper Sec. 4.2-4.3, App. B).

``evaluate(config, workdir)`` restores the best checkpoint of a run and computes, on the held-out
test images of its saved split:

* 280-way retrieval (Sec. 4.2; ``retrieval``): every neural response is a query and the test
  images are ranked by the cosine similarity of the flattened feature maps; top-1/5/10 accuracy
  and mean rank, in both directions (neural -> image, the paper's, and image -> neural);
* the numbers that put it in context (``baseline``): chance, a linear baseline (ridge regression
  from responses to the leading pixel PCs of the images, retrieval by correlation) and the
  repeat-to-repeat noise ceiling (Stringer et al.'s correlation decoder between the two halves of
  the repeats);
* the S x S image-vs-neural cosine similarity matrix (Fig. A.1);
* SSIM (``maps``), and LPIPS when local weights are given (``lpips``), between paired image- and
  neural-tower maps (Sec. 4.3);
* PCA variance spectra of the test images and both towers' maps with power-law exponents
  (Fig. 4b; ``maps``);

and writes ``results.json``, ``test_maps.npz`` and ``figures/*.png`` (Fig. 3, Fig. 4a, Fig. 4b,
Fig. A.1; ``config.figures`` sets the format) into the workdir, the figures and the test
retrieval also to ``tensorboard/``, and prints a table. This module only orchestrates: the run is
loaded by ``dina_jax.checkpoint.load_run``, the maps come from
``dina_jax.models.feature_fns.encode`` (one compiled program per model), the numbers from the
modules named above.
"""

from __future__ import annotations

import logging
import math
import os
import pathlib
from collections.abc import Sequence

import ml_collections
import numpy as np

from dina_jax import files, plots
from dina_jax.checkpoint import load_run, manager
from dina_jax.evaluation.baseline import linear_baseline, noise_ceiling
from dina_jax.evaluation.lpips import LPIPS_HOWTO, LPIPS_MISSING, map_lpips
from dina_jax.evaluation.maps import map_similarity, map_spectra
from dina_jax.evaluation.retrieval import (
    chance_metrics,
    cosine_similarity_matrix,
    retrieval_from_similarity,
    retrieval_hubness,
    retrieval_hubs,
    retrieval_metrics,
)
from dina_jax.models.feature_fns import encode, encode_neurons
from dina_jax.tensorboard_writer import TensorBoard


def evaluate(config: ml_collections.ConfigDict | None, workdir: str | os.PathLike) -> dict:
    """Evaluates the best checkpoint of ``workdir`` on its test split (Sec. 4.2-4.3, App. B).

    Loads the run (``checkpoint.load_run``: the best checkpoint, its model, the data and the
    run's split),
    encodes the test set and computes retrieval (and its context: chance, linear baseline, noise
    ceiling), the similarity matrix, paired-map SSIM / LPIPS and the variance spectra. Writes
    ``workdir/results.json`` (every number, no NaN), ``workdir/test_maps.npz`` (z_img (S, 16, 64),
    z_neu (S, 16, 64), similarity (S, S), test rows (S,), image_index (S,)) and
    ``workdir/figures/*.png``, prints the table and returns the results dict. Deterministic: the
    same checkpoint gives the same numbers.

    Args:
      config: a config whose ``data`` and ``eval`` sections are used (data paths, evaluation
        settings); None uses the run's own. The architecture always comes from the checkpoint.
      workdir: a training workdir with ``checkpoints/best``.

    Returns:
      The results: "model", "workdir", "n_test", "n_neurons", "checkpoint" (the statistics the
      model normalizes with), "retrieval", "chance", "linear_baseline", "noise_ceiling", "ssim",
      "lpips", "spectra", "hubs" (:func:`~dina_jax.evaluation.retrieval.retrieval_hubness` of
      both directions, :func:`~dina_jax.evaluation.retrieval.map_coherence` of both towers'
      maps), "figures" (as written to results.json).

    Example::

        results = dina_jax.evaluate(config, "workdirs/synthetic")   # Table 1 row, Fig. 3, 4, A.1
        results["retrieval"]["top1"], results["linear_baseline"]["top1"]
    """
    workdir = pathlib.Path(workdir)
    with files.workdir_lock(workdir, create=False):
        return _evaluate(config, workdir)


def _evaluate(config: ml_collections.ConfigDict | None, workdir: pathlib.Path) -> dict:
    model, params, config, dataset = load_run(workdir, "best", config=config)
    ev = config.eval
    topk = tuple(ev.topk)
    test = dataset.split.test
    images = dataset.images[test]
    z_img, z_neu = encode(model, params, images, dataset.responses[test], batch_size=ev.batch_size)
    similarity = np.asarray(cosine_similarity_matrix(z_img, z_neu))  # (image, neural)

    results = {
        "model": config.model.name,
        "workdir": str(workdir),
        "n_test": int(len(test)),
        "n_neurons": int(dataset.n_neurons),
        # What the checkpoint saved with its parameters; load_run put them on the dataset.
        "checkpoint": {
            "image_mean": dataset.image_mean,
            "image_std": dataset.image_std,
            "n_neurons": dataset.n_neurons,
        },
        "retrieval": retrieval_metrics(z_neu, z_img, topk),
        "chance": chance_metrics(len(test), topk),
        "linear_baseline": linear_baseline(
            dataset.images,
            dataset.responses,
            dataset.split,
            n_pcs=ev.ridge_n_pcs,
            alphas=tuple(ev.ridge_alphas),
            topk=topk,
        ),
        "noise_ceiling": noise_ceiling(dataset.halves, test, topk),
        "ssim": map_similarity(z_img, z_neu, win_size=ev.ssim_win_size),
        "lpips": map_lpips(z_img, z_neu, ev.lpips_weights, resize_hw=tuple(ev.lpips_resize_hw)),
        "spectra": map_spectra(images, z_img, z_neu, tuple(ev.spectrum_fit_range)),
        "hubs": _hubs(model, params, dataset, z_img, z_neu, similarity, topk, ev.batch_size),
    }
    tensorboard = TensorBoard(workdir)
    step = manager(workdir, "best", create=False).latest_step() or 0
    results["figures"] = write_figures(
        workdir / "figures", images, z_img, z_neu, similarity, results, config, tensorboard, step
    )
    results = _finite(results)
    for name in ("retrieval", "linear_baseline", "noise_ceiling"):
        tensorboard.scalars(f"test/{name}", results[name], step)
    tensorboard.close()

    # Atomic writes: a kill leaves the previous file or the new one, never half of one.
    with files.atomic_write(workdir / "test_maps.npz", "wb") as f:
        np.savez_compressed(
            f,
            z_img=z_img,
            z_neu=z_neu,
            similarity=similarity,
            test_rows=test,
            image_index=np.asarray(dataset.recording.image_index)[test],
        )
    files.write_json(workdir / "results.json", results, indent=2, allow_nan=False)
    print(format_table(results), flush=True)
    return results


# ------------------------------------------------------------------------ results, figures, table
def example_rows(n_test: int, n_examples: int) -> np.ndarray:
    """Evenly spaced positions in the test set: a fixed, unselected choice of example stimuli."""
    return np.unique(np.linspace(0, n_test - 1, num=min(n_examples, n_test)).round().astype(int))


def _finite(tree, where="results"):
    """Replaces non-finite floats by None (JSON null) so results.json never holds NaN, warning."""
    if isinstance(tree, dict):
        return {key: _finite(value, f"{where}.{key}") for key, value in tree.items()}
    if isinstance(tree, list | tuple):
        return [_finite(value, where) for value in tree]
    if isinstance(tree, float | np.floating) and not math.isfinite(tree):
        logging.warning("evaluate: non-finite value at %s replaced by null", where)
        return None
    if isinstance(tree, np.generic):
        return tree.item()
    return tree


def write_figures(
    folder: pathlib.Path,
    images: np.ndarray,
    z_img: np.ndarray,
    z_neu: np.ndarray,
    similarity: np.ndarray,
    results: dict,
    config: ml_collections.ConfigDict,
    tensorboard: TensorBoard | None = None,
    step: int = 0,
) -> list[str]:
    """Fig. A.1 (similarity matrix), Fig. 4a (paired maps), Fig. 3 (top-5), Fig. 4b (spectra).

    Args:
      folder: where the figures go (created), as ``config.figures.format`` at its ``dpi``.
      images: (S, 68, 270) the test images; z_img, z_neu: (S, 16, 64) their paired maps.
      similarity: (S, S) image (rows) x neural (columns) cosine similarity.
      results: the evaluation's results ("retrieval" and "spectra" are drawn).
      config: the run's config (model name, ``eval.n_example_stimuli``, ``eval.n_retrieved``,
        ``figures``).
      tensorboard: where each figure also goes, as the image ``evaluation/<name>`` at ``step``.

    Returns:
      The paths written, as strings.
    """
    name = _MODEL_LABELS.get(config.model.name, config.model.name)
    examples = example_rows(len(images), config.eval.n_example_stimuli)
    top1 = results["retrieval"]["top1"]
    figures = {
        "similarity_matrix": plots.plot_similarity_matrix(
            similarity,
            title=f"{name}: image-neural cosine similarity (test, top-1 {100 * top1:.1f}%)",
        ),
        "feature_maps": plots.plot_feature_maps(
            images[examples], {name: (z_img[examples], z_neu[examples])}
        ),
        "top5_retrieval": plots.plot_topk_retrieval(
            images, similarity, examples, n_retrieved=config.eval.n_retrieved
        ),
        "variance_spectra": plots.plot_variance_spectra(
            {
                "test images (pixels)": results["spectra"]["images"],
                "image-tower maps": results["spectra"]["image_maps"],
                "neural-tower maps": results["spectra"]["neural_maps"],
            },
            title=f"PCA variance spectra of the {len(images)} test stimuli (dashed: power-law fit"
            f" over PC ranks {'-'.join(map(str, results['spectra']['images']['fit_range']))})",
        ),
    }
    paths = []
    for key, fig in figures.items():
        paths.append(
            plots.save(fig, folder / key, format=config.figures.format, dpi=int(config.figures.dpi))
        )
        if tensorboard is not None:
            tensorboard.figure(f"evaluation/{key}", fig, step)
    return paths


# --------------------------------------------------------------------------------------- table
_MODEL_LABELS = {"dina": "DINA", "vgg16_mlp": "VGG-16-MLP", "vit_mlp": "ViT-MLP"}


def _row(label: str, metrics: dict, topk: Sequence[int], prefix: str = "") -> str:
    cells = [f"{100 * metrics[f'{prefix}top{k}']:8.2f}" for k in topk]
    rank = metrics.get(f"{prefix}mean_rank")
    cells.append(f"{rank:10.1f}" if rank is not None else f"{'-':>10}")
    return f"{label:<34}" + "".join(cells)


def _hubs(model, params, dataset, z_img, z_neu, similarity, topk, batch_size) -> dict:
    """How retrieval fails while the maps still differ: hub candidates and a pattern shared by
    every map; and, as a diagnostic (not the paper's retrieval), neural -> image retrieval with
    the normalized neural maps centred on their mean over the training responses (what
    ``loss.centre_neural`` trains for)."""

    def unit(z):
        flat = np.asarray(z, np.float32).reshape(len(z), -1)
        return flat / np.linalg.norm(flat, axis=1, keepdims=True)

    train_maps = encode_neurons(
        model, params, dataset.responses[dataset.split.train], batch_size=batch_size
    )
    centred_neu = (unit(z_neu) - unit(train_maps).mean(axis=0)).reshape(z_neu.shape)
    centred_n2i = np.asarray(cosine_similarity_matrix(z_img, centred_neu)).T  # neural queries
    centred = retrieval_from_similarity(centred_n2i, topk)
    return {
        **retrieval_hubs(similarity, z_img, z_neu),
        "n2i_centred": {
            **{k: centred[k] for k in centred if k.startswith("top") or k == "mean_rank"},
            **retrieval_hubness(centred_n2i),
        },
    }


def format_table(results: dict) -> str:
    """The evaluation as text: retrieval next to its context, then map similarity and spectra."""
    retrieval = results["retrieval"]
    topk = [int(key[3:]) for key in retrieval if key.startswith("top")]
    name = _MODEL_LABELS.get(results["model"], results["model"])
    linear = results["linear_baseline"]
    header = f"{'':<34}" + "".join(f"{f'top-{k}':>8}" for k in topk) + f"{'mean rank':>10}"
    lines = [
        f"{results['n_test']}-way retrieval on the test images (accuracy %, neural query -> image)",
        header,
        _row(f"{name} (cosine of feature maps)", retrieval, topk),
        _row(f"Linear ridge -> {linear['n_pcs']} pixel PCs", linear, topk),
        _row("Noise ceiling (repeat halves)", results["noise_ceiling"], topk),
        _row("Chance", results["chance"], topk),
        _row(f"{name}, image query -> neural", retrieval, topk, prefix="i2n_"),
        f"(linear baseline: alpha = {linear['alpha']:g} chosen on validation top-1)",
        "",
        "Paired image/neural feature maps (Sec. 4.3)",
        f"  SSIM (min-max normalized, win {results['ssim']['win_size']}): "
        f"{results['ssim']['mean']:.3f} ± {results['ssim']['std']:.3f}"
        f"   [unpaired {results['ssim']['unpaired_mean']:.3f} ± "
        f"{results['ssim']['unpaired_std']:.3f}; raw maps {results['ssim']['raw_mean']:.3f}]",
    ]
    lpips = results["lpips"]
    if lpips.get("status") == "computed":
        lines.append(f"  LPIPS: {lpips['mean']:.3f} ± {lpips['std']:.3f}")
    else:
        lines.append(f"  {LPIPS_MISSING}: {LPIPS_HOWTO}")
    hubs = results.get("hubs")  # results.json files before 2026-12-06 have none
    if hubs:
        n2i = hubs["n2i"]
        lines.append(
            f"  Hubs: the most retrieved image is the top-1 of {100 * n2i['hub_share']:.0f}% of "
            f"the neural queries ({100 * n2i['distinct_top1']:.0f}% of the images are some "
            "query's top-1); mean cosine between the maps of different stimuli: neural "
            f"{hubs['coherence_neural']:.2f}, image {hubs['coherence_image']:.2f}; with the "
            "neural maps centred on their training mean (a diagnostic): top-1 "
            f"{100 * hubs['n2i_centred']['top1']:.1f}%, the most retrieved image "
            f"{100 * hubs['n2i_centred']['hub_share']:.0f}%"
        )
    spectra_ = results["spectra"]
    fit = spectra_["images"]["fit_range"]
    lines.append(
        f"Variance-spectrum power-law exponents (PC ranks {fit[0]}-{fit[1]}): "
        + ", ".join(
            f"{label} {spectra_[key]['alpha']:.2f}"
            for key, label in (
                ("images", "images"),
                ("image_maps", "image maps"),
                ("neural_maps", "neural maps"),
            )
        )
    )
    return "\n".join(lines)
