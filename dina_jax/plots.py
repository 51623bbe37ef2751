"""Matplotlib figures for every paper figure: each function takes arrays and returns a Figure.

Figures are ``matplotlib.figure.Figure`` objects, not pyplot figures: importing this module
changes no backend, nothing is left open in pyplot, and a notebook shows a returned figure as
it is (``display(fig)``, or as the cell's value). Single-panel plots take ``ax=`` to draw into
an existing axes (their figure is returned). :func:`save` writes a figure as PNG, PDF or SVG::

    fig = plots.plot_variance_spectra(spectra)
    plots.save(fig, "figures/variance_spectra", format="pdf", dpi=200)
"""

from __future__ import annotations

import pathlib

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Circle

FORMATS = ("png", "pdf", "svg")


def save(fig: Figure, path, *, format: str = "png", dpi: int = 120) -> str:
    """Writes ``fig`` to ``path`` with the suffix of ``format`` (png, pdf or svg; the parent
    folders are created) and returns the path written."""
    if format not in FORMATS:
        raise ValueError(f"figure format must be one of {FORMATS}, got {format!r}")
    path = pathlib.Path(path)
    path = (
        path.with_suffix(f".{format}") if path.suffix else path.with_name(f"{path.name}.{format}")
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format=format, dpi=dpi, bbox_inches="tight")
    return str(path)


def _axes(ax, figsize):
    """(figure, axes): a new one-panel Figure, or the figure of the given ``ax``."""
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize)
    return fig, fig.add_subplot()


def _grid(nrows: int, ncols: int, figsize, **kwargs):
    """(figure, (nrows, ncols) axes) of a new Figure."""
    fig = Figure(figsize=figsize, layout=kwargs.pop("layout", None))
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kwargs)


# ---------------------------------------------------- Evaluation: Fig. 3, Fig. 4, Fig. A.1–A.2


def _show_map(ax, array, cmap="viridis", title=None):
    """Draws an image or feature map without ticks, keeping its 1:4 aspect ratio."""
    ax.imshow(array, cmap=cmap, aspect="equal", interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def plot_similarity_matrix(
    similarity, *, title="Image-neural cosine similarity", ax=None
) -> Figure:
    """Fig. A.1: cosine similarity of image-tower maps (rows) and neural-tower maps (columns).

    Args:
      similarity: (n, n) with the matched pairs on the diagonal.
    """
    fig, ax = _axes(ax, (5.2, 4.4))
    image = ax.imshow(similarity, cmap="viridis", interpolation="nearest")
    ax.set_xlabel("neural-tower feature map (test stimulus)")
    ax.set_ylabel("image-tower feature map (test stimulus)")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="cosine similarity")
    return fig


def plot_similarity_matrices(similarities: dict, *, suptitle=None) -> Figure:
    """Fig. A.1 for several mice/models side by side: {label: (n, n) similarity}."""
    n = len(similarities)
    fig, axes = _grid(1, n, (4.6 * n, 4.0))
    for ax, (label, similarity) in zip(axes[0], similarities.items(), strict=True):
        plot_similarity_matrix(similarity, title=label, ax=ax)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def plot_feature_maps(images, maps: dict, *, titles=None) -> Figure:
    """Fig. 4a / Fig. A.2: each stimulus beside its image-tower and neural-tower feature maps.

    Args:
      images: (n, 68, 270) stimuli.
      maps: {model label: (z_img, z_neu)}, each (n, 16, 64) (or (n, 1, 16, 64)); one pair of
        columns per model, every map min-max scaled for display on its own.
      titles: optional (n,) row labels (e.g. the test-stimulus number).
    """
    n = len(images)
    n_cols = 1 + 2 * len(maps)
    fig, axes = _grid(n, n_cols, (2.6 * n_cols, 0.85 * n + 0.6))
    for row in range(n):
        _show_map(axes[row, 0], images[row], cmap="gray", title="stimulus" if row == 0 else None)
        if titles is not None:
            axes[row, 0].set_ylabel(titles[row], fontsize=8)
        for j, (label, (z_img, z_neu)) in enumerate(maps.items()):
            hw = z_img.shape[-2:]
            first = row == 0
            _show_map(
                axes[row, 1 + 2 * j],
                np.reshape(z_img[row], hw),
                title=f"{label}\nimage-tower map" if first else None,
            )
            _show_map(
                axes[row, 2 + 2 * j],
                np.reshape(z_neu[row], hw),
                title=f"{label}\nneural-tower map" if first else None,
            )
    fig.subplots_adjust(wspace=0.05, hspace=0.08)
    return fig


