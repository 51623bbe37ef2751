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

Neurons: retinotopic Gabor simple cells (half-rectified linear filter) and, for 80% of the visual
neurons (layer 2/3, which two-photon recordings image, is dominated by complex cells), complex
cells (energy of a quadrature pair) with RF centres spread over the visual field, log-uniform sizes
and spatial frequencies, random orientations and phases; log-normal gains (a minority strongly
responsive); a fraction of non-visual neurons (gain 0); a shared multiplicative gain per trial;
low-rank shared noise that is also present in the spontaneous activity (so that projecting out
spontaneous PCs helps, as in the real data); private noise; non-negative (rectified) activity; some
red cells. Each image is shown twice in random order, interleaved with blank (gray screen) trials.

Responses are normalized per neuron by the mean and std of its drive over the *natural* image set,
so a neuron responds less to whitened images (whose energy sits at high spatial frequencies) than
to natural ones, as the paper's whitening control expects.

Command line::

  python -m dina_jax.data.synthetic OUTDIR --neurons 2000 --images 2800 --mice 1 \
      --stimset natimg2800 --format v5 --seed 0
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import numpy as np

from dina_jax.data import stringer
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
from dina_jax.data.stringer import IMAGE_SHAPE

GENERATOR_VERSION = 2  # Bump when the simulation changes, so cached simulated data is redone.

_STIMSET_PREFIX = {"natimg2800": "natimg2800", "white": "natimg2800_white", "8D": "natimg2800_8D"}


@dataclasses.dataclass(frozen=True)
class SimulationParams:
    """Knobs of the simulated V1; the defaults give repeat-to-repeat top-1 decoding well above
    chance but far from perfect (see tests/test_synthetic.py)."""

    frac_nonvisual: float = 0.3  # Neurons with no visual drive (gain 0).
    frac_complex: float = 0.8  # Complex (energy) rather than simple cells; docs/decisions.md.
    frac_redcell: float = 0.08  # GAD+ neurons flagged in stat.redcell (dropped by the loader).
    rf_sigma_range: tuple = (3.0, 9.0)  # Gaussian envelope sigma in degrees (= pixels).
    sf_range: tuple = (0.02, 0.12)  # Spatial frequency in cycles per degree.
    aspect_range: tuple = (1.0, 1.6)  # Envelope elongation along the bars.
    gain_median: float = 0.25  # Median signal std in units of the private noise std.
    gain_log_sigma: float = 0.9  # Log-normal spread of the gains: a minority strongly responsive.
    shared_gain_log_sigma: float = 0.25  # Per-trial multiplicative gain shared by all neurons.
    n_noise_factors: int = 12  # Rank of the shared (spontaneous) noise.
    noise_factor_scale: float = 1.5  # Std of the largest shared-noise factor (decays as k^-0.75).
    baseline_median: float = 4.0  # Median spontaneous rate (rectification rarely binds).
    blank_fraction: float = 0.05  # Blank trials per image trial.
    spont_per_trial: float = 0.5  # Spontaneous timepoints per trial.

    def scaled(self, gain_scale: float) -> SimulationParams:
        """These parameters with every gain multiplied by ``gain_scale``."""
        return dataclasses.replace(self, gain_median=self.gain_median * gain_scale)


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


# ------------------------------------------------------------------------------ neurons


