"""From a config to arrays: dataset assembly, splits, batches, device sharding, noise ceiling.

Batches: :func:`iterate_batches` (the shuffled training order), :func:`training_responses`
(the configured augmentation of a training batch), :func:`device_batch` (a global batch as this
process's per-device shares), :func:`evaluation_batches` (padded and masked batches for the
validation loss).

:func:`load_dataset` is the one entry point the training, evaluation and analysis code use. It
loads (or, for ``config.data.source == "synthetic"``, first generates) the images file and the
recording named by the config, preprocesses the recording (cached), pairs every response row with
the image shown, splits the rows into train/validation/test (paper Sec. 3.3: 10% of the images,
280 of 2,800, held out for testing) and computes the training-split pixel statistics.
:func:`batched_apply` is the library's one loop that runs a function over rows in fixed-size
chunks (encoders, evaluation, analyses).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from dina_jax import files
from dina_jax.data import stimuli, stringer, synthetic
from dina_jax.data.matfile import DataError
from dina_jax.data.stringer import Recording

logger = logging.getLogger(__name__)

FIGSHARE_HINT = (
    "get it from the figshare release of Stringer, Pachitariu et al. 2019, 'Recordings of ten "
    "thousand neurons in visual cortex in response to 2,800 natural images' "
    "(doi:10.25378/janelia.6845348), and set --config.data.dir to its folder"
)


# ------------------------------------------------------------------------------ splits


SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
    """Disjoint, sorted int64 row indices of the training, validation and test stimuli."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    @property
    def n_rows(self) -> int:
        return int(self.train.size + self.val.size + self.test.size)

    def as_lists(self) -> dict[str, list[int]]:
        """``{"train": [...], "val": [...], "test": [...]}`` (JSON, checkpoint metadata)."""
        return {k: getattr(self, k).tolist() for k in SPLITS}


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))  # Python's round() rounds half to even.


def make_split(
    n_rows: int, seed: int, *, test_fraction: float = 0.1, val_fraction: float = 0.1
) -> Split:
    """Random train/validation/test split of ``n_rows`` stimuli, a pure function of its arguments.

    test = round(test_fraction * n_rows) rows (280 of 2,800); validation = round(val_fraction *
    remaining) rows (252); the rest trains (2,268).
    """
    n_test = _round_half_up(test_fraction * n_rows)
    n_val = _round_half_up(val_fraction * (n_rows - n_test))
    if n_test < 1 or n_rows - n_test - n_val < 1:
        raise ValueError(
            f"cannot split {n_rows} rows with test_fraction={test_fraction}, "
            f"val_fraction={val_fraction}: the test and training sets need at least one row"
        )
    order = np.random.default_rng(seed).permutation(n_rows)
    return Split(
        train=np.sort(order[n_test + n_val :]).astype(np.int64),
        val=np.sort(order[n_test : n_test + n_val]).astype(np.int64),
        test=np.sort(order[:n_test]).astype(np.int64),
    )


def save_split(path, split: Split) -> None:
    """Writes the split as JSON (atomically)."""
    files.write_json(path, split.as_lists())


def load_split(path) -> Split:
    """Reads a split written by :func:`save_split`."""
    with open(path) as f:
        payload = json.load(f)
    return Split(**{k: np.asarray(payload[k], dtype=np.int64) for k in SPLITS})


# ------------------------------------------------------------------------------ dataset


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """One recording paired with its stimuli.

    Attributes:
      images: (S, 68, 270) float32 raw pixels; row s is the image shown for ``responses[s]``.
      responses: (S, N) float32 preprocessed, repeat-averaged responses.
      halves: (2, S, N) float32 first/second-half repeat means (noise ceiling).
      split: the train/validation/test rows.
      image_mean, image_std: pixel mean and std over the training images (the model's input
        normalization, Sec. 3.1).
      recording: the :class:`~dina_jax.data.stringer.Recording` (names, positions, indices).
      ground_truth: the simulator's truth aligned to the loaded neurons (arrays with one entry per
        original neuron are indexed by ``recording.neuron_index``), or None for real data.
    """

    images: np.ndarray
    responses: np.ndarray
    halves: np.ndarray
    split: Split
    image_mean: float
    image_std: float
    recording: Recording
    ground_truth: dict | None = None

    @property
    def n_neurons(self) -> int:
        return int(self.responses.shape[1])

    @property
    def n_images(self) -> int:
        return int(self.responses.shape[0])

    @property
    def name(self) -> str:
        return self.recording.name


