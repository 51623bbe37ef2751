"""Checkpoints of a training run, and the one way to load a trained run (:func:`load_run`).

A workdir holds two orbax checkpoint folders, each keeping its newest finalized step::

    checkpoints/latest/<step>/{params,train,meta}   the resume point (saved during and after epochs)
    checkpoints/best/<step>/{params,train,meta}     the lowest validation loss so far

Items of a step:

* ``params``: the parameters to evaluate (the EMA when ``train.ema_decay`` > 0), the model tree;
* ``train``: what only resuming needs: ``step``, ``rng``, ``opt_state`` and, with an EMA, the
  optimizer's own ``train_params``;
* ``meta`` (JSON): ``format`` (:data:`FORMAT`), the run's ``config``, the data ``stats``
  (training-split pixel mean/std, ``n_neurons``), the ``split`` (train/val/test rows) and the
  loop's ``progress``.

Training's resume, evaluation, the analyses, the public API and ``experiments/`` all load a run
through this module: :func:`load_run` rebuilds the model from the recorded config and statistics,
loads the data and checks them against the checkpoint (neuron count, split).

Format history: format 1 (dina_jax 0.1.0) had no ``format`` key, a flat ``model.baseline``
config block, ``model.image.input_hw``/``resize_hw`` and the population attention's W_Q/W_K/W_V
at the top of the neural tower. Such checkpoints are upgraded when read for evaluation and
analysis; training refuses to resume them (the optimizer state has the old tree).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import os
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from dina_jax import files
from dina_jax.config import config_from_json, with_defaults
from dina_jax.data import DataError, pipeline

CHECKPOINT_KINDS = ("latest", "best")
FORMAT = 2  # Written into every checkpoint's metadata; see the module docstring.
# Sections of a run's config that say how to evaluate and where the data are, not what was
# trained: load_run takes them from the caller's config when one is given.
CALLER_SECTIONS = ("data", "eval", "figures", "analysis")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read (damaged, incomplete) or used; the message is one line."""


class FormatError(CheckpointError):
    """A checkpoint this version of dina_jax cannot resume from."""


# ------------------------------------------------------------------------------ save / restore


def manager(workdir: str | os.PathLike, which: str, *, create: bool) -> ocp.CheckpointManager:
    """The orbax manager of ``checkpoints/<which>`` (``which``: "latest" or "best")."""
    if which not in CHECKPOINT_KINDS:
        raise ValueError(f"checkpoint kind must be one of {CHECKPOINT_KINDS}, got {which!r}")
    # Synchronous saves; orbax writes each step into a temporary folder and renames it only once
    # complete, so a kill during a save leaves the previous finalized step as the restore point.
    options = ocp.CheckpointManagerOptions(
        max_to_keep=1, create=create, enable_async_checkpointing=False
    )
    return ocp.CheckpointManager(
        os.path.join(os.path.abspath(os.fspath(workdir)), "checkpoints", which),
        options=options,
        item_names=("params", "train", "meta"),
    )


def save(checkpoints: ocp.CheckpointManager, arrays: dict, meta: dict) -> None:
    """Saves one step: ``arrays["params"]`` as the params item, the other arrays as ``train``.

    ``arrays`` are host (numpy) arrays and hold ``step``; ``meta`` is JSON-serializable and gets
    the format version.
    """
    train_item = {k: v for k, v in arrays.items() if k != "params"}
    checkpoints.save(
        int(arrays["step"]),
        args=ocp.args.Composite(
            params=ocp.args.StandardSave(arrays["params"]),
            train=ocp.args.StandardSave(train_item),
            meta=ocp.args.JsonSave({**meta, "format": FORMAT}),
        ),
        force=True,
    )
    checkpoints.wait_until_finished()


def _damaged(checkpoints: ocp.CheckpointManager, step, error: BaseException) -> CheckpointError:
    reason = " ".join(str(error).split())[:200] or type(error).__name__
    return CheckpointError(
        f"{checkpoints.directory}/{step}: damaged or incomplete checkpoint ({reason}); "
        "retrain, or restore the folder from a copy"
    )


def read_meta(checkpoints: ocp.CheckpointManager) -> dict:
    """The metadata of the newest finalized step, as written (not upgraded).

    Raises:
      CheckpointError: the step has no readable metadata.
    """
    step = checkpoints.latest_step()
    try:
        restored = checkpoints.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        meta = restored["meta"]
    except Exception as error:  # noqa: BLE001 - orbax and tensorstore raise many types
        raise _damaged(checkpoints, step, error) from None
    if not isinstance(meta, dict) or not {"config", "stats", "split"} <= set(meta):
        raise _damaged(checkpoints, step, ValueError("no metadata"))
    return meta


