"""Simulated mouse V1 written in the file formats of the Stringer, Pachitariu et al. (2019) release.

The simulator exists so that every demo and test runs the *real* loading path
(:mod:`dina_jax.data.stringer`) and so that the analyses can be validated against known ground
truth. It writes, into one folder:

* the images file (``images_natimg2800_all.mat``, ``images_natimg2800_white_all.mat`` or, as in
  the release, one ``images_natimg2800_8D_<MOUSE>_<DATE>.mat`` per recording): ``imgs``
  68 x 270 x n_images uint8;
* one recording per mouse, ``natimg2800[_white|_8D]_SIM<k>_2026-01-01.mat``, with ``stim.resp``,
  ``stim.istim`` (1-based, blank id n_images + 1), ``stim.spont``, ``med`` and the struct array
  ``stat`` (``redcell``, ``redprob``, ``npix``);
* ``<recording stem>_groundtruth.npz``: the simulated neurons, indexed by original column.
* ``stimuli_class_assignment_confident.mat``, as the release's: ``class_assignment`` (1 x
  n_images, 0-based) and ``class_names``; an image's class is the photograph it was cropped from.

Either MATLAB v5 or v7.3 (:mod:`dina_jax.data.mat_writer`), so both reading paths are exercised.
The simulation is split by concern: the stimuli in :mod:`dina_jax.data.simulated_images`, the
neurons and their trials in :mod:`dina_jax.data.simulated_neurons`, the MATLAB writers in
:mod:`dina_jax.data.mat_writer`; this module names the files, writes a whole dataset
(:func:`generate`) and re-exports the other modules' names.

Responses are normalized per neuron by the mean and std of its drive over the *natural* image set,
so a neuron responds less to whitened images (whose energy sits at high spatial frequencies) than
to natural ones, as the paper's whitening control expects.

Command line::

  python -m dina_jax.data.synthetic OUTDIR --neurons 2000 --images 2800 --mice 1 \
      --stimset natimg2800 --format v5 --seed 0
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from dina_jax.data import stimuli
from dina_jax.data.mat_writer import (
    FORMATS,
    SIM_DATE,
    StructArray,
    _atomic_target,
    _publish,
    write_mat,
    write_mat_v5,
    write_mat_v73,
)
from dina_jax.data.simulated_images import (
    _PHOTOS,
    STIMSETS,
    _check_stimset,
    low_dim_images,
    natural_images,
    stimulus_images,
    whiten_images,
)
from dina_jax.data.simulated_neurons import (
    SimulationParams,
    filter_drive,
    gabor_bank,
    make_neurons,
    simulate_recording,
)

GENERATOR_VERSION = 2  # Bump when the simulation changes, so cached simulated data is redone.

_STIMSET_PREFIX = {"natimg2800": "natimg2800", "white": "natimg2800_white", "8D": "natimg2800_8D"}


# ------------------------------------------------------------------------------ file names


def recording_filename(stimset: str, mouse: int) -> str:
    """``natimg2800[_white|_8D]_SIM<mouse>_2026-01-01.mat``, the release's naming pattern."""
    _check_stimset(stimset)
    return f"{_STIMSET_PREFIX[stimset]}_SIM{mouse}_{SIM_DATE}.mat"


def images_filename(stimset: str, mouse: int = 0) -> str:
    """Images file of a recording: shared for natural/whitened sets, per recording for 8D."""
    _check_stimset(stimset)
    if stimset == "8D":
        return f"images_natimg2800_8D_SIM{mouse}_{SIM_DATE}.mat"
    return f"images_{_STIMSET_PREFIX[stimset]}_all.mat"


def groundtruth_filename(recording: str) -> str:
    """``<recording stem>_groundtruth.npz`` beside the recording."""
    return os.path.splitext(recording)[0] + "_groundtruth.npz"


# ------------------------------------------------------------------------------ generate


def write_class_assignment(outdir, sources) -> str:
    """Writes ``stimuli_class_assignment_confident.mat`` as the release lays it out.

    ``class_assignment`` (1 x n_images, 0-based ids into ``class_names``) and ``class_names``
    (1 x 12 cell): the class of a simulated image is the photograph it was cropped from
    (:data:`_PHOTOS`). Always MATLAB v5. Returns the path.
    """
    names = np.empty((1, len(_PHOTOS)), dtype=object)
    names[0, :] = list(_PHOTOS)
    path = os.path.join(os.fspath(outdir), stimuli.CLASS_ASSIGNMENT_FILE)
    labels = np.asarray(sources, np.float64).reshape(1, -1)
    write_mat_v5(path, {"class_assignment": labels, "class_names": names})
    return path


def image_sources(n_images: int, seed: int) -> np.ndarray:
    """(n_images,) int64: the source photograph of each image :func:`generate` makes from
    ``seed`` (its natural images are replayed, the same for every stimulus set and mouse)."""
    image_seq = np.random.SeedSequence([seed, GENERATOR_VERSION]).spawn(1)[0]
    sources: list[int] = []
    natural_images(n_images, np.random.default_rng(image_seq), sources)
    return np.asarray(sources, np.int64)


def ensure_class_assignment(folder, n_images: int, seed: int) -> str:
    """The class file of a simulated dataset in ``folder``, written first if it is missing
    (datasets generated before the simulator wrote one). Returns its path."""
    path = os.path.join(os.fspath(folder), stimuli.CLASS_ASSIGNMENT_FILE)
    if not os.path.exists(path):
        write_class_assignment(folder, image_sources(n_images, seed))
    return path