def make_neurons(n_neurons: int, rng: np.random.Generator, params: SimulationParams) -> dict:
    """Draws the simulated population; every array is indexed by the neuron's file column.

    Returns a dict with ``rf_center`` (N, 2) float32 (row, col) in 68 x 270 pixel coordinates,
    ``rf_sigma``, ``spatial_frequency``, ``orientation``, ``phase``, ``aspect``, ``gain``,
    ``baseline`` (N,) float32 and ``is_visual``, ``is_complex``, ``redcell`` (N,) bool. Non-visual
    neurons keep the filter they would have but have gain 0.
    """
    height, width = IMAGE_SHAPE
    sigma = np.exp(rng.uniform(*np.log(params.rf_sigma_range), n_neurons))
    margin = np.minimum(sigma, 0.45 * height)  # Keep most of each RF on the screens.
    rows = rng.uniform(margin, height - 1 - margin)
    cols = rng.uniform(margin, width - 1 - margin)
    is_visual = rng.random(n_neurons) >= params.frac_nonvisual
    gain = params.gain_median * np.exp(params.gain_log_sigma * rng.standard_normal(n_neurons))
    return {
        "rf_center": np.stack([rows, cols], axis=1).astype(np.float32),
        "rf_sigma": sigma.astype(np.float32),
        "spatial_frequency": np.exp(rng.uniform(*np.log(params.sf_range), n_neurons)).astype(
            np.float32
        ),
        "orientation": rng.uniform(0.0, np.pi, n_neurons).astype(np.float32),
        "phase": rng.uniform(0.0, 2 * np.pi, n_neurons).astype(np.float32),
        "aspect": rng.uniform(*params.aspect_range, n_neurons).astype(np.float32),
        "gain": np.where(is_visual, gain, 0.0).astype(np.float32),
        "baseline": (params.baseline_median * np.exp(0.4 * rng.standard_normal(n_neurons))).astype(
            np.float32
        ),
        "is_visual": is_visual,
        "is_complex": rng.random(n_neurons) < params.frac_complex,
        "redcell": rng.random(n_neurons) < params.frac_redcell,
    }