def plot_topk_retrieval(images, similarity, query_rows, *, n_retrieved=5) -> Figure:
    """Fig. 3: for each neural query, its true stimulus and the n_retrieved most similar images.

    Args:
      images: (n, 68, 270) the candidate test images, in the order of similarity's rows.
      similarity: (n, n) image (rows) x neural (columns) cosine similarity.
      query_rows: test positions of the neural queries shown.
    A retrieved image framed in green is the true stimulus; its cosine similarity is printed
    above every retrieved image.
    """
    n = len(query_rows)
    fig, axes = _grid(n, n_retrieved + 1, (2.4 * (n_retrieved + 1), 0.9 * n + 0.6))
    for row, query in enumerate(query_rows):
        scores = np.asarray(similarity)[:, query]
        order = np.argsort(-scores, kind="stable")[:n_retrieved]
        _show_map(axes[row, 0], images[query], cmap="gray")
        axes[row, 0].set_ylabel(f"query {query}", fontsize=8)
        if row == 0:
            axes[row, 0].set_title("stimulus of the\nneural query", fontsize=8)
        for j, candidate in enumerate(order):
            ax = axes[row, j + 1]
            _show_map(ax, images[candidate], cmap="gray")
            hit = candidate == query
            ax.set_title(
                (f"top-{j + 1}\n" if row == 0 else "") + f"cos {scores[candidate]:.2f}",
                fontsize=7,
                color="green" if hit else "black",
            )
            for spine in ax.spines.values():
                spine.set_edgecolor("limegreen" if hit else "0.7")
                spine.set_linewidth(3 if hit else 0.5)
    title = f"Top-{n_retrieved} images retrieved from neural responses (green: true stimulus)"
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(wspace=0.05, hspace=0.35)
    return fig


def plot_variance_spectra(spectra: dict, *, title="PCA variance spectra", ax=None) -> Figure:
    """Fig. 4b: normalized PCA variance vs PC rank (log-log) with the fitted power laws.

    Args:
      spectra: {label: {"variance": (K,), "alpha": float, "fit_range": (lo, hi)}}.
    """
    fig, ax = _axes(ax, (4.8, 4.0))
    for (label, spectrum), color in zip(
        spectra.items(), matplotlib.colormaps["tab10"].colors, strict=False
    ):
        var = np.asarray(spectrum["variance"], dtype=np.float64)
        ranks = np.arange(1, len(var) + 1)
        keep = var > 0
        ax.loglog(
            ranks[keep],
            var[keep],
            color=color,
            lw=1.5,
            label=f"{label} (α = {spectrum['alpha']:.2f})",
        )
        lo, hi = spectrum["fit_range"]
        if hi > lo:
            fit_ranks = np.arange(lo, hi + 1)
            log_var = np.log(var[lo - 1 : hi])
            # The drawn line is the least-squares fit with the reported slope -alpha.
            offset = np.mean(log_var + spectrum["alpha"] * np.log(fit_ranks))
            ax.loglog(
                fit_ranks,
                np.exp(offset) * fit_ranks ** -spectrum["alpha"],
                "--",
                color="black",
                lw=0.8,
            )
    ax.set_xlabel("PC rank")
    ax.set_ylabel("fraction of variance")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    return fig


