"""Blobs of an RF map and the shape descriptors of the image edges inside them (App. A.2-A.3).

Pipeline for one stimulus (Fig. 5d-h):
  1. blobs: connected components of {R_hat > tau}, tau = 0.6 (Eq. 16), 8-connectivity;
  2. edges: Sobel gradient magnitude of the *stimulus image* (the blob characterizes what the image
     shows where the features are sensitive), binarized, restricted to the blob, skeletonized;
  3. segments: the skeleton's branches between junctions and endpoints, found by ``skan``;
  4. descriptors: total edge length, fragmentation (number of segments), mean tortuosity (Eq. 19),
     orientation coherence R (Eq. 17-18), texture strength Tex(T) (Eq. 20), STI = R - Tex (Eq. 21).

Decisions where App. A.2-A.3 is silent (docs/decisions.md):
- Sobel on the whole image, then restricted to the blob: filtering a masked image would turn the
  blob's own outline into an edge.
- Binarization ("within each blob", App. A.2): Otsu's threshold of the Sobel magnitudes inside
  the blob, floored at the median Sobel magnitude of the whole image. The per-blob threshold picks
  up a texture's fine edges even when the image also holds much stronger contours elsewhere (a
  single image-wide Otsu threshold would see only those); the floor keeps a flat blob from having
  its noise split into "edges". ``edge_binarization="image_otsu"`` uses one Otsu threshold for the
  whole image instead.
- Path length L of Eq. 19 is skan's branch distance (1 per axial step, sqrt 2 per diagonal step),
  so a straight segment has T = 1 exactly; the Euclidean distance is between the segment's
  endpoints.
- Valid segments: not a closed loop (whose endpoints coincide, so Eq. 17 and Eq. 19 are undefined)
  and at least ``min_segment_length`` pixels long (default 3: shorter skeleton spurs carry only a
  45-degree-quantized direction and T = 1, and would bias R and T toward the pixel grid).
- Orientation coherence: a skeleton segment is an undirected edge (theta and theta + pi are the same
  edge; skan's endpoint order is arbitrary), so Eq. 18 is evaluated on the doubled angle,
  R = |mean e^{2 i theta}| ("axial", default). The literal R = |mean e^{i theta}| is available as
  ``orientation="literal"``; it lets two parallel segments traced in opposite directions cancel.
- Tex sensitivity alpha (not given in the paper): alpha = ln 2 / (sqrt 2 - 1) = 1.673, so that a
  segment as long as the two legs of a right isosceles triangle over its chord (a 90-degree bend,
  T = sqrt 2) has Tex = 0.5: "half texture". Straight contours (T = 1) give Tex = 0, a chord wound
  twice as long (T = 2) gives Tex = 0.81.
- Blobs without a valid segment (flat image region) get R = T = Tex = STI = NaN; histograms and
  means skip them and report how many there were.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
from scipy import ndimage
from skan import Skeleton, summarize
from skimage import filters, measure, morphology

ORIENTATION_MODES = ("axial", "literal")
# Eq. 20's alpha: Tex(sqrt 2) = 1/2 (see the module docstring).
DEFAULT_TEX_ALPHA = math.log(2.0) / (math.sqrt(2.0) - 1.0)


@dataclasses.dataclass(frozen=True)
class Segments:
    """The skeleton segments of one binary skeleton (numpy arrays, one entry per segment).

    Attributes:
      path_length: (n,) float64 path length along the pixels (skan's branch distance).
      chord: (n,) float64 Euclidean distance between the two endpoints.
      theta: (n,) float64 Eq. 17 orientation atan2(y_e - y_s, x_e - x_s) in (-pi, pi], with y the
        row and x the column.
      is_cycle: (n,) bool, closed loops (endpoints coincide).
      n_components: number of connected skeleton pieces with at least one segment.
    """

    path_length: np.ndarray
    chord: np.ndarray
    theta: np.ndarray
    is_cycle: np.ndarray
    n_components: int


@dataclasses.dataclass(frozen=True)
class Blob:
    """One informative region of an RF map and the descriptors of the image edges inside it.

    Attributes:
      label: 1-based component label in the thresholded RF map.
      mask: (H, W) bool pixels of the blob.
      area: pixels in the blob (Fig. 5f).
      centroid: (row, col) of the blob.
      edge_length: total skeleton path length inside the blob, pixels.
      n_segments: fragmentation, the number of skeleton segments between junctions/endpoints.
      n_valid_segments: segments used for T and R (see module docstring).
      n_components: connected skeleton pieces in the blob.
      tortuosity: mean T of the valid segments (Eq. 19), NaN without any.
      coherence: orientation coherence R of the valid segments (Eq. 18), NaN without any.
      tex: texture strength Tex(T) (Eq. 20).
      sti: Shape-Texture Index R - Tex (Eq. 21), in (-1, 1].
    """

    label: int
    mask: np.ndarray
    area: int
    centroid: tuple[float, float]
    edge_length: float
    n_segments: int
    n_valid_segments: int
    n_components: int
    tortuosity: float
    coherence: float
    tex: float
    sti: float


def skeleton_segments(skeleton: np.ndarray) -> Segments:
    """Segments between junctions/endpoints of a binary skeleton, via ``skan``.

    Isolated pixels have no segment. Args: skeleton (H, W) bool, one pixel wide.
    """
    skeleton = np.asarray(skeleton, bool)
    empty = np.zeros(0)
    # Isolated pixels have no segment, and skan cannot build a graph without any edge.
    neighbours = ndimage.convolve(
        skeleton.astype(np.int32), np.ones((3, 3), np.int32), mode="constant"
    )
    skeleton = skeleton & (neighbours > 1)
    if not skeleton.any():
        return Segments(empty, empty, empty, np.zeros(0, bool), 0)
    graph = Skeleton(skeleton)
    if graph.n_paths == 0:
        return Segments(empty, empty, empty, np.zeros(0, bool), 0)
    with warnings.catch_warnings():
        # skan 0.13 renames its columns with pandas' deprecated inplace=True; harmless here.
        warnings.filterwarnings("ignore", message=".*inplace keyword.*")
        table = summarize(graph, separator="_")
    rows_s = table["coord_src_0"].to_numpy(float)
    cols_s = table["coord_src_1"].to_numpy(float)
    rows_e = table["coord_dst_0"].to_numpy(float)
    cols_e = table["coord_dst_1"].to_numpy(float)
    return Segments(
        path_length=table["branch_distance"].to_numpy(float),
        chord=np.hypot(rows_e - rows_s, cols_e - cols_s),
        theta=np.arctan2(rows_e - rows_s, cols_e - cols_s),
        is_cycle=table["branch_type"].to_numpy() == 3,
        n_components=int(table["skeleton_id"].nunique()),
    )


def tortuosity(path_length: np.ndarray, chord: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Eq. 19: T = L / (|x_L - x_1| + eps) per segment."""
    return np.asarray(path_length, float) / (np.asarray(chord, float) + eps)


def orientation_coherence(theta: np.ndarray, orientation: str = "axial") -> float:
    """Eq. 18 mean resultant length of segment orientations, in [0, 1]; NaN for no segment.

    "axial" uses e^{2 i theta} (an undirected edge: theta and theta + pi agree); "literal" uses
    e^{i theta} exactly as Eq. 18 is printed.
    """
    if orientation not in ORIENTATION_MODES:
        raise ValueError(f"orientation must be one of {ORIENTATION_MODES}, got {orientation!r}")
    theta = np.asarray(theta, float)
    if theta.size == 0:
        return float("nan")
    factor = 2.0 if orientation == "axial" else 1.0
    return float(np.abs(np.mean(np.exp(1j * factor * theta))))


def texture_strength(mean_tortuosity: float, alpha: float = DEFAULT_TEX_ALPHA) -> float:
    """Eq. 20: Tex(T) = 1 - exp(-alpha (T - 1)), in [0, 1) for T >= 1."""
    return float(1.0 - np.exp(-alpha * (mean_tortuosity - 1.0)))


EDGE_BINARIZATIONS = ("blob_otsu", "image_otsu")


def sobel_magnitude(image: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of the whole stimulus: (H, W) -> (H, W) float64."""
    return filters.sobel(np.asarray(image, np.float64))


def binarize_edges(
    magnitude: np.ndarray, mask: np.ndarray, method: str = "blob_otsu"
) -> np.ndarray:
    """Binary edges inside ``mask`` from a Sobel magnitude map (see the module docstring).

    Args:
      magnitude: (H, W) Sobel magnitude of the whole image.
      mask: (H, W) bool blob.
      method: "blob_otsu" (Otsu inside the blob, floored at the image's median magnitude) or
        "image_otsu" (one Otsu threshold for the whole image).

    Returns:
      (H, W) bool edges, False outside ``mask``; all False where the magnitude is constant.
    """
    if method not in EDGE_BINARIZATIONS:
        raise ValueError(f"edge_binarization must be one of {EDGE_BINARIZATIONS}, got {method!r}")
    values = magnitude[mask] if method == "blob_otsu" else magnitude.ravel()
    if values.size == 0 or np.ptp(values) <= 0:
        return np.zeros(magnitude.shape, bool)
    threshold = filters.threshold_otsu(values)
    if method == "blob_otsu":
        threshold = max(threshold, float(np.median(magnitude)))
    return (magnitude > threshold) & mask


def describe_edges(
    edges: np.ndarray,
    *,
    tex_alpha: float = DEFAULT_TEX_ALPHA,
    orientation: str = "axial",
    min_segment_length: float = 3.0,
) -> dict:
    """Shape descriptors of a binary edge map (already restricted to one blob).

    Skeletonizes ``edges`` and measures its segments (App. A.2-A.3). Returns a dict with keys
    edge_length, n_segments, n_valid_segments, n_components, tortuosity, coherence, tex, sti.
    """
    skeleton = morphology.skeletonize(np.asarray(edges, bool))
    segments = skeleton_segments(skeleton)
    valid = (~segments.is_cycle) & (segments.path_length >= min_segment_length)
    if valid.any():
        mean_t = float(np.mean(tortuosity(segments.path_length[valid], segments.chord[valid])))
        coherence = orientation_coherence(segments.theta[valid], orientation)
        tex = texture_strength(mean_t, tex_alpha)
        sti = coherence - tex
    else:
        mean_t = coherence = tex = sti = float("nan")
    return dict(
        edge_length=float(segments.path_length.sum()),
        n_segments=int(segments.path_length.size),
        n_valid_segments=int(valid.sum()),
        n_components=segments.n_components,
        tortuosity=mean_t,
        coherence=coherence,
        tex=tex,
        sti=sti,
    )


def label_blobs(rf_map: np.ndarray, threshold: float = 0.6) -> np.ndarray:
    """Eq. 16 + connected components: (H, W) RF map -> (H, W) int labels (0 = background)."""
    return measure.label(np.asarray(rf_map) > threshold, connectivity=2)


def extract_blobs(
    rf_map: np.ndarray,
    image: np.ndarray,
    *,
    threshold: float = 0.6,
    tex_alpha: float = DEFAULT_TEX_ALPHA,
    orientation: str = "axial",
    min_segment_length: float = 3.0,
    edge_binarization: str = "blob_otsu",
) -> list[Blob]:
    """Blobs of a normalized RF map with the shape descriptors of the image inside each.

    Args:
      rf_map: (H, W) min-max normalized RF map (e.g. from ``occlusion_map``).
      image: (H, W) the stimulus the map was computed for (raw pixels).
      threshold: tau of Eq. 16 (0.6).
      tex_alpha: alpha of Eq. 20 (see the module docstring for the default).
      orientation: "axial" (default) or "literal" form of Eq. 18.
      min_segment_length: shortest skeleton segment (pixels) used for T and R.
      edge_binarization: "blob_otsu" (default) or "image_otsu" (see the module docstring).

    Returns:
      One :class:`Blob` per connected component, in label order (row-major first pixel).

    Paper: App. A.2-A.3, Eq. 16-21, Fig. 5d-h: blobs, shape descriptors, STI = R - Tex(T).

    Example::

        blobs = dina_jax.extract_blobs(rf, dataset.images[test[0]])   # list of Blob
        [(b.area, b.sti) for b in blobs]
    """
    rf_map = np.asarray(rf_map)
    image = np.asarray(image)
    if rf_map.ndim != 2 or rf_map.shape != image.shape:
        raise ValueError(
            f"extract_blobs expects an RF map and image of one (H, W) shape, got "
            f"{rf_map.shape} and {image.shape}"
        )
    labels = label_blobs(rf_map, threshold)
    magnitude = sobel_magnitude(image)
    blobs = []
    for region in measure.regionprops(labels):
        mask = labels == region.label
        descriptors = describe_edges(
            binarize_edges(magnitude, mask, edge_binarization),
            tex_alpha=tex_alpha,
            orientation=orientation,
            min_segment_length=min_segment_length,
        )
        blobs.append(
            Blob(
                label=int(region.label),
                mask=mask,
                area=int(region.area),
                centroid=(float(region.centroid[0]), float(region.centroid[1])),
                **descriptors,
            )
        )
    return blobs


BLOB_FIELDS = (
    "area",
    "edge_length",
    "n_segments",
    "n_valid_segments",
    "n_components",
    "tortuosity",
    "coherence",
    "tex",
    "sti",
)


def blob_table(blobs_per_image: list[list[Blob]]) -> dict[str, np.ndarray]:
    """Flattens the blobs of many images into arrays (one entry per blob) plus per-image counts.

    Returns a dict with ``image`` (n_blobs,) int index of the image, ``centroid`` (n_blobs, 2), each
    field of :data:`BLOB_FIELDS` as (n_blobs,), and ``count`` (n_images,) blobs per image (Fig. 5e).

    Paper: Fig. 5e-h: blob counts, sizes and the STI histogram.

    Example::

        table = dina_jax.blob_table([dina_jax.extract_blobs(r, im) for r, im in zip(rfs, ims)])
        table["count"], table["sti"]     # (n_images,), (n_blobs,)
    """
    rows = [(i, b) for i, blobs in enumerate(blobs_per_image) for b in blobs]
    table = {
        "image": np.asarray([i for i, _ in rows], np.int64),
        "centroid": np.asarray([b.centroid for _, b in rows], np.float64).reshape(-1, 2),
        "count": np.asarray([len(blobs) for blobs in blobs_per_image], np.int64),
    }
    for field in BLOB_FIELDS:
        table[field] = np.asarray([getattr(b, field) for _, b in rows], np.float64)
    return table
