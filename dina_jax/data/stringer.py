"""Loaders for the public release of Stringer, Pachitariu et al. (2019).

"Recordings of ten thousand neurons in visual cortex in response to 2,800 natural images"
(figshare, doi:10.25378/janelia.6845348). Two kinds of files:

* ``images_natimg2800_all.mat`` (and the whitened / 8D variants): ``imgs``, 68 x 270 x n_images,
  grayscale uint8 in degrees of visual space.
* ``natimg2800_<MOUSE>_<DATE>.mat``: struct ``stim`` with ``resp`` (trials x neurons, presentation
  order), ``istim`` (trials x 1, 1-based image ids; the largest id, n_images + 1, is a gray-screen
  blank trial) and ``spont`` (timepoints x neurons); ``med`` (neurons x 3 cell centres); ``stat``
  (1 x neurons struct array whose field ``redcell`` marks GAD+ neurons).

Both MATLAB v5 (``scipy.io.loadmat``) and v7.3 (HDF5, read with h5py: arrays stored transposed,
structs as groups, struct arrays as datasets of object references) are read. The preprocessing is
that of the authors' ``loadProc2800`` + ``compute_means`` (see :func:`preprocess_responses`), and
its result is cached as HDF5 so the ``.mat`` parsing and the PCA run once per file.

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
import scipy.io
import scipy.linalg
import scipy.sparse

from dina_jax import files

logger = logging.getLogger(__name__)

IMAGE_SHAPE = (68, 270)  # Stimulus size in degrees of visual space (= pixels), Sec. 4.1.
CACHE_VERSION = 1  # Bump when the preprocessing changes so that old caches are not reused.
_SD_EPS = 1e-6  # Added to the spontaneous std before dividing, as the authors do.


class DataError(ValueError):
    """An input file that cannot be used. The message is one line: ``"<path>: <problem>"``."""


def _error(path, problem: str) -> DataError:
    problem = " ".join(str(problem).split())  # One line, whatever the wrapped exception said.
    return DataError(f"{os.fspath(path)}: {problem}")


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


# ------------------------------------------------------------------------------ file format


def _file_format(path) -> str:
    """Returns "v73" (HDF5) or "v5"; raises DataError for a missing or foreign file."""
    if not os.path.exists(path):
        raise _error(path, "file not found")
    if os.path.isdir(path):
        raise _error(path, "is a folder, not a .mat file")
    if h5py.is_hdf5(path):
        return "v73"
    try:
        major, _ = scipy.io.matlab.matfile_version(os.fspath(path))
    except Exception as exc:  # scipy raises several types for foreign or empty files.
        raise _error(path, f"not a MATLAB .mat (v5) or HDF5 (v7.3) file ({exc})") from None
    if major == 2:
        raise _error(path, "MATLAB 7.3 header but no readable HDF5 data (truncated or corrupt)")
    if major != 1:
        raise _error(path, "MATLAB v4 file; only v5 (-v7) and v7.3 files are supported")
    return "v5"


def _loadmat(path, variables):
    try:
        return scipy.io.loadmat(os.fspath(path), variable_names=variables)
    except Exception as exc:  # Truncated/corrupt files raise ValueError, OSError, zlib errors...
        raise _error(path, f"cannot read MATLAB v5 file (truncated or corrupt?): {exc}") from None


# --- v5 (scipy.io.loadmat) ----------------------------------------------------------------------
# loadmat wraps values differently depending on squeeze_me / struct_as_record / simplify_cells:
# a struct field may be the array itself, a size-1 object array around it, a record of a (1, 1)
# or 0-d structured array, a mat_struct or a dict. The helpers below accept all of them.


def _unwrap(x):
    """Strips the size-1 object (cell) wrappers loadmat puts around struct field values."""
    while isinstance(x, np.ndarray) and x.dtype == object and x.size == 1:
        x = x.reshape(-1)[0]
    return x


def _v5_field(struct, name: str):
    """``struct.name`` of a scalar MATLAB struct loaded by loadmat, or None if absent."""
    s = _unwrap(struct)
    if isinstance(s, dict):
        return s.get(name)
    if isinstance(s, np.ndarray) and s.dtype.names is not None:
        if name not in s.dtype.names or s.size == 0:
            return None
        return _unwrap(s.reshape(-1)[0][name])
    if isinstance(s, np.void) and s.dtype.names is not None:
        return _unwrap(s[name]) if name in s.dtype.names else None
    if hasattr(s, "_fieldnames"):  # scipy.io.matlab.mat_struct (struct_as_record=False)
        return getattr(s, name, None)
    return None


def _v5_struct_array_field(struct_array, name: str):
    """List with ``s(i).name`` for every element of a MATLAB struct array, or None if absent."""
    s = struct_array
    if isinstance(s, dict):  # simplify_cells turns a 1 x 1 struct array into a dict.
        return [s[name]] if name in s else None
    if isinstance(s, (list, tuple)):
        elements = list(s)
    elif isinstance(s, np.ndarray) and s.dtype.names is not None:
        if name not in s.dtype.names:
            return None
        return [_unwrap(record[name]) for record in s.reshape(-1)]
    elif isinstance(s, np.ndarray) and s.dtype == object:
        elements = [_unwrap(e) for e in s.reshape(-1)]
    else:
        elements = [s]
    values = []
    for element in elements:
        value = _v5_field(element, name)
        if value is None:
            return None
        values.append(value)
    return values


def _numeric(x, path, what: str) -> np.ndarray:
    x = _unwrap(x)
    try:
        arr = np.asarray(x)
    except Exception:  # Anything unconvertible is a format problem.
        arr = np.asarray([])
    if arr.dtype.kind not in "biuf":
        raise _error(path, f"{what} is not a numeric array (MATLAB class {arr.dtype})")
    return arr


def _scalar_flags(values, path, what: str) -> np.ndarray:
    flags = np.zeros(len(values), dtype=bool)
    for i, value in enumerate(values):
        arr = _numeric(value, path, what).reshape(-1)
        flags[i] = bool(arr.size and arr[0] != 0 and np.isfinite(arr[0]))
    return flags


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


# --- v7.3 (HDF5) --------------------------------------------------------------------------------


def _h5_error(path, exc: Exception) -> DataError:
    return _error(path, f"cannot read MATLAB 7.3 (HDF5) file (truncated or corrupt?): {exc}")


def _h5_class(obj) -> str:
    value = obj.attrs.get("MATLAB_class", b"")
    return value.decode() if isinstance(value, bytes) else str(value)


def _h5_array(obj) -> np.ndarray:
    """A MATLAB array stored by MATLAB 7.3, in MATLAB's (column-major) axis order."""
    if int(np.asarray(obj.attrs.get("MATLAB_empty", 0)).reshape(-1)[0]):
        return np.zeros((0, 0))  # MATLAB stores an empty array's dims as its data.
    arr = np.asarray(obj[()]).T  # HDF5 is row-major: MATLAB's a x b x c is stored c x b x a.
    if _h5_class(obj) == "logical":
        arr = arr.astype(bool)
    return arr