def _resumable_meta(checkpoints) -> dict:
    """The metadata of the newest step, if training can resume from its format; else raises
    :class:`FormatError`."""
    meta = read_meta(checkpoints)
    found = meta.get("format", 1)
    if found != FORMAT:
        raise FormatError(
            f"{checkpoints.directory}: checkpoint format {found}, this dina_jax resumes format "
            f"{FORMAT} only; evaluate and analyse it, or train in a new workdir"
        )
    return meta


def restore_arrays(checkpoints: ocp.CheckpointManager, template: dict) -> tuple[dict, dict]:
    """Restores the newest step into the structure of ``template`` (for resuming training).

    Args:
      checkpoints: the manager of ``latest`` (or ``best``).
      template: arrays with the structure :func:`save` was given (``params`` plus the train
        items); only shapes and dtypes are used.

    Returns:
      ``(arrays, meta)``.

    Raises:
      FormatError: the checkpoint was written in another format.
    """
    meta = _resumable_meta(checkpoints)
    abstract = functools.partial(jax.tree.map, ocp.utils.to_shape_dtype_struct)
    step = checkpoints.latest_step()
    try:
        restored = checkpoints.restore(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardRestore(abstract(template["params"])),
                train=ocp.args.StandardRestore(
                    abstract({k: v for k, v in template.items() if k != "params"})
                ),
            ),
        )
    except Exception as error:  # noqa: BLE001 - a changed tree or shape, or a damaged step
        raise _damaged(checkpoints, step, error) from None
    return {"params": restored["params"], **restored["train"]}, meta


# Fields a resumed run may change: where things are, how long to train, how to log and
# evaluate. Any other difference would continue a run with another model, optimizer or data.
RESUME_MAY_CHANGE = (
    "compilation_cache",
    # How the same function is computed (attention kernels, micro-batches, rematerialization):
    # a run may resume on another machine or backend with other choices.
    "model.image.attention",
    "model.image.block_size",
    "model.image.micro_batch",
    "model.image.remat",
    "model.neural.attention",
    "model.neural.block_size",
    "data.dir",
    "data.cache_dir",
    "train.num_epochs",
    "train.patience",
    "train.log_every",
    "train.checkpoint_every_steps",
    "train.checkpoint_every_minutes",
    "train.distributed",
    "train.evaluate_at_end",
    "eval",
    "figures",
    "analysis",
)


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, name + "."))
        else:
            out[name] = value
    return out


def config_differences(saved: dict, current: dict) -> list[str]:
    """``"key=saved, this config has key=new"`` for each field that forbids resuming.

    ``saved`` and ``current`` are configs as :func:`config_json` gives them; fields added to the
    config since ``saved`` was written count with their defaults.
    """
    before = _flat(config_json(with_defaults(config_from_json(saved))))
    after = _flat(current)
    free = tuple(RESUME_MAY_CHANGE)
    return [
        f"{key}={before.get(key)!r}, this config has {key}={after.get(key)!r}"
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
        and not any(key == f or key.startswith(f + ".") for f in free)
    ]


def check_resumable(workdir: str | os.PathLike, static_meta: dict) -> dict | None:
    """The ``latest`` checkpoint's metadata if training can resume from it, else raises.

    Read-only and cheap (no model is built): a refused run stops before writing anything.
    ``None`` when there is no finalized ``latest`` step (a fresh start).

    Args:
      workdir: the run's folder.
      static_meta: this run's ``config`` (JSON), ``stats`` and ``split``.

    Raises:
      FormatError: another checkpoint format. CheckpointError: unreadable metadata, or trained
        with another config (architecture, optimizer, EMA, seed, data options), other data or
        another split.
    """
    folder = os.path.join(os.path.abspath(os.fspath(workdir)), "checkpoints", "latest")
    if not os.path.isdir(folder):
        return None
    checkpoints = manager(workdir, "latest", create=False)
    if checkpoints.latest_step() is None:
        return None
    meta = _resumable_meta(checkpoints)
    hint = "resume with the run's own config.json, or train in a new --workdir"
    differences = config_differences(meta["config"], static_meta["config"])
    if differences:
        more = f" (and {len(differences) - 1} more)" if len(differences) > 1 else ""
        raise CheckpointError(
            f"{checkpoints.directory}: its checkpoint was trained with {differences[0]}{more}; "
            f"{hint}"
        )
    if int(meta["stats"]["n_neurons"]) != int(static_meta["stats"]["n_neurons"]):
        raise CheckpointError(
            f"{checkpoints.directory}: its checkpoint has {meta['stats']['n_neurons']} neurons, "
            f"the data have {static_meta['stats']['n_neurons']}; {hint}"
        )
    if meta["split"] != static_meta["split"]:
        raise CheckpointError(
            f"{checkpoints.directory}: its checkpoint was trained on another train/val/test "
            f"split (different data or seed); {hint}"
        )
    return meta


