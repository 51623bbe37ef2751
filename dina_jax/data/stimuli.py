"""Loaders for the stimulus side of the Stringer et al. (2019) release: images and their classes.

* ``images_natimg2800_all.mat`` (and the whitened / 8D variants): ``imgs``, 68 x 270 x n_images,
  grayscale uint8 in degrees of visual space (:func:`load_images`).
* ``stimuli_class_assignment_confident.mat``: the semantic class of each image
  (:func:`load_class_assignment`).

Both read MATLAB v5 and v7.3 files (:mod:`dina_jax.data.matfile`); every problem with an input file
raises :class:`~dina_jax.data.matfile.DataError` with one line ``"<path>: <problem>"``.
"""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np

from dina_jax.data.matfile import (
    DataError,
    _char_text,
    _error,
    _file_format,
    _h5_array,
    _h5_class,
    _h5_error,
    _loadmat,
    _numeric,
)

IMAGE_SHAPE = (68, 270)  # Stimulus size in degrees of visual space (= pixels), Sec. 4.1.


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


__all__ = [
    "CLASS_ASSIGNMENT_FILE",
    "ClassAssignment",
    "IMAGE_SHAPE",
    "UNLABELLED_CLASS_NAMES",
    "load_class_assignment",
    "load_images",
]