def gabor_bank(neurons: dict, step: int = 2) -> np.ndarray:
    """Quadrature Gabor filters of every neuron sampled on a ``step``-subsampled pixel grid.

    Returns:
      (2, N, H // step * W // step) float32: the even (phase) and odd (phase + pi/2) filters, each
      with unit L2 norm, evaluated at the centres of the ``step`` x ``step`` pixel blocks.
    """
    height, width = IMAGE_SHAPE
    offset = (step - 1) / 2.0
    grid_r = (np.arange(height // step) * step + offset).astype(np.float32)
    grid_c = (np.arange(width // step) * step + offset).astype(np.float32)
    center = neurons["rf_center"]
    dr = grid_r[None, :, None] - center[:, 0, None, None]  # (N, h, 1)
    dc = grid_c[None, None, :] - center[:, 1, None, None]  # (N, 1, w)
    theta = neurons["orientation"][:, None, None]
    along = dc * np.cos(theta) + dr * np.sin(theta)  # (N, h, w), across the bars
    across = -dc * np.sin(theta) + dr * np.cos(theta)  # along the bars
    sigma = neurons["rf_sigma"][:, None, None]
    aspect = neurons["aspect"][:, None, None]
    envelope = np.exp(-0.5 * (along**2 + (across / aspect) ** 2) / sigma**2)
    # Truncate the tails: float32 denormals far from the RF slow the BLAS product ~100x.
    envelope = np.where(envelope > 1e-6, envelope, 0.0)
    argument = 2 * np.pi * neurons["spatial_frequency"][:, None, None] * along
    argument = argument + neurons["phase"][:, None, None]
    bank = np.stack([envelope * np.cos(argument), envelope * np.sin(argument)])  # (2, N, h, w)
    bank = bank.reshape(2, len(center), -1)
    bank /= np.linalg.norm(bank, axis=2, keepdims=True) + 1e-12
    return bank.astype(np.float32)


def filter_drive(images: np.ndarray, neurons: dict, bank: np.ndarray, step: int = 2) -> np.ndarray:
    """Un-normalized visual drive of every neuron to every image.

    Simple cells: half-rectified even-filter output; complex cells: quadrature energy
    ``sqrt(even^2 + odd^2)``. One matrix product of the (block-averaged) images with the bank.

    Returns:
      (S, N) float32.
    """
    n, height, width = images.shape
    x = (images.astype(np.float32) - 128.0) / 64.0  # The authors' stimulus normalization.
    x = x[:, : height // step * step, : width // step * step]
    x = x.reshape(n, height // step, step, width // step, step).mean(axis=(2, 4))
    x = x.reshape(n, -1)  # (S, P)
    even = x @ bank[0].T  # (S, P) @ (P, N) -> (S, N)
    odd = x @ bank[1].T
    return np.where(neurons["is_complex"], np.sqrt(even**2 + odd**2), np.maximum(even, 0.0))


# ------------------------------------------------------------------------------ recordings


def simulate_recording(
    signal: np.ndarray, neurons: dict, rng: np.random.Generator, params: SimulationParams
) -> dict:
    """Trials in presentation order: each image twice plus blank trials, and spontaneous activity.

    Args:
      signal: (S, N) noise-free stimulus-evoked signal (drive normalized and scaled by gain).

    Returns:
      dict with ``resp`` (T, N) float32, ``istim`` (T,) float64 (1-based, blank = S + 1),
      ``spont`` (T_spont, N) float32 and ``med`` (N, 3) float64 cell centres in micrometres.
    """
    n_images, n_neurons = signal.shape
    n_blank = max(1, round(params.blank_fraction * 2 * n_images))
    istim = np.concatenate([np.tile(np.arange(1, n_images + 1), 2), np.full(n_blank, n_images + 1)])
    istim = rng.permutation(istim)
    n_trials = istim.size
    n_spont = max(4 * params.n_noise_factors, round(params.spont_per_trial * n_trials))

    factor_std = params.noise_factor_scale * np.arange(1, params.n_noise_factors + 1) ** -0.75
    loadings = rng.standard_normal((params.n_noise_factors, n_neurons)).astype(np.float32)
    loadings *= factor_std[:, None].astype(np.float32)
    baseline = neurons["baseline"]

    def activity(n_rows, evoked):
        shared_gain = np.exp(
            params.shared_gain_log_sigma * rng.standard_normal((n_rows, 1))
            - 0.5 * params.shared_gain_log_sigma**2
        ).astype(np.float32)
        factors = rng.standard_normal((n_rows, params.n_noise_factors)).astype(np.float32)
        private = rng.standard_normal((n_rows, n_neurons), dtype=np.float32)
        x = shared_gain * (baseline + evoked) + factors @ loadings + private
        return np.maximum(x, 0.0).astype(np.float32)  # Deconvolved activity is non-negative.

    padded = np.concatenate([signal, np.zeros((1, n_neurons), np.float32)])  # Blank row.
    resp = activity(n_trials, padded[istim - 1])
    spont = activity(n_spont, 0.0)

    # Retinotopic cell positions (um): cortical position follows the RF centre, plus scatter;
    # 11 planes 35 um apart, like the release's multi-plane recordings.
    rows, cols = neurons["rf_center"][:, 0], neurons["rf_center"][:, 1]
    med = np.stack(
        [
            100.0 + 900.0 * cols / IMAGE_SHAPE[1] + 40.0 * rng.standard_normal(n_neurons),
            100.0 + 500.0 * rows / IMAGE_SHAPE[0] + 40.0 * rng.standard_normal(n_neurons),
            35.0 * rng.integers(0, 11, n_neurons),
        ],
        axis=1,
    )
    return {"resp": resp, "istim": istim.astype(np.float64), "spont": spont, "med": med}


# ------------------------------------------------------------------------------ generate


def write_class_assignment(outdir, sources) -> str:
    """Writes ``stimuli_class_assignment_confident.mat`` as the release lays it out.

    ``class_assignment`` (1 x n_images, 0-based ids into ``class_names``) and ``class_names``
    (1 x 12 cell): the class of a simulated image is the photograph it was cropped from
    (:data:`_PHOTOS`). Always MATLAB v5. Returns the path.
    """
    names = np.empty((1, len(_PHOTOS)), dtype=object)
    names[0, :] = list(_PHOTOS)
    path = os.path.join(os.fspath(outdir), stringer.CLASS_ASSIGNMENT_FILE)
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
    path = os.path.join(os.fspath(folder), stringer.CLASS_ASSIGNMENT_FILE)
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