def plot_retrieval_bars(
    accuracies: dict, *, title, ylabel="retrieval accuracy (%)", ax=None
) -> Figure:
    """Grouped bars of top-k accuracy (Fig. 4c; Table 1 at a glance).

    Args:
      accuracies: {group label: {"top1": [values in %, one per mouse], "top5": [...], ...}}; the
        bar is the mean over mice and the dots are the individual mice.
    """
    groups = list(accuracies)
    keys = list(next(iter(accuracies.values())))
    width = 0.8 / len(keys)
    fig, ax = _axes(ax, (1.6 + 1.4 * len(groups), 3.6))
    for j, key in enumerate(keys):
        x = np.arange(len(groups)) + (j - (len(keys) - 1) / 2) * width
        values = [np.asarray(accuracies[g][key], dtype=np.float64) for g in groups]
        ax.bar(x, [v.mean() for v in values], width * 0.9, label=key.replace("top", "top-"))
        for xi, v in zip(x, values, strict=True):
            ax.plot(np.full(len(v), xi), v, "k.", ms=4)
    ax.set_xticks(np.arange(len(groups)), groups)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, frameon=False)
    return fig


# -------------------------------------------------------------------- Analyses: Fig. 5 and Fig. 6

_GROUP_COLORS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860")


def _as_groups(values) -> dict:
    """An array becomes {"": array}; a dict {label: array} (e.g. one entry per mouse) is kept."""
    return dict(values) if isinstance(values, dict) else {"": values}