def _h5_struct_array_field(h5file, group, name: str):
    """``s(i).name`` for each element of a struct array group (datasets of object references)."""
    if name not in group:
        return None
    ds = group[name]
    if not isinstance(ds, h5py.Dataset):
        return None
    if h5py.check_dtype(ref=ds.dtype) is None:  # A 1 x 1 struct: the field is the value itself.
        return [_h5_array(ds)]
    return [_h5_array(h5file[ref]) for ref in np.asarray(ds[()]).reshape(-1)]


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


# ------------------------------------------------------------------------------ images


def load_images(path) -> np.ndarray:
    """Loads the stimulus images ``imgs`` (68 x 270 x n_images) of a v5 or v7.3 images file.

    Returns:
      (n_images, 68, 270) float32 with the stored pixel values (uint8 0..255 in the release; the
      authors use ``(imgs - 128) / 64``; normalization is left to the model).

    Paper: Sec. 4.1: the 68 x 270 grayscale stimuli of Stringer et al. (2019).

    Example::

        images = dina_jax.load_images("/data/images_natimg2800_all.mat")  # (2800, 68, 270)
    """
    if _file_format(path) == "v73":
        try:
            with h5py.File(path, "r") as f:
                if "imgs" not in f or not isinstance(f["imgs"], h5py.Dataset):
                    raise _error(path, "no variable 'imgs' (not an images file?)")
                imgs = _h5_array(f["imgs"])
        except DataError:
            raise
        except Exception as exc:
            raise _h5_error(path, exc) from None
    else:
        mat = _loadmat(path, ["imgs"])
        if "imgs" not in mat:
            raise _error(path, "no variable 'imgs' (not an images file?)")
        imgs = mat["imgs"]
    imgs = _numeric(imgs, path, "imgs")
    if imgs.ndim == 2:  # A single image: MATLAB drops the trailing singleton dimension.
        imgs = imgs[:, :, None]
    if imgs.ndim != 3 or tuple(imgs.shape[:2]) != IMAGE_SHAPE:
        dims = " x ".join(str(d) for d in imgs.shape)
        raise _error(path, f"imgs is {dims}, expected 68 x 270 x n_images")
    imgs = np.ascontiguousarray(np.moveaxis(imgs, 2, 0), dtype=np.float32)  # (68,270,n)->(n,68,270)
    if not np.all(np.isfinite(imgs)):
        raise _error(path, "imgs contains NaN or Inf")
    return imgs


