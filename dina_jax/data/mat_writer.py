"""MATLAB v5 and v7.3 writers that lay files out as MATLAB (and the Stringer et al. release) does.

Either MATLAB v5 (``scipy.io.savemat``) or v7.3 (HDF5 with the 512-byte MATLAB user block,
``MATLAB_class`` attributes, transposed arrays, structs as groups and struct arrays as datasets of
object references into ``#refs#``), so that the simulated data exercises both reading paths of
:mod:`dina_jax.data.stringer`. Every file is written to a temp file and renamed into place.
"""

from __future__ import annotations

import os
import tempfile
import time

import h5py
import numpy as np
import scipy.io

FORMATS = ("v5", "v73")
# Date of the simulated recordings: in their file names (dina_jax/data/synthetic.py) and in the
# "Created on" of the v7.3 header.
SIM_DATE = "2026-01-01"


class StructArray:
    """A 1 x n MATLAB struct array: ``fields[name][i]`` is ``s(i).name`` (a scalar here)."""

    def __init__(self, fields: dict):
        self.fields = {k: np.asarray(v) for k, v in fields.items()}
        sizes = {v.shape[0] for v in self.fields.values()}
        if len(sizes) != 1:
            raise ValueError("every field of a struct array needs one value per element")
        self.size = sizes.pop()


def _atomic_target(path: str) -> str:
    """A temp file beside ``path``; :func:`_publish` moves it into place in one rename."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-")
    os.close(fd)
    return tmp


def _publish(tmp: str, path: str) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions.
    os.replace(tmp, path)


def write_mat_v5(path: str, variables: dict) -> None:
    """Writes a MATLAB v5 file; dict values become scalar structs, StructArray 1 x n structs."""
    out = {}
    for name, value in variables.items():
        if isinstance(value, StructArray):
            record = np.empty((1, value.size), dtype=[(k, object) for k in value.fields])
            for key, column in value.fields.items():
                for i in range(value.size):
                    record[key][0, i] = np.array([[column[i]]])
            value = record
        out[name] = value
    tmp = _atomic_target(path)
    try:
        scipy.io.savemat(tmp, out, do_compression=False, oned_as="column")
        _publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


_MATLAB_CLASS = {
    np.dtype(np.float64): "double",
    np.dtype(np.float32): "single",
    np.dtype(np.uint8): "uint8",
    np.dtype(np.int8): "int8",
    np.dtype(np.uint16): "uint16",
    np.dtype(np.int16): "int16",
    np.dtype(np.uint32): "uint32",
    np.dtype(np.int32): "int32",
    np.dtype(np.uint64): "uint64",
    np.dtype(np.int64): "int64",
    np.dtype(np.bool_): "logical",
}


def _h5_write_array(parent: h5py.Group, name: str, value) -> h5py.Dataset:
    arr = np.asarray(value)
    if arr.ndim < 2:  # MATLAB arrays are at least 2-D; a vector is a column (oned_as="column").
        arr = arr.reshape(-1, 1)
    matlab_class = _MATLAB_CLASS[arr.dtype]
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    ds = parent.create_dataset(name, data=np.ascontiguousarray(arr.T))  # Column-major on disk.
    ds.attrs["MATLAB_class"] = np.bytes_(matlab_class)
    if matlab_class == "logical":
        ds.attrs["MATLAB_int_decode"] = np.int32(1)
    return ds


def _h5_fields_attr(group: h5py.Group, names) -> None:
    vlen = h5py.vlen_dtype(np.dtype("S1"))
    value = np.empty(len(names), dtype=object)
    for i, field in enumerate(names):
        value[i] = np.frombuffer(field.encode("ascii"), dtype="S1")
    group.attrs.create("MATLAB_fields", value, dtype=vlen)


def write_mat_v73(path: str, variables: dict) -> None:
    """Writes a MATLAB 7.3 (HDF5) file as MATLAB lays it out.

    A 512-byte user block holding the MAT-file text header (version 0x0200, "IM" endianness);
    every variable carries a ``MATLAB_class`` attribute; arrays are stored transposed
    (column-major); a dict is a scalar struct (a group with ``MATLAB_fields``); a
    :class:`StructArray` is a group whose fields are (n, 1) datasets of object references to
    per-element datasets in ``/#refs#``.
    """
    tmp = _atomic_target(path)
    try:
        with h5py.File(tmp, "w", userblock_size=512) as f:
            refs = f.create_group("#refs#")
            counter = 0
            for name, value in variables.items():
                if isinstance(value, StructArray):
                    group = f.create_group(name)
                    group.attrs["MATLAB_class"] = np.bytes_("struct")
                    _h5_fields_attr(group, list(value.fields))
                    for key, column in value.fields.items():
                        targets = np.empty((value.size, 1), dtype=h5py.ref_dtype)
                        for i in range(value.size):
                            element = _h5_write_array(refs, f"r{counter}", column[i])
                            counter += 1
                            targets[i, 0] = element.ref
                        # MATLAB gives the reference datasets of a struct array no class.
                        group.create_dataset(key, data=targets, dtype=h5py.ref_dtype)
                elif isinstance(value, dict):
                    group = f.create_group(name)
                    group.attrs["MATLAB_class"] = np.bytes_("struct")
                    _h5_fields_attr(group, list(value))
                    for key, field_value in value.items():
                        _h5_write_array(group, key, field_value)
                else:
                    _h5_write_array(f, name, value)
        created = time.strftime("%a %b %d %H:%M:%S %Y", time.strptime(SIM_DATE, "%Y-%m-%d"))
        text = f"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: {created} HDF5 schema 1.00 ."
        header = text.encode("ascii").ljust(116, b" ") + b" " * 8 + b"\x00\x02IM"
        with open(tmp, "r+b") as fh:
            fh.write(header.ljust(512, b"\x00"))
        _publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_mat(path: str, variables: dict, fmt: str) -> None:
    if fmt == "v5":
        write_mat_v5(path, variables)
    elif fmt == "v73":
        write_mat_v73(path, variables)
    else:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