def plot_pathway_ssim(local, global_, *, title="Pathway masking", ax=None) -> Figure:
    """Fig. 5a: SSIM of the map with only one pathway kept to the full map, per stimulus.

    Args:
      local, global_: (S,) SSIM with only the local / only the global pathway, or
        {mouse: (S,)} dicts with the same keys (one pair of boxes per mouse).
    """
    local, global_ = _as_groups(local), _as_groups(global_)
    fig, ax = _axes(ax, (2.2 + 1.3 * len(local), 3.4))
    rng = np.random.default_rng(0)
    ticks, labels = [], []
    for g, label in enumerate(local):
        for p, (name, values, color) in enumerate(
            (("local only", local[label], "#8DA0CB"), ("global only", global_[label], "#FC8D62"))
        ):
            x = 3 * g + p
            values = np.asarray(values)
            ax.boxplot(
                values,
                positions=[x],
                widths=0.6,
                showfliers=False,
                patch_artist=True,
                boxprops=dict(facecolor=color, alpha=0.6),
                medianprops=dict(color="k"),
            )
            ax.scatter(
                x + rng.uniform(-0.18, 0.18, values.size),
                values,
                s=5,
                color="k",
                alpha=0.4,
                zorder=3,
            )
            ticks.append(x)
            labels.append(f"{label}\n{name}" if label else name)
    ax.set_xticks(ticks, labels, fontsize=8)
    ax.set_ylabel("SSIM to the full feature map")
    ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.02)
    ax.set_title(title, fontsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def plot_occlusion_example(image, occluded, rf_map, centres, *, sigma=4.0) -> Figure:
    """Fig. 5b: the stimulus with Gaussian windows, one occluded image and the resulting RF map.

    Args:
      image: (H, W) stimulus; occluded: (H, W) the stimulus occluded at ``centres[0]``.
      rf_map: (H, W) normalized RF map of the stimulus.
      centres: (n, 2) (row, col) of a few occlusion centres to outline (3 sigma circles).
    """
    fig, axes = _grid(3, 1, (7.0, 6.0))
    axes = axes[:, 0]
    _show_map(axes[0], image, cmap="gray", title="stimulus and Gaussian occluders (3 sigma)")
    for k, (row, col) in enumerate(np.asarray(centres)):
        color = "#66C2A5" if k == 0 else "#FC8D62"  # The first centre is the one occluded below.
        axes[0].add_patch(Circle((col, row), 3 * sigma, fill=False, color=color, lw=1.2))
        axes[0].plot(col, row, "+", color=color, ms=5)
    axes[0].set_xlim(-0.5, image.shape[1] - 0.5)
    axes[0].set_ylim(image.shape[0] - 0.5, -0.5)
    _show_map(axes[1], occluded, cmap="gray", title="occluded at the green centre (Eq. 11)")
    _show_map(axes[2], rf_map, cmap="inferno", title="occlusion importance map (Eq. 14-15)")
    return fig


def plot_occlusion_maps(images, rf_maps, *, titles=None) -> Figure:
    """Fig. 5c: stimuli and their occlusion importance maps (overlay), one stimulus per row.

    Args:
      images: (n, H, W) stimuli; rf_maps: (n, H, W) normalized RF maps; titles: optional (n,).
    """
    n = len(images)
    fig, axes = _grid(n, 2, (9.0, 1.25 * n + 0.5), layout="constrained")
    for i in range(n):
        _show_map(axes[i, 0], images[i], cmap="gray", title="stimulus" if i == 0 else None)
        axes[i, 1].imshow(images[i], cmap="gray", interpolation="nearest")
        overlay = axes[i, 1].imshow(
            rf_maps[i], cmap="inferno", alpha=0.65, vmin=0, vmax=1, interpolation="nearest"
        )
        axes[i, 1].set_xticks([])
        axes[i, 1].set_yticks([])
        if i == 0:
            axes[i, 1].set_title("importance map", fontsize=8)
        if titles is not None:
            axes[i, 0].set_ylabel(str(titles[i]), fontsize=7)
    fig.colorbar(overlay, ax=axes[:, 1], shrink=min(1.0, 3.0 / n), label="importance R_hat")
    return fig


def plot_blobs(image, rf_map, blob_masks, *, threshold=0.6, sti=None) -> Figure:
    """Fig. 5d: the importance map's 0.6 iso-contour and the blobs it encloses, on the stimulus.

    Args:
      image, rf_map: (H, W); blob_masks: list of (H, W) bool; sti: optional STI per blob (labels).
    """
    fig, axes = _grid(2, 1, (7.0, 4.2))
    axes = axes[:, 0]
    axes[0].imshow(rf_map, cmap="inferno", vmin=0, vmax=1, interpolation="nearest")
    axes[0].contour(rf_map, levels=[threshold], colors="c", linewidths=1.0)
    axes[0].set_title(f"importance map and its {threshold} iso-contour", fontsize=8)
    axes[1].imshow(image, cmap="gray", interpolation="nearest")
    for b, mask in enumerate(blob_masks):
        color = _GROUP_COLORS[b % len(_GROUP_COLORS)]
        axes[1].contour(mask.astype(float), levels=[0.5], colors=[color], linewidths=1.2)
        rows, cols = np.nonzero(mask)
        label = f"{b + 1}" if sti is None or np.isnan(sti[b]) else f"{b + 1}: {sti[b]:+.2f}"
        axes[1].text(
            cols.mean(),
            max(rows.min() - 1.5, 2.0),
            label,
            color=color,
            fontsize=6.5,
            ha="center",
            va="bottom" if rows.min() > 6 else "top",
            fontweight="bold",
            bbox=dict(facecolor="white", alpha=0.75, pad=0.6, linewidth=0),
        )
    axes[1].set_title(
        f"{len(blob_masks)} blobs" + (" (label: STI)" if sti is not None else ""), fontsize=8
    )
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def _histograms(ax, groups: dict, bins, xlabel):
    for g, (label, values) in enumerate(groups.items()):
        values = np.asarray(values, float)
        values = values[np.isfinite(values)]
        mean, std = (values.mean(), values.std()) if values.size else (np.nan, np.nan)
        name = f"{label}: " if label else ""
        ax.hist(
            values,
            bins=bins,
            histtype="stepfilled",
            alpha=0.45,
            color=_GROUP_COLORS[g % len(_GROUP_COLORS)],
            label=f"{name}{mean:.2f} ± {std:.2f} (n = {values.size})",
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.legend(fontsize=7, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)


def plot_blob_counts(counts, *, ax=None) -> Figure:
    """Fig. 5e: number of blobs per image, (S,) or {mouse: (S,)}; legend: mean ± std."""
    groups = _as_groups(counts)
    top = max(int(np.max(v)) if len(v) else 0 for v in groups.values())
    fig, ax = _axes(ax, (4.0, 3.0))
    _histograms(ax, groups, np.arange(-0.5, top + 1.5), "blobs per image")
    ax.set_title("Blob count", fontsize=9)
    return fig


def plot_blob_sizes(areas, *, ax=None) -> Figure:
    """Fig. 5f: blob sizes in pixels, (n_blobs,) or {mouse: (n_blobs,)}; legend: mean ± std."""
    groups = _as_groups(areas)
    top = max(float(np.max(v)) if len(v) else 1.0 for v in groups.values())
    fig, ax = _axes(ax, (4.0, 3.0))
    _histograms(ax, groups, np.linspace(0, top, 30), "blob size (pixels)")
    ax.set_title("Blob size", fontsize=9)
    return fig


def plot_sti_examples(examples) -> Figure:
    """Fig. 5g: blobs with different STI; each example shows the stimulus crop and its skeleton.

    Args:
      examples: list of dicts with ``crop`` (h, w) stimulus inside the blob's bounding box,
        ``mask`` (h, w) bool blob, ``skeleton`` (h, w) bool edge skeleton, ``sti``, ``coherence``
        (R) and ``tortuosity`` (T); ordered from texture to shape.
    """
    n = len(examples)
    fig, axes = _grid(2, n, (2.0 * n + 0.4, 3.6))
    for i, ex in enumerate(examples):
        crop = np.where(ex["mask"], ex["crop"], np.nan)
        axes[0, i].imshow(crop, cmap="gray", interpolation="nearest")
        axes[0, i].set_title(f"STI = {ex['sti']:+.2f}", fontsize=8)
        axes[1, i].imshow(ex["mask"], cmap="Greys", alpha=0.15, interpolation="nearest")
        rows, cols = np.nonzero(ex["skeleton"])
        axes[1, i].scatter(cols, rows, s=2, color="#C44E52", marker="s")
        axes[1, i].set_xlim(-0.5, ex["mask"].shape[1] - 0.5)
        axes[1, i].set_ylim(ex["mask"].shape[0] - 0.5, -0.5)
        axes[1, i].set_aspect("equal")
        axes[1, i].set_title(f"R = {ex['coherence']:.2f}, T = {ex['tortuosity']:.2f}", fontsize=7)
        for ax in axes[:, i]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("stimulus in blob", fontsize=7)
    axes[1, 0].set_ylabel("edge skeleton", fontsize=7)
    fig.suptitle("texture-dominated  \u2190  STI  \u2192  shape-dominated", fontsize=9)
    return fig


def plot_sti_distribution(sti, *, ax=None) -> Figure:
    """Fig. 5h: STI over all blobs, (n,) or {mouse: (n,)}; dashed line at 0 (NaN skipped)."""
    groups = _as_groups(sti)
    fig, ax = _axes(ax, (4.2, 3.0))
    _histograms(ax, groups, np.linspace(-1, 1, 41), "Shape-Texture Index (STI)")
    ax.axvline(0.0, color="k", ls="--", lw=1)
    ax.text(-0.95, ax.get_ylim()[1] * 0.92, "texture", fontsize=7)
    ax.text(0.6, ax.get_ylim()[1] * 0.92, "shape", fontsize=7)
    missing = sum(int(np.sum(~np.isfinite(np.asarray(v, float)))) for v in groups.values())
    note = f" ({missing} blobs without edges left out)" if missing else ""
    ax.set_title("STI distribution" + note, fontsize=9)
    return fig


def plot_ablation(fractions, ranked_curve, random_curves, *, target=0.9, ax=None) -> Figure:
    """Fig. 6a: SSIM to the full-population map vs the fraction of neurons kept.

    Args:
      fractions: (F,); ranked_curve: (F,) or {mouse: (F,)}; random_curves: (draws, F) or
        {mouse: (draws, F)} (mean ± std over draws is drawn).
    """
    ranked, random = _as_groups(ranked_curve), _as_groups(random_curves)
    fractions = 100 * np.asarray(fractions)
    fig, ax = _axes(ax, (4.4, 3.3))
    for g, label in enumerate(ranked):
        color = _GROUP_COLORS[g % len(_GROUP_COLORS)]
        name = f"{label} " if label else ""
        ax.plot(fractions, ranked[label], "o-", color=color, ms=3, label=f"{name}sorted")
        curves = np.asarray(random[label])
        mean, std = curves.mean(0), curves.std(0)
        ax.plot(fractions, mean, "s--", color=color, ms=3, alpha=0.7, label=f"{name}random")
        ax.fill_between(fractions, mean - std, mean + std, color=color, alpha=0.15)
    ax.axhline(target, color="gray", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("neurons kept (% of population)")
    ax.set_ylabel("SSIM to full-population map")
    ax.set_title("Neuron ablation", fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def plot_attention_distribution(
    bin_edges, counts, *, mu=None, sigma=None, ks=None, ax=None
) -> Figure:
    """Fig. 6b: density of attention scores on log-spaced bins with the fitted log-normal.

    Args:
      bin_edges: (n_bins + 1,); counts: (n_bins,) or {mouse: (n_bins,)}; mu, sigma: log-normal
        parameters of ln P (scalars, or dicts like ``counts``); ks: goodness of fit for the legend.
    """
    groups = _as_groups(counts)
    mus, sigmas, kss = (_as_groups(v) if v is not None else {} for v in (mu, sigma, ks))
    edges = np.asarray(bin_edges, float)
    centres = np.sqrt(edges[1:] * edges[:-1])
    fig, ax = _axes(ax, (4.6, 3.3))
    for g, (label, values) in enumerate(groups.items()):
        color = _GROUP_COLORS[g % len(_GROUP_COLORS)]
        values = np.asarray(values, float)
        # Density per unit ln P, so a log-normal is a Gaussian bump on the log axis.
        density = values / values.sum() / np.diff(np.log(edges))
        name = f"{label} " if label else ""
        ax.plot(centres, density, color=color, lw=1.5, label=f"{name}attention scores")
        if label in mus:
            m, s = mus[label], sigmas[label]
            fit = np.exp(-((np.log(centres) - m) ** 2) / (2 * s * s)) / (s * np.sqrt(2 * np.pi))
            extra = f", KS = {kss[label]:.3f}" if label in kss else ""
            ax.plot(
                centres,
                fit,
                "--",
                color="k",
                lw=1,
                label=f"{name}log-normal (mu = {m:.2f}, sigma = {s:.2f}{extra})",
            )
    total = np.sum([np.asarray(v, float) for v in groups.values()], axis=0)
    if total.sum() > 0:  # Show 0.1%-99.9% of the mass plus a decade (the bins span many more).
        cdf = np.cumsum(total) / total.sum()
        low, high = edges[np.searchsorted(cdf, 1e-3)], edges[np.searchsorted(cdf, 1 - 1e-3) + 1]
        ax.set_xlim(max(low / 10, edges[0]), min(high * 10, edges[-1]))
    ax.set_xscale("log")
    ax.set_xlabel("attention score P")
    ax.set_ylabel("density of ln P")
    ax.set_title("Attention scores (neuron pairs)", fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return fig
