"""The interpretability analyses of a trained run (paper Sec. 4.4-4.5, Fig. 5-6) in one call.

    from dina_jax.analysis.run import analyze
    summary = analyze(config, workdir)

restores the best checkpoint of ``workdir``, takes the first ``config.analysis.n_images`` test
stimuli of the run's split and runs the stages of :data:`dina_jax.analysis.stages.STAGES`, in
this order (each with its settings block ``config.analysis.<name>``):

  pathways    SSIM of the local-only / global-only image feature maps to the full map (Fig. 5a);
  occlusion   Gaussian-occlusion importance maps, one compiled computation per image (Fig. 5b-c);
  blobs       blobs of every map, their sizes, counts and Shape-Texture Index (Fig. 5d-h);
  ablation    response-ranked vs random neuron subsets (Fig. 6a);
  attention   streamed attention-score histogram with a log-normal fit (Fig. 6b);
  attention_contribution
              retrieval and neural-map SSIM with the attention uniform or removed, and the
              spread of the scores (does the attention matter? Fig. 6 presupposes it);
  validation  (simulated data only) occlusion maps vs the simulated RFs that drive the population,
              and the ablation ranking vs the simulator's high-gain neurons.

Results go to ``workdir/analysis.h5`` (one group per stage; at the root ``rows``,
``image_index``, ``neuron_index`` and ``neuron_xyz`` say which stimuli and neurons they refer to,
each with ``units`` and ``description`` attributes, as is every dataset of a stage's group:
``Stage.datasets``), a summary to ``workdir/analysis.json`` and
figures to ``workdir/figures/fig5*.png`` and ``fig6*.png``. The run is resumable: a stage whose
group is complete and was computed with the same settings, stimuli and upstream results is
skipped, and occlusion maps are stored image by image. ``analysis.h5`` is worked on in memory and
replaced atomically after every stage (:class:`ResultsFile`), so a kill at any moment leaves the
last complete file; a torn one (from an older version) is reported and recomputed. The model,
data and split come from the workdir (``dina_jax.checkpoint.load_run``); the data paths and the
``analysis`` settings from ``config``.
"""

from __future__ import annotations

import functools
import json
import os
import time
import warnings

import h5py
import jax
import numpy as np

from dina_jax import files, progress
from dina_jax.analysis import stages
from dina_jax.analysis.stage_framework import Inputs, Stage, StageContext, describe
from dina_jax.checkpoint import load_run

FIGURES = "figures"
H5_NAME = "analysis.h5"


def analyze(config, workdir: str) -> dict:
    """Runs every analysis stage on the test stimuli of a trained run; see the module docstring.

    Paper Sec. 4.4-4.5, Fig. 5a-h and Fig. 6a-b (App. A).

    Args:
      config: full ConfigDict; its ``analysis`` section sets what is computed and its ``data``
        section where the data are.
      workdir: a trained run (``checkpoints/best``, ``split.json``).

    Returns:
      A summary dict (also written to ``workdir/analysis.json``): per stage its scalar results,
      and ``figures``, the PNGs written.

    Example::

        summary = dina_jax.analyze(config, "workdirs/synthetic")  # writes analysis.h5
        summary["blobs"]["sti_mean"], summary["figures"]
    """
    with files.workdir_lock(workdir, create=False):
        return _analyze(config, workdir)