def _restore_params(workdir: str, which: str) -> tuple[Any, dict]:
    """The evaluated parameters (numpy) and the upgraded metadata of ``checkpoints/<which>``."""
    checkpoints = manager(workdir, which, create=False)
    step = checkpoints.latest_step()
    if step is None:
        raise FileNotFoundError(
            2, "no finalized checkpoint", os.path.join(workdir, "checkpoints", which)
        )
    try:
        restored = checkpoints.restore(
            step,
            args=ocp.args.Composite(params=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()),
        )
        meta = restored["meta"]
    except Exception as error:  # noqa: BLE001 - orbax and tensorstore raise many types
        raise _damaged(checkpoints, step, error) from None
    if not isinstance(meta, dict) or not {"config", "stats", "split"} <= set(meta):
        raise _damaged(checkpoints, step, ValueError("no metadata"))
    params = jax.tree.map(np.asarray, restored["params"])
    if meta.get("format", 1) == 1:
        meta, params = upgrade_format_1(meta, params)
    return params, meta


def restore(workdir: str | os.PathLike, which: str = "best"):
    """Loads a checkpoint of ``workdir`` without the data: ``(params, config, stats)``.

    ``params`` are numpy arrays in the model's tree, ``config`` the run's ConfigDict (fields
    added since the run take their defaults) and ``stats`` holds ``image_mean``, ``image_std``
    (training-split pixel statistics) and ``n_neurons``: everything ``build_model`` needs.
    :func:`load_run` also rebuilds the model and loads the data. Paper: Sec. 3.3 (the best
    checkpoint by validation loss).

    Raises:
      FileNotFoundError: ``checkpoints/<which>`` holds no finalized step.

    Example::

        params, config, stats = dina_jax.restore("workdirs/synthetic")
        model = dina_jax.build_model(config, stats["n_neurons"], image_mean=stats["image_mean"],
                                     image_std=stats["image_std"])
    """
    params, meta = _restore_params(os.fspath(workdir), which)
    return params, with_defaults(config_from_json(meta["config"])), dict(meta["stats"])


def run_config(workdir: str | os.PathLike, which: str = "best") -> ml_collections.ConfigDict:
    """The config a run was trained with (from its checkpoint), fields added since at defaults."""
    return restore(workdir, which)[1]


# ------------------------------------------------------------------------------ a trained run


class TrainedRun(NamedTuple):
    """A trained workdir, ready for analysis; unpacks as ``model, params, config, dataset``.

    Attributes:
      model: the ``DualTower`` module (``dina_jax.build_model``), normalization statistics set.
      params: the checkpoint's parameter tree (numpy float32 arrays).
      config: the run's ConfigDict (fields added since training take their defaults; ``data``,
        ``eval`` and ``analysis`` from the caller's config when one was given).
      dataset: the run's ``Dataset`` (images (S, 68, 270), responses (S, N) float32) with the
        split the run was trained with (``dataset.split.test`` are the held-out rows).
    """

    model: Any
    params: Any
    config: ml_collections.ConfigDict
    dataset: Any


