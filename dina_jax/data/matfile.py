"""Reading MATLAB ``.mat`` files, v5 and v7.3, and the error every unusable input raises.

Both MATLAB v5 (``scipy.io.loadmat``) and v7.3 (HDF5, read with h5py: arrays stored transposed,
structs as groups, struct arrays as datasets of object references) are read. The helpers here know
the two formats, not the release's variables: :mod:`dina_jax.data.stringer` (recordings) and
:mod:`dina_jax.data.stimuli` (images, classes) build on them. The underscored helpers are shared
within :mod:`dina_jax.data` only.

Every problem with an input file raises :class:`DataError` with one line ``"<path>: <problem>"``.
"""

from __future__ import annotations

import os

import h5py
import numpy as np
import scipy.io


class DataError(ValueError):
    """An input file that cannot be used. The message is one line: ``"<path>: <problem>"``."""


def _error(path, problem: str) -> DataError:
    problem = " ".join(str(problem).split())  # One line, whatever the wrapped exception said.
    return DataError(f"{os.fspath(path)}: {problem}")


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


# --- char arrays --------------------------------------------------------------------------------


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


__all__ = ["DataError"]