def _analyze(config, workdir: str) -> dict:
    an = config.analysis
    # The model, its statistics and the split come from the run; data paths and the analysis
    # settings from ``config``.
    model, params, run_config, dataset = load_run(workdir, "best", config=config)
    rows = np.asarray(dataset.split.test[: an.n_images])
    inputs = Inputs(
        model=model,
        params=params,
        config=run_config,
        dataset=dataset,
        rows=rows,
        images=np.asarray(dataset.images[rows], np.float32),
        responses=np.asarray(dataset.responses[rows], np.float32),
    )
    print(
        f"analysing {len(rows)} test stimuli of {workdir} ({run_config.model.name}, "
        f"{inputs.responses.shape[1]} neurons) on {jax.devices()[0].platform}",
        flush=True,
    )
    summary: dict = {}
    figures: list[str] = []
    figure_dir = os.path.join(workdir, FIGURES)
    with ResultsFile(os.path.join(workdir, H5_NAME)) as store:
        h5 = store.h5
        h5.attrs["workdir"] = os.path.abspath(workdir)
        _write_index(h5, dataset, rows)
        keys: dict[str, str] = {}  # The settings key of every stage run so far.
        applicable = [stage for stage in stages.STAGES if stage.applies(inputs)]
        started = time.time()
        for number, stage in enumerate(applicable, start=1):
            stage_started = time.time()
            block = _config_block(an, stage)
            keys[stage.name] = _settings_key(stage, block, rows, keys)
            group, done = _open_stage(h5, stage, keys[stage.name])
            context = StageContext(
                inputs,
                block,
                an,
                h5,
                group,
                figure_dir,
                run_config.get("figures"),
                # A resumable stage's partial results are documented in every saved file.
                persist=functools.partial(_persist, store, group, stage),
            )
            if not done:
                _write(group, *stage.compute(context))
            # Also a stored group: a file written before its datasets were documented gets it.
            if describe(group, stage) or not done:
                store.save()
            summary[stage.name] = _scalars(group)
            if stage.figures is not None:
                figures.extend(stage.figures(context))
            print(
                f"analysis {number}/{len(applicable)} {stage.name}: "
                + ("stored, " if done else "")
                + f"{progress.format_duration(time.time() - stage_started)} "
                f"(elapsed {progress.format_duration(time.time() - started)})",
                flush=True,
            )
    summary["figures"] = figures
    files.write_json(
        os.path.join(workdir, "analysis.json"), summary, indent=2, sort_keys=True, default=float
    )
    _print_summary(summary)
    return summary


class ResultsFile:
    """``analysis.h5`` worked on in memory and saved atomically, so no kill can tear it.

    On entry the file's stored image is loaded into an in-memory HDF5 file (a torn or unreadable
    one is reported and started again: its stages recompute). :meth:`save` writes the whole
    image to the path atomically (:func:`dina_jax.files.write_bytes`): after a stage, on
    :meth:`save_soon` calls at most every ``interval`` seconds (a resumable stage's progress),
    and on exit, also after an exception (the in-memory file is consistent between calls). A kill
    loses at most the work since the last save; the file on disk is always a complete one.
    """

    def __init__(self, path: str, interval: float = 30.0):
        self.path = path
        self.interval = interval
        self.h5: h5py.File | None = None
        self._last_save = 0.0

    def __enter__(self) -> ResultsFile:
        self.h5 = _load_image(self.path)
        self._last_save = time.monotonic()
        return self

    def save(self) -> None:
        """Writes the current results to the path (atomically)."""
        self.h5.flush()
        files.write_bytes(self.path, self.h5.id.get_file_image())
        self._last_save = time.monotonic()

    def save_soon(self) -> None:
        """:meth:`save` if the last save is ``interval`` seconds old (a resumable stage's step)."""
        if time.monotonic() - self._last_save >= self.interval:
            self.save()

    def __exit__(self, *exc_info) -> None:
        try:
            self.save()
        finally:
            self.h5.close()


def _read_header(_name: str, obj) -> None:
    """Reads an object's attributes and shape: raises if its header is damaged."""
    dict(obj.attrs)
    if isinstance(obj, h5py.Dataset):
        obj.shape  # noqa: B018


def _persist(store: ResultsFile, group: h5py.Group, stage: Stage) -> None:
    """A resumable stage's ``StageContext.persist``: documents its datasets, saves soon."""
    describe(group, stage)
    store.save_soon()


def _load_image(path: str) -> h5py.File:
    """An in-memory HDF5 file holding ``path``'s results; empty if missing, torn or unreadable."""
    if os.path.exists(path):
        try:
            with open(path, "rb") as f:
                h5 = h5py.File.in_memory(f.read())
            h5.visititems(_read_header)
            return h5
        except Exception as error:  # noqa: BLE001 - HDF5 reports a torn file in several ways
            reason = " ".join(str(error).split())[:160]
            warnings.warn(
                f"{path}: unreadable ({reason}); its stages are computed again", stacklevel=3
            )
    return h5py.File.in_memory()