def cache_folder(config, workdir=None) -> str:
    """``config.data.cache_dir``, else ``<workdir>/../dina_cache``, else ``~/.cache/dina_jax``."""
    if config.data.cache_dir:
        folder = os.path.expanduser(config.data.cache_dir)
    elif workdir:
        folder = os.path.join(os.path.abspath(os.fspath(workdir)), os.pardir, "dina_cache")
    else:
        folder = os.path.join(os.path.expanduser("~"), ".cache", "dina_jax")
    return os.path.normpath(folder)


def _synthetic_names(config) -> tuple[str, str]:
    syn = config.data.synthetic
    if not 0 <= syn.mouse < syn.n_mice:
        raise ValueError(f"data.synthetic.mouse={syn.mouse} but only {syn.n_mice} mice simulated")
    # The simulated file names follow data.synthetic.stimset/mouse; data.recording and
    # data.images only name real files (source "files").
    recording = synthetic.recording_filename(syn.stimset, syn.mouse)
    return recording, synthetic.images_filename(syn.stimset, syn.mouse)


def ensure_synthetic(config, workdir=None) -> str:
    """Generates the simulated dataset once and returns its folder.

    Into ``config.data.dir`` when set (files moved in one by one, recording last), else into a
    folder of the cache named by every generator parameter. Generation happens in a temp folder
    that is renamed into place, so concurrent runs never see a half-written dataset (lock-free:
    the loser of a race discards its copy).
    """
    syn = config.data.synthetic
    recording, images = _synthetic_names(config)
    kwargs = dict(
        n_neurons=syn.n_neurons,
        n_images=syn.n_images,
        n_mice=syn.n_mice,
        stimset=syn.stimset,
        fmt=syn.format,
        seed=syn.seed,
        params=synthetic.SimulationParams(frac_complex=float(syn.frac_complex)).scaled(
            syn.gain_scale
        ),
    )
    if config.data.dir:
        folder = os.path.expanduser(config.data.dir)
        if all(os.path.exists(os.path.join(folder, n)) for n in (images, recording)):
            return folder
        os.makedirs(folder, exist_ok=True)
        tmp = tempfile.mkdtemp(dir=folder, prefix=".tmp-synthetic-")
        try:
            written = synthetic.generate(tmp, **kwargs)
            for name in sorted(os.listdir(tmp), key=lambda n: n.startswith("natimg2800")):
                os.replace(os.path.join(tmp, name), os.path.join(folder, name))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        logger.info("Generated %d simulated recordings in %s", len(written["recordings"]), folder)
        return folder

    base = cache_folder(config, workdir)
    key = (
        f"synthetic-{syn.stimset}-{syn.format}-n{syn.n_neurons}-s{syn.n_images}-m{syn.n_mice}"
        f"-g{syn.gain_scale:g}-c{syn.frac_complex:g}-seed{syn.seed}"
        f"-v{synthetic.GENERATOR_VERSION}"
    )
    folder = os.path.join(base, key)
    if os.path.isdir(folder):
        return folder
    os.makedirs(base, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=base, prefix=f".tmp-{key}-")
    try:
        synthetic.generate(tmp, **kwargs)
        try:
            os.rename(tmp, folder)
            logger.info("Generated the simulated dataset in %s", folder)
        except OSError:
            if not os.path.isdir(folder):  # Not a lost race: a real error.
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def data_paths(config, workdir=None) -> tuple[str, str]:
    """(recording path, images path) named by the config; generates simulated data if needed."""
    if config.data.source == "synthetic":
        folder = ensure_synthetic(config, workdir)
        recording, images = _synthetic_names(config)
    elif config.data.source == "files":
        folder = os.path.expanduser(config.data.dir)
        recording, images = config.data.recording, config.data.images
    else:
        raise ValueError(f"data.source must be 'files' or 'synthetic', got {config.data.source!r}")
    paths = os.path.join(folder, recording), os.path.join(folder, images)
    for path in paths:
        if not os.path.exists(path):
            raise DataError(f"{path}: file not found; {FIGSHARE_HINT}")
    return paths


def _pixel_stats(images: np.ndarray, rows: np.ndarray, chunk: int = 256) -> tuple[float, float]:
    """Mean and std of all pixels of ``images[rows]``, accumulated in float64 chunk by chunk."""
    total = total_sq = 0.0
    count = 0
    for start in range(0, rows.size, chunk):
        block = images[rows[start : start + chunk]].astype(np.float64)
        total += block.sum()
        total_sq += np.square(block).sum()
        count += block.size
    mean = total / count
    return float(mean), float(math.sqrt(max(total_sq / count - mean * mean, 0.0)))


