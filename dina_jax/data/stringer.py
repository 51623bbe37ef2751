"""Loaders for the public release of Stringer, Pachitariu et al. (2019).

"Recordings of ten thousand neurons in visual cortex in response to 2,800 natural images"
(figshare, doi:10.25378/janelia.6845348). Two kinds of files:

* ``images_natimg2800_all.mat`` (and the whitened / 8D variants): ``imgs``, 68 x 270 x n_images,
  grayscale uint8 in degrees of visual space.
* ``natimg2800_<MOUSE>_<DATE>.mat``: struct ``stim`` with ``resp`` (trials x neurons, presentation
  order), ``istim`` (trials x 1, 1-based image ids; the largest id, n_images + 1, is a gray-screen
  blank trial) and ``spont`` (timepoints x neurons); ``med`` (neurons x 3 cell centres); ``stat``
  (1 x neurons struct array whose field ``redcell`` marks GAD+ neurons).

This module loads the recordings: it reads their arrays, preprocesses them as the authors'
``loadProc2800`` + ``compute_means`` (:mod:`dina_jax.data.preprocessing`) and caches the result
as HDF5 so the ``.mat`` parsing and the PCA run once per file. The images and the release's class
assignment are loaded by :mod:`dina_jax.data.stimuli`, the v5 / v7.3 formats read by
:mod:`dina_jax.data.matfile`; their public names are re-exported here.

Every problem with an input file raises :class:`DataError` with one line ``"<path>: <problem>"``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import warnings

import h5py
import numpy as np

from dina_jax import files
from dina_jax.data.matfile import (
    DataError,
    _error,
    _file_format,
    _h5_array,
    _h5_error,
    _h5_struct_array_field,
    _loadmat,
    _numeric,
    _scalar_flags,
    _v5_field,
    _v5_struct_array_field,
)
from dina_jax.data.preprocessing import preprocess_responses, top_right_singular_vectors
from dina_jax.data.stimuli import (
    CLASS_ASSIGNMENT_FILE,
    IMAGE_SHAPE,
    UNLABELLED_CLASS_NAMES,
    ClassAssignment,
    load_class_assignment,
    load_images,
)

logger = logging.getLogger(__name__)

CACHE_VERSION = 1  # Bump when the preprocessing changes so that old caches are not reused.


@dataclasses.dataclass(frozen=True, eq=False)
class Recording:
    """One preprocessed recording.

    Attributes:
      name: file stem, e.g. ``"natimg2800_M160825_MP027_2016-12-14"``.
      responses: (S, N) float32, the repeat-averaged preprocessed response to each of the S images
        shown at least twice (the paper's "stimulus-averaged" matrix, Sec. 4.1).
      halves: (2, S, N) float32, means over the first and the second half of the repeats of each
        image (presentation order), as the authors' ``compute_means(istim, resp, 2)``.
      image_index: (S,) int64, 0-based row of each image in the images file, ascending.
      neuron_xyz: (N, 3) float32, cell centres ``med`` of the kept neurons.
      neuron_index: (N,) int64, column of each kept neuron in the original file (red cells dropped).
    """

    name: str
    responses: np.ndarray
    halves: np.ndarray
    image_index: np.ndarray
    neuron_xyz: np.ndarray
    neuron_index: np.ndarray

    @property
    def n_images(self) -> int:
        return int(self.responses.shape[0])

    @property
    def n_neurons(self) -> int:
        return int(self.responses.shape[1])


@dataclasses.dataclass
class RawRecording:
    """The arrays of a recording file as stored (MATLAB orientation), before preprocessing.

    Attributes:
      resp: (T, N) float, one row per trial in presentation order.
      istim: (T,) int64, 1-based image id of each trial.
      spont: (T_spont, N) float, spontaneous activity (may have 0 rows).
      med: (N, 3) float or None.
      redcell: (N,) bool or None when the file has no ``stat.redcell``.
    """

    resp: np.ndarray
    istim: np.ndarray
    spont: np.ndarray
    med: np.ndarray | None
    redcell: np.ndarray | None


# ------------------------------------------------------------------------------ reading


def _parse_v5_recording(mat: dict, path) -> RawRecording:
    """RawRecording from the dict returned by ``scipy.io.loadmat`` (any nesting options)."""
    if "stim" not in mat:
        raise _error(path, "no variable 'stim' (not a natimg2800 recording file?)")
    stim = mat["stim"]
    fields = {}
    for name in ("resp", "istim", "spont"):
        value = _v5_field(stim, name)
        if value is None:
            raise _error(path, f"struct 'stim' has no field '{name}'")
        fields[name] = _numeric(value, path, f"stim.{name}")
    med = _numeric(mat["med"], path, "med") if "med" in mat else None
    redcell = None
    if "stat" in mat:
        values = _v5_struct_array_field(mat["stat"], "redcell")
        if values is not None:
            redcell = _scalar_flags(values, path, "stat.redcell")
    return RawRecording(fields["resp"], fields["istim"], fields["spont"], med, redcell)


def _read_v73_recording(path) -> RawRecording:
    try:
        with h5py.File(path, "r") as f:
            stim = f.get("stim")
            if stim is None:
                raise _error(path, "no variable 'stim' (not a natimg2800 recording file?)")
            if not isinstance(stim, h5py.Group):
                raise _error(path, "'stim' is not a MATLAB struct")
            fields = {}
            for name in ("resp", "istim", "spont"):
                if name not in stim or not isinstance(stim[name], h5py.Dataset):
                    raise _error(path, f"struct 'stim' has no field '{name}'")
                fields[name] = _numeric(_h5_array(stim[name]), path, f"stim.{name}")
            med = _numeric(_h5_array(f["med"]), path, "med") if "med" in f else None
            redcell = None
            stat = f.get("stat")
            if isinstance(stat, h5py.Group):
                values = _h5_struct_array_field(f, stat, "redcell")
                if values is not None:
                    redcell = _scalar_flags(values, path, "stat.redcell")
    except DataError:
        raise
    except Exception as exc:  # h5py raises OSError/KeyError/... for damaged files.
        raise _h5_error(path, exc) from None
    return RawRecording(fields["resp"], fields["istim"], fields["spont"], med, redcell)


def read_raw_recording(path) -> RawRecording:
    """Reads the arrays of a ``natimg2800_*.mat`` recording (v5 or v7.3) without preprocessing.

    Shapes are checked (``resp`` (T, N), ``istim`` T ids, ``spont`` (T_spont, N), ``med`` (N, 3),
    ``stat`` N elements); the values are not (see :func:`preprocess_responses`).
    """
    if _file_format(path) == "v73":
        raw = _read_v73_recording(path)
    else:
        raw = _parse_v5_recording(_loadmat(path, ["stim", "med", "stat"]), path)
    resp = raw.resp
    if resp.ndim != 2:
        raise _error(path, f"stim.resp has shape {resp.shape}, expected trials x neurons")
    n_trials, n_neurons = resp.shape
    istim = raw.istim.reshape(-1)
    if istim.size != n_trials:
        raise _error(path, f"stim.istim has {istim.size} ids for {n_trials} trials of stim.resp")
    if not np.all(np.isfinite(istim)) or np.any(istim != np.round(istim)) or np.any(istim < 1):
        raise _error(path, "stim.istim must hold positive integer (1-based) image ids")
    spont = raw.spont
    if spont.size == 0:
        spont = np.zeros((0, n_neurons), dtype=resp.dtype)
    if spont.ndim != 2 or spont.shape[1] != n_neurons:
        raise _error(
            path,
            f"stim.spont has shape {spont.shape} but stim.resp has {n_neurons} neurons "
            "(both must be timepoints x neurons)",
        )
    med = raw.med
    if med is not None and med.shape != (n_neurons, 3):
        raise _error(path, f"med has shape {med.shape}, expected ({n_neurons}, 3)")
    redcell = raw.redcell
    if redcell is not None and redcell.size != n_neurons:
        raise _error(path, f"stat has {redcell.size} elements for {n_neurons} neurons")
    return RawRecording(resp, istim.astype(np.int64), spont, med, redcell)


# ------------------------------------------------------------------------------ cache


def _file_digest(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _cache_file(cache_dir, path, options: dict) -> str:
    key = hashlib.sha256()
    key.update(_file_digest(path).encode())
    key.update(json.dumps({**options, "version": CACHE_VERSION}, sort_keys=True).encode())
    stem = os.path.splitext(os.path.basename(os.fspath(path)))[0]
    return os.path.join(os.fspath(cache_dir), f"{stem}.{key.hexdigest()[:24]}.h5")


def _write_cache(filename: str, recording: Recording) -> None:
    """Writes the cache file atomically (:func:`dina_jax.files.write_bytes`).

    The HDF5 file is built in memory and written with plain file I/O, so a full disk or a file
    size limit is an ``OSError`` here, never a failure inside the HDF5 library.
    """
    with h5py.File.in_memory() as h:
        h.attrs["name"] = recording.name
        h.attrs["version"] = CACHE_VERSION
        for field in ("responses", "halves", "image_index", "neuron_xyz", "neuron_index"):
            h.create_dataset(field, data=getattr(recording, field))
        h.flush()
        image = h.id.get_file_image()
    files.write_bytes(filename, image)


def _read_cache(filename: str) -> Recording | None:
    try:
        with h5py.File(filename, "r") as h:
            if int(h.attrs["version"]) != CACHE_VERSION:
                return None
            arrays = {k: h[k][()] for k in h.keys()}
            name = h.attrs["name"]
        name = name.decode() if isinstance(name, bytes) else str(name)
        if not all(np.isfinite(arrays[k]).all() for k in ("responses", "halves")):
            raise ValueError("non-finite responses")
        return Recording(name=name, **arrays)
    except Exception as exc:  # A damaged cache is recomputed, never trusted.
        warnings.warn(f"{filename}: ignoring unreadable cache ({exc})", stacklevel=3)
        return None


# ------------------------------------------------------------------------------ public loader


def load_recording(
    path,
    *,
    n_spont_pcs: int = 32,
    drop_redcells: bool = True,
    cache_dir=None,
    n_images: int | None = None,
) -> Recording:
    """Loads and preprocesses one ``natimg2800_*.mat`` recording (v5 or v7.3).

    Args:
      path: the recording file.
      n_spont_pcs: spontaneous PCs projected out (see :func:`preprocess_responses`).
      drop_redcells: discard the GAD+ neurons marked in ``stat.redcell`` (as the authors do);
        files without ``stat.redcell`` keep every neuron.
      cache_dir: folder of the HDF5 cache of preprocessed recordings (None: no cache). The key is
        the SHA-256 of the file's bytes plus these options, so an edited file is never served
        stale.
      n_images: number of images in the matching images file; ids are checked against it. The
        largest id is the blank (authors' rule).

    Returns:
      The preprocessed :class:`Recording`.

    Raises:
      DataError: ``"<path>: <problem>"`` for any unusable input; nothing is cached then.

    Paper: Sec. 4.1: the S x N stimulus-averaged responses, preprocessed as the authors'
    loadProc2800 (Stringer et al. 2019).

    Example::

        rec = dina_jax.load_recording("/data/natimg2800_M160825_MP027_2016-12-14.mat")
        rec.responses.shape, rec.halves.shape   # (S, N), (2, S, N) float32
        rec.image_index                         # (S,) int64 rows of the images file
    """
    _file_format(path)  # Missing/foreign files fail here, before hashing.
    options = {
        "n_spont_pcs": int(n_spont_pcs),
        "drop_redcells": bool(drop_redcells),
        "n_images": None if n_images is None else int(n_images),
    }
    cache_file = None
    if cache_dir:
        cache_file = _cache_file(cache_dir, path, options)
        if os.path.exists(cache_file):
            cached = _read_cache(cache_file)
            if cached is not None:
                logger.info("Loaded %s from cache %s", path, cache_file)
                return cached

    raw = read_raw_recording(path)
    n_neurons = raw.resp.shape[1]
    keep = np.ones(n_neurons, dtype=bool)
    if drop_redcells and raw.redcell is not None:
        keep = ~raw.redcell
    if not keep.any():
        raise _error(path, "every neuron is a red cell (stat.redcell); nothing left to load")
    neuron_index = np.flatnonzero(keep).astype(np.int64)
    responses, halves, image_index = preprocess_responses(
        raw.resp[:, keep],
        raw.istim,
        raw.spont[:, keep],
        n_spont_pcs=n_spont_pcs,
        n_images=n_images,
        path=path,
    )
    if raw.med is None:
        warnings.warn(f"{os.fspath(path)}: no 'med'; neuron positions set to 0", stacklevel=2)
        xyz = np.zeros((neuron_index.size, 3), dtype=np.float32)
    else:
        xyz = np.asarray(raw.med[keep], dtype=np.float32)
    recording = Recording(
        name=os.path.splitext(os.path.basename(os.fspath(path)))[0],
        responses=responses,
        halves=halves,
        image_index=image_index,
        neuron_xyz=xyz,
        neuron_index=neuron_index,
    )
    if cache_file is not None:
        try:
            _write_cache(cache_file, recording)
        except Exception as exc:  # noqa: BLE001 - full disk, read-only folder, h5py: the run goes on.
            reason = " ".join(str(exc).split()) or type(exc).__name__
            warnings.warn(
                f"{cache_file}: could not write cache ({reason}); continuing without it",
                stacklevel=2,
            )
    return recording


__all__ = [
    "CACHE_VERSION",
    "CLASS_ASSIGNMENT_FILE",
    "ClassAssignment",
    "DataError",
    "IMAGE_SHAPE",
    "RawRecording",
    "Recording",
    "UNLABELLED_CLASS_NAMES",
    "load_class_assignment",
    "load_images",
    "load_recording",
    "preprocess_responses",
    "read_raw_recording",
    "top_right_singular_vectors",
]