def generate(
    outdir,
    *,
    n_neurons: int,
    n_images: int,
    n_mice: int = 1,
    stimset: str = "natimg2800",
    fmt: str = "v5",
    seed: int = 0,
    params: SimulationParams | None = None,
) -> dict:
    """Writes a complete simulated dataset into ``outdir``.

    Every random choice flows from ``seed``: the natural image set (shared by all stimsets and
    mice, like the release's 2,800 images), then each mouse's neurons and trials.

    Returns:
      dict with ``images``, ``recordings`` and ``groundtruth``: lists of written paths, one per
      mouse (the natural and whitened sets share one images file, repeated in the list), and
      ``classes``: the one class file (each image's source photograph as its class).
    """
    _check_stimset(stimset)
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if n_neurons < 1 or n_images < 1 or n_mice < 1:
        raise ValueError("n_neurons, n_images and n_mice must be positive")
    params = params or SimulationParams()
    outdir = os.fspath(outdir)
    os.makedirs(outdir, exist_ok=True)
    root = np.random.SeedSequence([seed, GENERATOR_VERSION])
    image_seq, *mouse_seqs = root.spawn(1 + n_mice)
    image_rng = np.random.default_rng(image_seq)
    sources: list[int] = []
    natural = natural_images(n_images, image_rng, sources)
    stimuli = stimulus_images(stimset, natural, image_rng)

    written = {"images": [], "recordings": [], "groundtruth": []}
    # Every stimulus set derives from the same natural images: one class file serves them all.
    written["classes"] = [write_class_assignment(outdir, sources)]
    for mouse, sequence in enumerate(mouse_seqs):
        rng = np.random.default_rng(sequence)
        images_path = os.path.join(outdir, images_filename(stimset, mouse))
        if not written["images"] or stimset == "8D":
            write_mat(images_path, {"imgs": np.ascontiguousarray(stimuli.transpose(1, 2, 0))}, fmt)
        written["images"].append(images_path)

        neurons = make_neurons(n_neurons, rng, params)
        bank = gabor_bank(neurons)
        natural_drive = filter_drive(natural, neurons, bank)
        mean, std = natural_drive.mean(axis=0), natural_drive.std(axis=0) + 1e-6
        drive = natural_drive if stimset == "natimg2800" else filter_drive(stimuli, neurons, bank)
        signal = (neurons["gain"] * (drive - mean) / std).astype(np.float32)  # (S, N)
        trials = simulate_recording(signal, neurons, rng, params)
        redcell = neurons["redcell"].astype(np.float64)
        stat = StructArray(
            {
                "redcell": redcell,
                "redprob": np.clip(redcell * 0.7 + 0.3 * rng.random(n_neurons), 0.0, 1.0),
                "npix": rng.integers(60, 160, n_neurons).astype(np.float64),
            }
        )
        recording_path = os.path.join(outdir, recording_filename(stimset, mouse))
        stim = {"resp": trials["resp"], "istim": trials["istim"], "spont": trials["spont"]}
        write_mat(recording_path, {"stim": stim, "med": trials["med"], "stat": stat}, fmt)
        written["recordings"].append(recording_path)

        truth_path = os.path.join(outdir, groundtruth_filename(recording_filename(stimset, mouse)))
        truth = dict(neurons, drive_mean=mean, drive_std=std)
        truth.update(stimset=np.array(stimset), n_images=np.array(n_images), seed=np.array(seed))
        tmp = _atomic_target(truth_path)
        try:
            with open(tmp, "wb") as fh:
                np.savez(fh, **truth)
            _publish(tmp, truth_path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        written["groundtruth"].append(truth_path)
    return written


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m dina_jax.data.synthetic",
        description="Write a simulated V1 dataset in the Stringer et al. (2019) file formats.",
    )
    parser.add_argument("outdir", help="folder to write into (created if missing)")
    parser.add_argument("--neurons", type=int, default=2000, help="neurons per mouse")
    parser.add_argument("--images", type=int, default=2800, help="distinct images")
    parser.add_argument("--mice", type=int, default=1, help="recordings (simulated mice)")
    parser.add_argument("--stimset", choices=STIMSETS, default="natimg2800")
    parser.add_argument("--format", choices=FORMATS, default="v5", dest="fmt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--gain-scale", type=float, default=1.0, help="multiplies every gain (signal strength)"
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    written = generate(
        args.outdir,
        n_neurons=args.neurons,
        n_images=args.images,
        n_mice=args.mice,
        stimset=args.stimset,
        fmt=args.fmt,
        seed=args.seed,
        params=SimulationParams().scaled(args.gain_scale),
    )
    for path in sorted({p for paths in written.values() for p in paths}):
        print(path)
    print(f"generated in {time.perf_counter() - start:.1f} s")


# Names defined here and re-exported from the simulation modules; callers import them from here.
__all__ = [
    "FORMATS",
    "GENERATOR_VERSION",
    "SIM_DATE",
    "STIMSETS",
    "SimulationParams",
    "StructArray",
    "ensure_class_assignment",
    "filter_drive",
    "gabor_bank",
    "generate",
    "groundtruth_filename",
    "image_sources",
    "images_filename",
    "low_dim_images",
    "main",
    "make_neurons",
    "natural_images",
    "recording_filename",
    "simulate_recording",
    "stimulus_images",
    "whiten_images",
    "write_class_assignment",
    "write_mat",
    "write_mat_v5",
    "write_mat_v73",
]


if __name__ == "__main__":
    main()