# ------------------------------------------------------------------------------ preprocessing


def top_right_singular_vectors(x: np.ndarray, k: int) -> np.ndarray:
    """The top-k right singular vectors of x (T, N) as an (N, k) orthonormal float64 matrix.

    Computed from the smaller Gram matrix with a partial symmetric eigendecomposition, which is
    exact (not randomized) and much cheaper than a full SVD for ~10,000 neurons. Directions with a
    numerically zero singular value are dropped, so fewer than k columns may come back.
    """
    x = np.asarray(x, dtype=np.float64)
    n_rows, n_cols = x.shape
    k = min(k, n_rows, n_cols)
    if k <= 0:
        return np.zeros((n_cols, 0))
    small = min(n_rows, n_cols)
    gram = x.T @ x if n_cols <= n_rows else x @ x.T  # (small, small)
    eigvals, eigvecs = scipy.linalg.eigh(gram, subset_by_index=[small - k, small - 1])
    eigvals, eigvecs = eigvals[::-1], eigvecs[:, ::-1]  # Descending.
    keep = eigvals > eigvals[0] * 1e-12 if eigvals[0] > 0 else np.zeros(k, dtype=bool)
    eigvals, eigvecs = eigvals[keep], eigvecs[:, keep]
    if n_cols <= n_rows:
        return eigvecs
    v = x.T @ eigvecs / np.sqrt(eigvals)  # Right from left singular vectors: V = X^T U / s.
    q, _ = np.linalg.qr(v)  # Re-orthonormalize against rounding; the span is unchanged.
    return q