def load_run(
    workdir: str | os.PathLike,
    which: str = "best",
    *,
    config: ml_collections.ConfigDict | None = None,
) -> TrainedRun:
    """Restores a checkpoint of ``workdir`` with its model and data (a Sec. 3.3 training run).

    The architecture and the data statistics come from the checkpoint; the split is the one
    recorded in the checkpoint (``split.json`` must agree with it).

    Args:
      workdir: a folder written by ``train_and_evaluate`` (``checkpoints/``, ``split.json``).
      which: ``"best"`` (lowest validation loss) or ``"latest"``.
      config: optional config whose ``data``, ``eval``, ``figures`` and ``analysis`` sections
        replace the run's, e.g. when the data folder moved (a Drive mount in another session) or
        to analyse with other settings; everything else comes from the run.

    Returns:
      A :class:`TrainedRun` ``(model, params, config, dataset)``.

    Raises:
      FileNotFoundError: no finalized checkpoint. DataError: the data do not match the run
        (neuron count, split rows), or ``split.json`` disagrees with the checkpoint.

    Example::

        model, params, config, dataset = dina_jax.load_run("workdirs/synthetic")
        test = dataset.split.test                                    # (S_test,) int64 rows
        z_neu = dina_jax.encode_neurons(model, params, dataset.responses[test])  # (S_test, 16, 64)
    """
    from dina_jax.models import build_model  # The models import nothing from here.

    workdir = os.path.abspath(os.fspath(workdir))
    params, meta = _restore_params(workdir, which)
    run_config = with_defaults(config_from_json(meta["config"]))
    if config is not None:
        for section in CALLER_SECTIONS:
            run_config[section] = ml_collections.ConfigDict(config[section].to_dict())
    stats = meta["stats"]
    dataset = pipeline.load_dataset(run_config, workdir=workdir)
    if dataset.n_neurons != int(stats["n_neurons"]):
        raise DataError(
            f"{workdir}: the checkpoint has {stats['n_neurons']} neurons but the data "
            f"({dataset.name}) have {dataset.n_neurons}; was it trained on other data?"
        )
    split = recorded_split(workdir, meta)
    if max(split.train.max(initial=-1), split.val.max(initial=-1), split.test.max(initial=-1)) >= (
        dataset.n_images
    ):
        raise DataError(
            f"{workdir}: the run's split has rows beyond the {dataset.n_images} rows of "
            f"{dataset.name}; was it trained on other data?"
        )
    model = build_model(
        run_config,
        int(stats["n_neurons"]),
        image_mean=float(stats["image_mean"]),
        image_std=float(stats["image_std"]),
    )
    # The dataset carries the statistics the model normalizes with (those of the checkpoint).
    dataset = dataclasses.replace(
        dataset,
        split=split,
        image_mean=float(stats["image_mean"]),
        image_std=float(stats["image_std"]),
    )
    return TrainedRun(model, params, run_config, dataset)


def recorded_split(workdir: str, meta: dict) -> pipeline.Split:
    """The split stored in a checkpoint's metadata, checked against ``workdir/split.json``."""
    split = pipeline.Split(**{k: np.asarray(meta["split"][k], np.int64) for k in pipeline.SPLITS})
    path = os.path.join(workdir, "split.json")
    if os.path.exists(path):
        on_disk = pipeline.load_split(path)
        if any(not np.array_equal(getattr(on_disk, k), getattr(split, k)) for k in pipeline.SPLITS):
            raise DataError(
                f"{path}: differs from the split recorded in the checkpoint; the workdir was "
                "changed after training (restore split.json or use a new workdir)"
            )
    return split


# ------------------------------------------------------------------------------ format upgrades


def upgrade_format_1(meta: dict, params) -> tuple[dict, Any]:
    """Format 1 metadata and parameters in today's layout (see the module docstring)."""
    meta = copy.deepcopy(meta)
    config = meta["config"]
    model = config.get("model", {})
    image, neural = model.get("image", {}), model.get("neural", {})
    block_size = neural.get("block_size", 512)
    for key in ("input_hw", "resize_hw"):
        if key in image:
            model[key] = image.pop(key)
    image.setdefault("block_size", block_size)  # Format 1 used the neural block size everywhere.
    baseline = model.pop("baseline", None)
    if baseline is not None:
        model["readout"] = {"mlp_hidden": baseline["mlp_hidden"]}
        model["vgg16"] = {
            "widths": baseline["vgg_widths"],
            "depths": baseline["vgg_depths"],
            "pooled_blocks": baseline["vgg_pooled_blocks"],
            "head_hidden": baseline["head_hidden"],
        }
        model["vit"] = {
            "patch": baseline["vit_patch"],
            "dim": baseline["vit_dim"],
            "depth": baseline["vit_depth"],
            "num_heads": baseline["vit_heads"],
            "mlp_ratio": baseline["vit_mlp_ratio"],
            "head_hidden": baseline["head_hidden"],
            "attention": baseline["vit_attention"],
            "block_size": block_size,
        }
    meta["format"] = FORMAT
    neural_params = params.get("neural_tower", {})
    if "query" in neural_params:
        moved = {name: neural_params[name] for name in ("query", "key", "value")}
        rest = {k: v for k, v in neural_params.items() if k not in moved}
        params = {**params, "neural_tower": {**rest, "population_attention": moved}}
    return meta, params


def write_config(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> str:
    """Writes the resolved config to ``workdir/config.json`` atomically; returns the path."""
    path = os.path.join(os.fspath(workdir), "config.json")
    with files.atomic_write(path) as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True))
        f.write("\n")
    return path


def config_json(config: ml_collections.ConfigDict) -> dict:
    """A config as the JSON object stored in ``config.json`` and in every checkpoint."""
    return json.loads(config.to_json_best_effort(sort_keys=True))


# The name the notebooks and the README have used since 0.1.0.
load_trained = load_run