def load_ground_truth(recording_path, neuron_index: np.ndarray) -> dict | None:
    """The simulator's ``<stem>_groundtruth.npz`` aligned to the kept neurons, or None."""
    path = synthetic.groundtruth_filename(os.fspath(recording_path))
    if not os.path.exists(path):
        return None
    with np.load(path) as npz:
        truth = {k: npz[k] for k in npz.files}
    n_original = truth["gain"].shape[0]
    if neuron_index.size and neuron_index.max() >= n_original:
        raise DataError(f"{path}: has {n_original} neurons but the recording has more")
    aligned = {}
    for key, value in truth.items():
        if value.ndim == 0:
            aligned[key] = value.item()
        elif value.shape[0] == n_original:
            aligned[key] = value[neuron_index]
        else:
            aligned[key] = value
    return aligned


def load_dataset(config, *, workdir=None) -> Dataset:
    """Loads the dataset the config names (see the module docstring).

    Args:
      config: the full ConfigDict (``config.data`` and ``config.seed`` are used; the split is
        ``make_split(S, config.seed, ...)`` with S the number of images shown at least twice).
      workdir: the run's folder; only used to place the default cache (``<workdir>/../dina_cache``).

    Raises:
      DataError: a missing or unusable file (one line naming the path).

    Paper: Sec. 4.1 data and Sec. 3.3 split (10 % test images, a validation split for early
    stopping).

    Example::

        dataset = dina_jax.load_dataset(dina_jax.load_config("synthetic"))
        dataset.images.shape, dataset.responses.shape   # (S, 68, 270), (S, N) float32
        dataset.split.test                              # held-out rows, (S_test,) int64
    """
    recording_path, images_path = data_paths(config, workdir)
    all_images = stimuli.load_images(images_path)
    recording = stringer.load_recording(
        recording_path,
        n_spont_pcs=config.data.n_spont_pcs,
        drop_redcells=config.data.drop_redcells,
        cache_dir=os.path.join(cache_folder(config, workdir), "preprocessed"),
        n_images=all_images.shape[0],
    )
    images = all_images[recording.image_index]  # (n_file_images, 68, 270) -> (S, 68, 270)
    split = make_split(
        recording.n_images,
        config.seed,
        test_fraction=config.data.test_fraction,
        val_fraction=config.data.val_fraction,
    )
    image_mean, image_std = _pixel_stats(images, split.train)
    return Dataset(
        images=images,
        responses=recording.responses,
        halves=recording.halves,
        split=split,
        image_mean=image_mean,
        image_std=image_std,
        recording=recording,
        ground_truth=load_ground_truth(recording_path, recording.neuron_index),
    )


# ------------------------------------------------------------------------------ batches