def preprocess_responses(
    resp: np.ndarray,
    istim: np.ndarray,
    spont: np.ndarray,
    *,
    n_spont_pcs: int = 32,
    n_images: int | None = None,
    path="<arrays>",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The authors' ``loadProc2800`` followed by ``compute_means(istim, resp, 2)``.

    1. Drop blank trials: the blank is the largest id (as the authors' ``nimg = max(istim) - 1``);
       ``n_images`` only checks that the other ids are rows of the images file.
    2. NaN responses (and NaN spontaneous samples) are set to 0 with a warning, as the authors do
       for ``resp``; +-Inf is a DataError (it cannot come from averaged deconvolved activity and
       zeroing it would hide a damaged file).
    3. z-score every neuron by the mean and std (ddof=0, + 1e-6) of its spontaneous activity
       (of its responses when ``spont`` is empty); a neuron whose spontaneous std is below 1e-6
       takes the std of its responses instead, with a warning (else it would be scaled ~1e6).
    4. Subtract the projection on the top ``n_spont_pcs`` right singular vectors of the z-scored
       spontaneous activity: ``r <- r - (r V) V^T``.
    5. Mean-centre every neuron over trials.
    6. For each image shown at least twice: the mean over all its repeats (``responses``) and the
       means over the first and second half of its repeats in presentation order (``halves``:
       with n repeats, repeats [0, n//2) and [ceil(n/2), ceil(n/2) + n//2), so with 3 repeats the
       middle one is in neither half, as in ``compute_means``). Images shown once are dropped.

    Args:
      resp: (T, N) responses in presentation order.
      istim: (T,) 1-based image ids.
      spont: (T_spont, N) spontaneous activity (may have 0 rows).
      n_spont_pcs: spontaneous PCs projected out (32 in the paper's source, Stringer et al. 2019).
      n_images: number of images in the images file, to check the ids against.
      path: named in error messages.

    Returns:
      responses (S, N) float32, halves (2, S, N) float32, image_index (S,) int64 (0-based, sorted).

    Raises:
      DataError: infinite inputs, ids beyond the images file, no repeats, or non-finite results.
    """
    istim = np.asarray(istim).reshape(-1).astype(np.int64)
    # The authors' rule (nimg = max(istim) - 1): the largest id is the blank, whatever the size
    # of the images file; a file with more images than the recording shows is fine.
    blank_id = int(istim.max()) if istim.size else 1
    if n_images is not None and blank_id > n_images + 1:
        raise _error(
            path,
            f"stim.istim has image id {blank_id - 1} but the images file has only "
            f"{n_images} images (the largest id, {blank_id}, is the blank)",
        )
    keep = istim < blank_id
    istim = istim[keep]
    resp0 = np.array(resp[keep], dtype=np.float64)
    spont = np.array(spont, dtype=np.float64)
    for what, arr in (("stim.resp", resp0), ("stim.spont", spont)):
        if np.isinf(arr).any():
            raise _error(path, f"{what} contains {int(np.isinf(arr).sum())} infinite values")
        n_nan = int(np.isnan(arr).sum())
        if n_nan:
            warnings.warn(f"{os.fspath(path)}: {n_nan} NaN values in {what} set to 0", stacklevel=3)
            arr[np.isnan(arr)] = 0.0
    if istim.size == 0:
        raise _error(path, "no image trials (every trial is a blank)")

    reference = spont if spont.shape[0] else resp0
    mu = reference.mean(axis=0)
    sd = reference.std(axis=0)
    flat = sd < _SD_EPS  # z-scoring by them would scale a neuron by ~1e6
    if flat.any():
        fallback = resp0.std(axis=0)
        warnings.warn(
            f"{os.fspath(path)}: {int(flat.sum())} neurons have no variance in "
            f"{'stim.spont' if spont.shape[0] else 'stim.resp'} (e.g. column "
            f"{int(np.flatnonzero(flat)[0])}); z-scored by the std of their responses instead",
            stacklevel=3,
        )
        sd = np.where(flat, np.where(fallback < _SD_EPS, 1.0, fallback), sd)
    sd += _SD_EPS
    resp0 -= mu  # In place: a real recording is ~0.5 GB per float64 copy.
    resp0 /= sd
    if n_spont_pcs > 0 and spont.shape[0]:
        if n_spont_pcs > min(spont.shape):
            warnings.warn(
                f"{os.fspath(path)}: n_spont_pcs={n_spont_pcs} exceeds the rank of stim.spont "
                f"{spont.shape}; using {min(spont.shape)}",
                stacklevel=3,
            )
        spont -= mu
        spont /= sd
        v = top_right_singular_vectors(spont, n_spont_pcs)  # (N, k)
        resp0 -= (resp0 @ v) @ v.T
    resp0 -= resp0.mean(axis=0)

    # Repeat bookkeeping, vectorized: rank of each trial among the repeats of its image.
    order = np.argsort(istim, kind="stable")  # Stable: keeps presentation order within an image.
    ids, first, counts = np.unique(istim[order], return_index=True, return_counts=True)
    n_trials = order.size
    rank = np.arange(n_trials) - np.repeat(first, counts)
    n_rep = np.repeat(counts, counts)
    half = n_rep // 2
    second_start = n_rep - half  # ceil(n / 2)
    repeated = counts >= 2
    if not repeated.any():
        raise _error(path, "no image was shown at least twice (repeats are needed for halves)")
    row = np.repeat(np.cumsum(repeated) - 1, counts)
    valid = np.repeat(repeated, counts)
    n_rows = int(repeated.sum())

    def average(mask, denominator):
        m = valid & mask
        weights = scipy.sparse.csr_matrix(
            (1.0 / denominator[m], (row[m], order[m])), shape=(n_rows, n_trials)
        )
        return np.asarray(weights @ resp0, dtype=np.float32)  # (S, T) @ (T, N) -> (S, N)

    everything = np.ones(n_trials, dtype=bool)
    responses = average(everything, n_rep)
    first_half = average(rank < half, half)
    second_half = average((rank >= second_start) & (rank < second_start + half), half)
    halves = np.stack([first_half, second_half])  # (2, S, N)
    image_index = (ids[repeated] - 1).astype(np.int64)
    for what, arr in (("responses", responses), ("repeat halves", halves)):
        bad = ~np.isfinite(arr)
        if bad.any():  # e.g. huge finite values in a damaged file overflow float32
            raise _error(
                path,
                f"preprocessed {what} have {int(bad.sum())} non-finite values (damaged "
                "stim.resp or stim.spont?); get a fresh copy of the file",
            )
    return responses, halves, image_index


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
    "DataError",
    "IMAGE_SHAPE",
    "RawRecording",
    "Recording",
    "load_images",
    "load_recording",
    "preprocess_responses",
    "read_raw_recording",
    "top_right_singular_vectors",
]


# ------------------------------------------------------------------------------ image classes

# The release's semantic category of each image, beside the images file.
CLASS_ASSIGNMENT_FILE = "stimuli_class_assignment_confident.mat"
# Class names that mark an image as unlabelled (the release's class 0 is "unknown").
UNLABELLED_CLASS_NAMES = ("unknown", "")
_NOT_CLASSES = "no variable '{}' (not a class-assignment file?)"


@dataclasses.dataclass(frozen=True)
class ClassAssignment:
    """The semantic class of every image of an images file.

    Attributes:
      labels: (n_images,) int64, 0-based index into ``names`` of each image (row of the images
        file).
      names: the class names, ``names[labels[i]]`` is image i's class.
    """

    labels: np.ndarray
    names: tuple[str, ...]

    @property
    def labelled(self) -> np.ndarray:
        """(n_images,) bool: the image has a class (its class name is not "unknown" or "")."""
        known = np.array([n.strip().lower() not in UNLABELLED_CLASS_NAMES for n in self.names])
        return known[self.labels] if len(known) else np.zeros(len(self.labels), bool)


def _char_text(value) -> str:
    """A MATLAB char array (loadmat strings, U1 chars or v7.3 uint16 codes) as one string."""
    arr = np.asarray(_unwrap(value))
    if arr.dtype.kind == "U":
        return "".join(arr.reshape(-1).tolist()).strip()
    if arr.dtype.kind == "S":
        return b"".join(arr.reshape(-1).tolist()).decode("latin-1").strip()
    if arr.dtype.kind in "iu":
        return "".join(chr(int(c)) for c in arr.reshape(-1)).strip()
    raise TypeError(f"not text (MATLAB class {arr.dtype})")


def _class_names_v5(value) -> list[str]:
    arr = np.asarray(value)
    if arr.dtype == object:  # A cell array of char rows.
        return [_char_text(e) for e in arr.reshape(-1, order="F")]
    if arr.dtype.kind == "U":  # A char matrix: loadmat gives one string per row.
        return [str(row).strip() for row in arr.reshape(-1)]
    raise TypeError(f"class_names is neither a cell array of text nor a char matrix ({arr.dtype})")


def _class_names_v73(h5file, ds) -> list[str]:
    if h5py.check_dtype(ref=ds.dtype) is not None:  # A cell: references to char arrays.
        return [_char_text(_h5_array(h5file[ref])) for ref in np.asarray(ds[()]).reshape(-1)]
    if _h5_class(ds) == "char":  # A char matrix, one name per row.
        return ["".join(chr(int(c)) for c in row).strip() for row in np.atleast_2d(_h5_array(ds))]
    raise TypeError(f"class_names is neither a cell array nor a char matrix ({_h5_class(ds)})")


def load_class_assignment(path, n_images: int | None = None) -> ClassAssignment:
    """Loads the release's ``stimuli_class_assignment_confident.mat`` (v5 or v7.3).

    The file holds ``class_assignment`` (1 x n_images, 0-based ids into ``class_names``; the
    release's id 0 is "unknown") and ``class_names`` (a cell array of names). The simulator
    writes one too (``dina_jax.data.synthetic``: each crop's source photograph is its class).

    Args:
      path: the class-assignment file (:data:`CLASS_ASSIGNMENT_FILE` beside the images file).
      n_images: images in the matching images file; the number of labels is checked against it.

    Returns:
      A :class:`ClassAssignment`: ``labels`` (n_images,) int64 and ``names``.

    Raises:
      DataError: ``"<path>: <problem>"`` for a missing, foreign or inconsistent file.

    Paper: Sec. 4.3 (and the abstract): decoding rests on low-level structure, "rather than
    semantic category"; this file gives the categories to test that against.

    Example::

        classes = dina_jax.load_class_assignment(
            "/data/stimuli_class_assignment_confident.mat", n_images=2800)
        classes.names[classes.labels[0]]        # the class of image 0 of images_natimg2800_all
    """
    try:
        if _file_format(path) == "v73":
            try:
                with h5py.File(path, "r") as f:
                    for name in ("class_assignment", "class_names"):
                        if name not in f or not isinstance(f[name], h5py.Dataset):
                            raise _error(path, _NOT_CLASSES.format(name))
                    raw = _h5_array(f["class_assignment"])
                    names = _class_names_v73(f, f["class_names"])
            except (DataError, TypeError):
                raise
            except Exception as exc:
                raise _h5_error(path, exc) from None
        else:
            mat = _loadmat(path, ["class_assignment", "class_names"])
            for name in ("class_assignment", "class_names"):
                if name not in mat:
                    raise _error(path, _NOT_CLASSES.format(name))
            raw = mat["class_assignment"]
            names = _class_names_v5(mat["class_names"])
    except TypeError as exc:
        raise _error(path, str(exc)) from None
    labels = _numeric(raw, path, "class_assignment")
    if labels.ndim > 2 or (labels.ndim == 2 and min(labels.shape) > 1):
        dims = " x ".join(str(d) for d in labels.shape)
        raise _error(path, f"class_assignment is {dims}, expected a 1 x n_images vector")
    labels = labels.reshape(-1)
    if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)) or np.any(labels < 0):
        raise _error(path, "class_assignment must hold non-negative integer class ids")
    labels = labels.astype(np.int64)
    if labels.size and labels.max() >= len(names):
        raise _error(
            path,
            f"class_assignment has class id {labels.max()} but class_names has only "
            f"{len(names)} names (ids are 0-based)",
        )
    if n_images is not None and labels.size != n_images:
        raise _error(
            path, f"class_assignment has {labels.size} entries but the images file has {n_images}"
        )
    return ClassAssignment(labels=labels, names=tuple(names))
