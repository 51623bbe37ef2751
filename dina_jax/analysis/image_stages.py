"""The stages that analyse the image tower (paper Sec. 4.4, App. A.1-A.3, Fig. 5): pathways,
occlusion and blobs, each as the ``compute`` and ``figures`` functions of its ``Stage``.

They connect the analysis functions (``pathways``, ``occlusion``, ``blobs``), which know nothing
of HDF5 or figures, to the run's ``analysis.h5`` and to ``plots``. Each stage is listed, with
its settings block and its stored datasets, in :data:`dina_jax.analysis.stages.STAGES`.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from dina_jax import plots, progress
from dina_jax.analysis import blobs, occlusion, pathways
from dina_jax.analysis.stage_framework import StageContext

# ------------------------------------------------------------------- pathways (Sec. 4.4, Fig. 5a)


def pathways_compute(ctx: StageContext) -> tuple[dict, dict]:
    """SSIM of the local-only / global-only image maps to the full map: (S,) each."""
    run = ctx.inputs
    result = pathways.pathway_ssim(
        run.model, run.params, run.images, win_size=ctx.block.ssim_window
    )
    scalars = dict(
        mean_local=float(result["local"].mean()), mean_global=float(result["global"].mean())
    )
    return result, scalars


def pathways_figures(ctx: StageContext) -> list[str]:
    return [
        ctx.save(
            plots.plot_pathway_ssim(ctx.group["local"][...], ctx.group["global"][...]),
            "fig5a_pathway_ssim.png",
        )
    ]


# ------------------------------------------------------------ occlusion (App. A.1, Fig. 5b-c)


def occlusion_batch(configured: int) -> int:
    """Chunk of occluded images per feature-map call; 0 picks 256 on GPU/TPU and 8 on CPU."""
    if configured > 0:
        return int(configured)
    return 8 if jax.default_backend() == "cpu" else 256


def occlusion_compute(ctx: StageContext) -> tuple[dict, dict]:
    """RF maps (S, H, W) of the image tower, one compiled computation per image (Eq. 10-15).

    The maps are written to the group image by image (``maps``, and ``done`` (S,) bool), so an
    interrupted run continues with the first missing image.
    """
    from dina_jax.models.feature_fns import image_feature_fn

    run, group = ctx.inputs, ctx.group
    if "maps" not in group:
        group.create_dataset("maps", shape=run.images.shape, dtype="float32")
        group.create_dataset("done", data=np.zeros(len(run.images), bool))
    # The block's fields are occlusion_map's keyword arguments (repeats included: App. A.1's
    # N = 5, computed once for the deterministic models here), except the memory knob.
    options = ctx.block.to_dict()
    options["batch_size"] = occlusion_batch(options.pop("batch"))
    feature_fn = image_feature_fn(run.model, run.params)
    todo = np.nonzero(~group["done"][...])[0]
    seconds = []
    # A line at every quarter (after the first image, which compiles): the ETA in a log file.
    report_at = {1, *(round(len(todo) * q / 4) for q in (1, 2, 3))} - {0, len(todo)}
    for count, i in enumerate(progress.bar(todo, desc="occlusion maps", unit="image"), start=1):
        start = time.perf_counter()
        group["maps"][i] = np.asarray(occlusion.occlusion_map(feature_fn, run.images[i], **options))
        seconds.append(time.perf_counter() - start)
        group["done"][i] = True
        ctx.persist()
        if count in report_at:
            pace = float(np.mean(seconds[1:] or seconds))
            left = progress.eta(pace, len(todo) - count)
            print(
                f"  occlusion maps {count}/{len(todo)}: {progress.format_duration(pace)}/image, "
                f"ETA {progress.format_duration(left)}",
                flush=True,
            )
    grid = occlusion.occlusion_grid(*run.images.shape[1:], ctx.block.stride)
    scalars = dict(n_centres=int(np.prod([len(g) for g in grid])))
    if seconds:  # The first image includes compilation.
        scalars.update(
            seconds_first_image=seconds[0], seconds_per_image=float(np.mean(seconds[1:] or seconds))
        )
    return {}, scalars


def _most_blobs(rf_maps: np.ndarray, threshold: float) -> int:
    """The stimulus whose map has the most blobs (Eq. 16): the one Fig. 5b and 5d show."""
    return int(np.argmax([blobs.label_blobs(m, threshold).max() for m in rf_maps]))


def occlusion_figures(ctx: StageContext) -> list[str]:
    """Fig. 5b (one stimulus, its occluders and its map) and Fig. 5c (the first six maps)."""
    images, rf_maps = ctx.inputs.images, ctx.group["maps"][...]
    sigma, alpha = ctx.block.sigma, ctx.block.alpha
    shown = _most_blobs(rf_maps, ctx.analysis.blobs.threshold)
    height, width = rf_maps.shape[1:]
    # Occluded at the map's peak; three more centres spread over the image are only outlined.
    peak = np.unravel_index(np.argmax(rf_maps[shown]), rf_maps[shown].shape)
    centres = np.array(
        [
            peak,
            (height // 2, width // 5),
            (height // 3, width // 2),
            (2 * height // 3, 4 * width // 5),
        ]
    )
    gy, iny = occlusion.gaussian_profiles(np.array([peak[0]]), height, sigma)
    gx, inx = occlusion.gaussian_profiles(np.array([peak[1]]), width, sigma)
    occluded = np.asarray(occlusion.occlude(images[shown], gy[0], gx[0], iny[0], inx[0], alpha))
    n_show = min(6, len(images))
    return [
        ctx.save(
            plots.plot_occlusion_example(
                images[shown], occluded, rf_maps[shown], centres, sigma=sigma
            ),
            "fig5b_occlusion.png",
        ),
        ctx.save(
            plots.plot_occlusion_maps(images[:n_show], rf_maps[:n_show]),
            "fig5c_importance_maps.png",
        ),
    ]


# ------------------------------------------------------- blobs and STI (App. A.2-A.3, Fig. 5d-h)


def blobs_compute(ctx: StageContext) -> tuple[dict, dict]:
    """Blobs of every occlusion map and their shape descriptors: one table row per blob."""
    rf_maps = ctx.h5["occlusion/maps"][...]
    # The block's fields are extract_blobs' keyword arguments.
    per_image = [
        blobs.extract_blobs(m, im, **ctx.block.to_dict())
        for m, im in zip(rf_maps, ctx.inputs.images, strict=True)
    ]
    table = blobs.blob_table(per_image)
    sti = table["sti"][np.isfinite(table["sti"])]
    has_blobs, has_sti = table["area"].size > 0, sti.size > 0
    nan = float("nan")
    scalars = dict(
        count_mean=float(table["count"].mean()),
        count_std=float(table["count"].std()),
        area_mean=float(table["area"].mean()) if has_blobs else nan,
        area_std=float(table["area"].std()) if has_blobs else nan,
        sti_mean=float(sti.mean()) if has_sti else nan,
        sti_median=float(np.median(sti)) if has_sti else nan,
        sti_fraction_negative=float((sti < 0).mean()) if has_sti else nan,
        n_blobs=int(table["area"].size),
        n_blobs_without_edges=int(np.sum(~np.isfinite(table["sti"]))),
    )
    return table, scalars


def _blob_mask(table: dict, rf_maps: np.ndarray, row: int, threshold: float) -> np.ndarray:
    """(H, W) bool mask of the blob in row ``row`` of a ``blob_table``, relabelled from its map.

    ``blob_table`` lists each image's blobs in label order, so the k-th (0-based) blob of image i
    has label k + 1 (Eq. 16 + connected components); relabelling a map is cheaper than storing
    every (H, W) mask.

    Args:
      table: the stored ``blob_table`` (``image`` (n_blobs,), ``count`` (S,), ...).
      rf_maps: (S, H, W) the occlusion maps the table was computed from.
      row: the blob's row in the table.
      threshold: the blob threshold of the table (``analysis.blobs.threshold``).
    """
    image = int(table["image"][row])
    first_row = int(np.sum(table["count"][:image]))
    return blobs.label_blobs(rf_maps[image], threshold) == row - first_row + 1


def _sti_examples(table, rf_maps, images, block, n_examples=5) -> list[dict]:
    """Blobs at evenly spaced STI quantiles, with their crops and edge skeletons (Fig. 5g).

    Args:
      table: the stored ``blob_table``; rf_maps, images: (S, H, W) maps and stimuli.
      block: ``analysis.blobs`` (threshold, edge binarization).
      n_examples: blobs shown, from texture (lowest STI) to shape (highest); blobs without
        edges (STI NaN) are never picked.

    Returns:
      ``plots.plot_sti_examples``' list of dicts (crop, mask, skeleton, sti, coherence,
      tortuosity); empty when no blob has an STI.
    """
    from skimage import morphology

    finite = np.nonzero(np.isfinite(table["sti"]))[0]
    if not finite.size:
        return []
    by_sti = finite[np.argsort(table["sti"][finite], kind="stable")]
    picks = np.unique(np.linspace(0, len(by_sti) - 1, n_examples).round().astype(int))
    examples = []
    for row in by_sti[picks]:
        image = images[table["image"][row]]
        mask = _blob_mask(table, rf_maps, row, block.threshold)
        rows, cols = np.nonzero(mask)
        box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
        edges = blobs.binarize_edges(blobs.sobel_magnitude(image), mask, block.edge_binarization)
        examples.append(
            dict(
                crop=image[box],
                mask=mask[box],
                skeleton=morphology.skeletonize(edges)[box],
                sti=table["sti"][row],
                coherence=table["coherence"][row],
                tortuosity=table["tortuosity"][row],
            )
        )
    return examples


def blobs_figures(ctx: StageContext) -> list[str]:
    """Fig. 5d (the blobs of one map), 5e (counts), 5f (sizes), 5g (STI examples), 5h (STI)."""
    table = {name: ctx.group[name][...] for name in ctx.group}
    rf_maps, images = ctx.h5["occlusion/maps"][...], ctx.inputs.images
    threshold = ctx.block.threshold
    shown = int(np.argmax(table["count"]))  # = _most_blobs(rf_maps, threshold), as in Fig. 5b.
    rows = np.nonzero(table["image"] == shown)[0]
    paths = [
        ctx.save(
            plots.plot_blobs(
                images[shown],
                rf_maps[shown],
                [_blob_mask(table, rf_maps, row, threshold) for row in rows],
                threshold=threshold,
                sti=table["sti"][rows].tolist(),
            ),
            "fig5d_blobs.png",
        ),
        ctx.save(plots.plot_blob_counts(table["count"]), "fig5e_blob_count.png"),
        ctx.save(plots.plot_blob_sizes(table["area"]), "fig5f_blob_size.png"),
    ]
    examples = _sti_examples(table, rf_maps, images, ctx.block)
    if examples:
        paths.append(ctx.save(plots.plot_sti_examples(examples), "fig5g_sti_examples.png"))
    paths.append(ctx.save(plots.plot_sti_distribution(table["sti"]), "fig5h_sti.png"))
    return paths