# ------------------------------------------------------------------------- HDF5 bookkeeping


def _config_block(analysis, stage: Stage):
    if stage.config_block not in analysis:
        raise KeyError(
            f"analysis stage {stage.name!r} reads config.analysis.{stage.config_block}, which the "
            "config does not have (see dina_jax/config.py)"
        )
    return analysis[stage.config_block]


def _settings_key(stage: Stage, block, rows: np.ndarray, keys: dict[str, str]) -> str:
    """What the stored results of ``stage`` were computed from, as a string (a group attribute).

    The block's fields less the memory knobs, the stimuli, the keys of the stages it depends on
    (so new upstream results recompute it) and its version.
    """
    missing = [name for name in stage.depends_on if name not in keys]
    if missing:
        raise ValueError(
            f"analysis stage {stage.name!r} depends on {missing}, which did not run before it "
            "(order of stages.STAGES, or their applies())"
        )
    fields = {k: v for k, v in block.to_dict().items() if k not in stage.memory_fields}
    return json.dumps(
        dict(
            config=fields,
            rows=rows.tolist(),
            depends_on={name: keys[name] for name in stage.depends_on},
            version=stage.version,
        ),
        sort_keys=True,
        default=str,
    )


def _open_stage(h5: h5py.File, stage: Stage, key: str) -> tuple[h5py.Group, bool]:
    """Returns (group, done): the stored group if it was completed with these settings, else a
    fresh (emptied) group; a resumable stage's partial group with these settings is kept."""
    if stage.name in h5:
        group = h5[stage.name]
        if group.attrs.get("settings") == key:
            if group.attrs.get("complete", False):
                return group, True
            if stage.resumable:
                return group, False
        del h5[stage.name]
    group = h5.create_group(stage.name)
    group.attrs["settings"] = key
    group.attrs["complete"] = False
    return group, False


def _write(group: h5py.Group, arrays: dict, attrs: dict) -> None:
    """Stores a stage's results and marks its group complete."""
    for name, value in arrays.items():
        if name in group:
            del group[name]
        group.create_dataset(name, data=np.asarray(value))
    for name, value in attrs.items():
        group.attrs[name] = value
    group.attrs["complete"] = True
    group.file.flush()


def _scalars(group: h5py.Group) -> dict:
    return {
        k: (v.item() if hasattr(v, "item") else v)
        for k, v in group.attrs.items()
        if k not in ("settings", "complete", "description")
    }


def _index_dataset(h5, name: str, data, units: str, description: str) -> None:
    data = np.asarray(data)
    if name in h5 and (h5[name].shape != data.shape or not np.array_equal(h5[name][...], data)):
        del h5[name]
    if name not in h5:
        h5.create_dataset(name, data=data)
    h5[name].attrs["units"] = units
    h5[name].attrs["description"] = description


def _write_index(h5, dataset, rows: np.ndarray) -> None:
    """What the results refer to: the analysed stimuli and the neurons, traceable to the files."""
    recording = dataset.recording
    _index_dataset(
        h5,
        "rows",
        rows,
        "row index (0-based)",
        "rows of the run's dataset analysed: the first analysis.n_images test rows of split.json",
    )
    _index_dataset(
        h5,
        "image_index",
        np.asarray(recording.image_index)[rows],
        "image index (0-based)",
        f"row (0-based; MATLAB column + 1 of imgs) in the images file of each analysed stimulus; "
        f"recording {recording.name}",
    )
    _index_dataset(
        h5,
        "neuron_index",
        recording.neuron_index,
        "neuron index (0-based)",
        "column of stim.resp in the recording file of each neuron of the model (red cells "
        "dropped): the neuron axis of every per-neuron result",
    )
    _index_dataset(
        h5,
        "neuron_xyz",
        recording.neuron_xyz,
        "as stored in the recording's med",
        "cell centre (med) of each neuron of the model, in neuron_index order; 0 when the "
        "recording has no med",
    )


def _print_summary(summary: dict) -> None:
    for part, values in summary.items():
        if part == "figures":
            continue
        text = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in sorted(values.items())
        )
        print(f"[{part}] {text}", flush=True)
