"""The class-assignment file (``stimuli_class_assignment_confident.mat``): the loader's formats
and errors, and the simulator's file (each crop's source photograph as its class)."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
import scipy.io

from dina_jax.data import stringer, synthetic
from dina_jax.data.stringer import DataError, load_class_assignment


def _cell(names):
    cell = np.empty((1, len(names)), dtype=object)
    cell[0, :] = list(names)
    return cell


def _write_v5(path, labels, names, **extra):
    variables = {"class_assignment": np.asarray(labels, np.float64), **extra}
    if names is not None:
        variables["class_names"] = _cell(names)
    scipy.io.savemat(os.fspath(path), variables)
    return os.fspath(path)


def _write_v73(path, labels, names):
    """MATLAB 7.3's layout: a transposed double row and a cell of uint16 char references."""
    with h5py.File(path, "w", userblock_size=512) as f:
        ds = f.create_dataset("class_assignment", data=np.asarray(labels, np.float64)[:, None])
        ds.attrs["MATLAB_class"] = np.bytes_("double")
        refs = f.create_group("#refs#")
        cell = np.empty((len(names), 1), dtype=h5py.ref_dtype)
        for i, name in enumerate(names):
            char = refs.create_dataset(f"c{i}", data=np.array([[ord(c)] for c in name], np.uint16))
            char.attrs["MATLAB_class"] = np.bytes_("char")
            cell[i, 0] = char.ref
        names_ds = f.create_dataset("class_names", data=cell, dtype=h5py.ref_dtype)
        names_ds.attrs["MATLAB_class"] = np.bytes_("cell")
    with open(path, "r+b") as fh:  # The MAT-file text header in the user block.
        fh.write(b"MATLAB 7.3 MAT-file".ljust(124, b" ") + b"\x00\x02IM")
    return os.fspath(path)


NAMES = ("unknown", "birds", "cats", "flowers")
LABELS = [1, 0, 3, 3, 2, 1]


@pytest.mark.parametrize("writer", [_write_v5, _write_v73], ids=["v5", "v73"])
def test_release_layout_is_read_in_both_formats(tmp_path, writer):
    path = writer(tmp_path / stringer.CLASS_ASSIGNMENT_FILE, LABELS, NAMES)
    classes = load_class_assignment(path, n_images=6)
    assert classes.names == NAMES
    np.testing.assert_array_equal(classes.labels, LABELS)
    assert classes.labels.dtype == np.int64
    # The release's class 0, "unknown", marks an unlabelled image.
    np.testing.assert_array_equal(classes.labelled, [True, False, True, True, True, True])


def test_char_matrix_names_are_read(tmp_path):
    path = tmp_path / "classes.mat"
    scipy.io.savemat(
        path, {"class_assignment": np.array([[0, 1, 1]]), "class_names": ["cats ", "dogs "]}
    )
    assert load_class_assignment(path).names == ("cats", "dogs")


@pytest.mark.parametrize(
    "labels, names, n_images, problem",
    [
        ([0, 1, 4], NAMES, None, "class id 4 but class_names has only 4 names"),
        ([0, 1.5, 2], NAMES, None, "non-negative integer class ids"),
        ([0, -1, 2], NAMES, None, "non-negative integer class ids"),
        ([0, np.nan, 2], NAMES, None, "non-negative integer class ids"),
        ([[0, 1], [1, 0]], NAMES, None, "is 2 x 2, expected a 1 x n_images vector"),
        ([0, 1, 2], NAMES, 5, "has 3 entries but the images file has 5"),
        ([0, 1, 2], None, None, "no variable 'class_names'"),
    ],
)
def test_inconsistent_files_fail_in_one_line_naming_the_file(
    tmp_path, labels, names, n_images, problem
):
    path = _write_v5(tmp_path / "classes.mat", labels, names)
    with pytest.raises(DataError, match=problem) as error:
        load_class_assignment(path, n_images=n_images)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and "\n" not in message


def test_missing_foreign_and_wrong_files(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_class_assignment(tmp_path / "absent.mat")
    text = tmp_path / "notes.mat"
    text.write_text("not a MATLAB file at all, just some text\n" * 10)
    with pytest.raises(DataError, match="not a MATLAB"):
        load_class_assignment(text)
    images = tmp_path / "images.mat"
    scipy.io.savemat(images, {"imgs": np.zeros((68, 270, 2), np.uint8)})
    with pytest.raises(DataError, match="no variable 'class_assignment'"):
        load_class_assignment(images)


def test_simulator_writes_each_images_source_photograph(tmp_path):
    written = synthetic.generate(tmp_path / "sim", n_neurons=12, n_images=40, n_mice=1, seed=5)
    (path,) = written["classes"]
    assert os.path.basename(path) == stringer.CLASS_ASSIGNMENT_FILE
    classes = load_class_assignment(path, n_images=40)
    assert classes.names == synthetic._PHOTOS and classes.labelled.all()
    # The images replayed with their sources are the images written.
    sources: list[int] = []
    rng = np.random.default_rng(
        np.random.SeedSequence([5, synthetic.GENERATOR_VERSION]).spawn(1)[0]
    )
    images = synthetic.natural_images(40, rng, sources)
    np.testing.assert_array_equal(classes.labels, sources)
    np.testing.assert_array_equal(
        stringer.load_images(written["images"][0]), images.astype(np.float32)
    )
    assert len(set(sources)) > 5  # Many photographs, so the class check has classes to compare.
    # A dataset written before the simulator wrote class files gets the same file back.
    os.unlink(path)
    again = synthetic.ensure_class_assignment(tmp_path / "sim", n_images=40, seed=5)
    np.testing.assert_array_equal(load_class_assignment(again).labels, classes.labels)