def iterate_batches(
    indices: Sequence[int] | np.ndarray,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    shuffle: bool = True,
    drop_last: bool = True,
) -> Iterator[np.ndarray]:
    """Yields (batch_size,) int64 row-index batches; a pure function of (indices, seed, epoch).

    With ``drop_last`` the final partial batch is skipped, so every step of a compiled train step
    sees the same shape; without it, the last batch may be shorter.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    indices = np.asarray(indices, dtype=np.int64)
    if shuffle:
        indices = np.random.default_rng([int(seed), int(epoch)]).permutation(indices)
    stop = indices.size - indices.size % batch_size if drop_last else indices.size
    for start in range(0, stop, batch_size):
        yield indices[start : start + batch_size]


def shard(x, n_devices: int):
    """Reshapes a batch (B, ...) to (n_devices, B // n_devices, ...) for ``jax.pmap``."""
    if x.shape[0] % n_devices:
        raise ValueError(f"batch of {x.shape[0]} does not split over {n_devices} devices")
    return x.reshape((n_devices, x.shape[0] // n_devices) + tuple(x.shape[1:]))


RESPONSE_SOURCES = ("mean", "halves")


def check_response_options(source: str, neuron_dropout: float) -> None:
    """Raises ValueError unless ``train.responses`` / ``train.neuron_dropout`` are usable."""
    if source not in RESPONSE_SOURCES:
        raise ValueError(f"train.responses must be one of {RESPONSE_SOURCES}, got {source!r}")
    if not 0.0 <= neuron_dropout < 1.0:
        raise ValueError(f"train.neuron_dropout must be in [0, 1), got {neuron_dropout}")


def training_responses(
    dataset: Dataset,
    rows: np.ndarray,
    *,
    source: str,
    neuron_dropout: float,
    seed: int,
    epoch: int,
    batch_index: int,
) -> np.ndarray:
    """(B, N) float32 responses of one global training batch, after the configured augmentation.

    ``source`` "mean": the stimulus-averaged responses (paper); "halves": each example takes the
    mean over the first or the second half of its image's repeats (``dataset.halves``), drawn
    anew every epoch. ``neuron_dropout`` p > 0 zeroes each (example, neuron) entry with
    probability p and scales the rest by 1 / (1 - p). Drawn on the host from (seed, epoch,
    batch_index) over the whole global batch: the same on any number of devices and after a
    resume. Validation and test always see the plain means.
    """
    check_response_options(source, neuron_dropout)
    rng = np.random.default_rng([int(seed), int(epoch), int(batch_index), 2])
    if source == "halves":
        responses = dataset.halves[rng.integers(0, 2, size=len(rows)), rows]
    else:
        responses = dataset.responses[rows]
    if neuron_dropout > 0.0:
        keep = rng.random(responses.shape, dtype=np.float32) >= neuron_dropout
        responses = responses * keep * np.float32(1.0 / (1.0 - neuron_dropout))
    return np.asarray(responses, np.float32)


def process_rows(rows: np.ndarray) -> np.ndarray:
    """This process's contiguous share of a global batch (of rows, responses or a mask)."""
    import jax

    count, index = jax.process_count(), jax.process_index()
    per = len(rows) // count
    return rows[index * per : (index + 1) * per]


def device_batch(dataset: Dataset, rows: np.ndarray, responses: np.ndarray | None = None):
    """Images and responses of a global batch ``rows`` as this process's (n_dev, b, ...) shares.

    ``responses`` (B, N), when given, replaces ``dataset.responses[rows]`` (e.g. the output of
    :func:`training_responses`).
    """
    import jax

    local = process_rows(rows)
    n_dev = jax.local_device_count()
    responses = dataset.responses[local] if responses is None else process_rows(responses)
    return shard(dataset.images[local], n_dev), shard(responses, n_dev)


def evaluation_batches(
    rows: np.ndarray, batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Consecutive batches of ``rows``, the last one padded, as ``(rows, mask)`` pairs (B,).

    Every row is scored once; the padded tail (copies of the batch's first row, mask 0) is
    neither a query nor a negative, so the last batch has fewer negatives than B - 1.
    """
    for start in range(0, len(rows), batch_size):
        chunk = np.asarray(rows[start : start + batch_size])
        mask = np.zeros(batch_size, np.float32)
        mask[: len(chunk)] = 1.0
        padded = np.concatenate([chunk, np.full(batch_size - len(chunk), chunk[0])])
        yield padded.astype(np.int64), mask


def batched_apply(
    fn: Callable,
    *arrays,
    batch_size: int,
    progress: Callable[[Iterable], Iterable] | None = None,
):
    """``fn(*arrays)`` computed in chunks of rows, with one compiled program for every chunk.

    The leading axis of the arrays (rows, e.g. stimuli) is cut into chunks of
    ``min(batch_size, S)`` rows; the last chunk is zero-padded to that size, so a jitted ``fn``
    traces and compiles once instead of once more for a ragged tail. ``fn`` must treat rows
    independently (the towers do: no batch statistics), since the padding rows are computed and
    then dropped. The batching loop of the evaluation, the notebook encoders and the analyses.

    Args:
      fn: ``fn(*chunks) -> out``, each chunk (B, ...) with B = ``min(batch_size, S)``; ``out`` an
        array or a pytree (tuple, dict) of arrays, each with the B rows on axis 0.
      *arrays: one or more (S, ...) arrays with the same S (numpy, or anything ``np.asarray``
        takes).
      batch_size: the most rows per call (the memory knob); the result does not depend on it.
      progress: optional wrapper of the chunk iterator, e.g. ``tqdm``.

    Returns:
      ``out``'s structure with numpy arrays of S rows, the chunks concatenated on axis 0. For
      S == 0, ``fn`` runs once on a single padding row (for the output shapes and dtypes) and
      every leaf has 0 rows.

    Raises:
      ValueError: ``batch_size < 1``, no arrays, or arrays with different numbers of rows.

    Example::

        z_img = batched_apply(lambda x: encoder(params, x), images, batch_size=64)  # (S, 16, 64)
    """
    import jax  # Here, not at the top: loading data never needs JAX.

    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if not arrays:
        raise ValueError("batched_apply needs at least one array")
    arrays = [np.asarray(a) for a in arrays]
    sizes = [a.shape[0] if a.ndim else None for a in arrays]
    if None in sizes or len(set(sizes)) != 1:
        shapes = ", ".join(str(a.shape) for a in arrays)
        raise ValueError(f"batched_apply: the arrays need the same leading size, got {shapes}")
    n = sizes[0]
    size = max(1, min(batch_size, n))  # n == 0: one chunk of padding only.
    chunks = range(0, max(n, 1), size)
    outputs = []
    for start in progress(chunks) if progress else chunks:
        rows = min(size, n - start)
        chunk = []
        for a in arrays:
            part = a[start : start + rows]
            if rows < size:
                part = np.concatenate([part, np.zeros((size - rows, *a.shape[1:]), a.dtype)])
            chunk.append(part)
        outputs.append(jax.tree.map(lambda leaf, rows=rows: np.asarray(leaf)[:rows], fn(*chunk)))
    return jax.tree.map(lambda *leaves: np.concatenate(leaves), *outputs)


# ------------------------------------------------------------------------------ noise ceiling


def _zscore(x: np.ndarray, axis: int) -> np.ndarray:
    x = x - x.mean(axis=axis, keepdims=True)
    return x / (x.std(axis=axis, keepdims=True) + 1e-12)


def repeat_decoding_accuracy(
    halves: np.ndarray, rows: np.ndarray | None = None, topk: Sequence[int] = (1, 5, 10)
) -> dict:
    """Stringer et al.'s correlation decoder between the two repeat halves (a noise ceiling).

    Each neuron is z-scored over the selected stimuli in each half (as ``decode2800.m``); the
    decoder correlates (Pearson, across neurons) the response to a query stimulus in one half with
    the responses to every selected stimulus in the other half and ranks them. ``2to1`` queries
    the second half against the first (the authors' direction), ``1to2`` the reverse; the plain
    keys are their mean. Ties count against the true stimulus.

    Args:
      halves: (2, S, N).
      rows: stimuli to decode among (e.g. the 280 test rows); None means all S.
      topk: the k of the top-k accuracies.

    Returns:
      dict of fractions in [0, 1]: ``top{k}``, ``top{k}_2to1``, ``top{k}_1to2``, ``chance_top{k}``
      (= k / n), and ``n_stimuli``.
    """
    halves = np.asarray(halves, dtype=np.float64)
    if rows is not None:
        halves = halves[:, np.asarray(rows)]
    first, second = _zscore(halves[0], 0), _zscore(halves[1], 0)  # Neurons over stimuli.
    n = first.shape[0]
    first, second = _zscore(first, 1), _zscore(second, 1)  # Stimuli over neurons: r = a.b / N.
    corr = first @ second.T / first.shape[1]  # (S, S): [i, j] = corr(first_i, second_j)
    true = np.diag(corr)
    rank_2to1 = (corr > true[None, :]).sum(axis=0)  # Query second_j among all first_i.
    rank_1to2 = (corr > true[:, None]).sum(axis=1)  # Query first_i among all second_j.
    out = {"n_stimuli": int(n)}
    for k in topk:
        out[f"top{k}_2to1"] = float(np.mean(rank_2to1 < k))
        out[f"top{k}_1to2"] = float(np.mean(rank_1to2 < k))
        out[f"top{k}"] = 0.5 * (out[f"top{k}_2to1"] + out[f"top{k}_1to2"])
        out[f"chance_top{k}"] = min(k, n) / n
    return out


def summarize(dataset: Dataset, topk: Sequence[int] = (1, 5, 10)) -> str:
    """A few lines describing the dataset, for the command line's data summary."""
    split = dataset.split
    decoding = repeat_decoding_accuracy(dataset.halves, split.test, topk)
    accuracy = ", ".join(f"top-{k} {100 * decoding[f'top{k}']:.1f}%" for k in topk)
    chance = ", ".join(f"{100 * decoding[f'chance_top{k}']:.2f}%" for k in topk)
    truth = dataset.ground_truth
    lines = [
        f"recording: {dataset.name}"
        + (" (simulated; ground truth loaded)" if truth is not None else ""),
        f"images: {dataset.n_images} shown at least twice",
        f"neurons: {dataset.n_neurons}"
        + (f" ({int(np.sum(truth['is_visual']))} visual)" if truth is not None else ""),
        f"split: train {split.train.size}, validation {split.val.size}, test {split.test.size}",
        f"training pixels: mean {dataset.image_mean:.2f}, std {dataset.image_std:.2f}",
        f"repeat-to-repeat decoding on the {decoding['n_stimuli']} test images (Stringer's "
        f"correlation decoder): {accuracy} (chance {chance})",
    ]
    return "\n".join(lines)


__all__ = [
    "Dataset",
    "Split",
    "batched_apply",
    "cache_folder",
    "data_paths",
    "ensure_synthetic",
    "iterate_batches",
    "load_dataset",
    "load_ground_truth",
    "load_split",
    "make_split",
    "repeat_decoding_accuracy",
    "save_split",
    "shard",
    "summarize",
]
