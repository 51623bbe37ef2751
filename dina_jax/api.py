"""The library surface for notebooks: what ``import dina_jax`` exposes (see ``dina_jax.__all__``).

Two kinds of names live here:

* helpers written for interactive use: :func:`load_config` (a config by name, with overrides),
  :func:`load_trained` (a trained workdir as model, parameters, config and data),
  :func:`encode_images` / :func:`encode_neurons` (one tower on numpy arrays of any length), and
  :func:`image_feature_fn` / :func:`neural_feature_fn` / :func:`attention_qk_fn` (the callables
  the analysis functions take, built so that repeated analyses reuse one compiled program; these
  five live in ``dina_jax.models.feature_fns``, beside the models, and are imported here);
* :data:`REEXPORTS`: the library's own entry points (data loading, model building, training,
  evaluation and the vmapped analyses), re-exported unchanged except for a paper reference and a
  notebook example appended to their docstrings (``fn.__wrapped__`` is the library function).

A session from a trained run to an occlusion map::

    import dina_jax
    run = dina_jax.load_trained("workdirs/synthetic")    # model, params, config, dataset
    test = run.dataset.split.test
    images = run.dataset.images[test[:4]]                 # (4, 68, 270) float32
    z_img = dina_jax.encode_images(run.model, run.params, images)   # (4, 16, 64) float32
    feature_fn = dina_jax.image_feature_fn(run.model, run.params)
    rf = dina_jax.occlusion_map(feature_fn, images[0])              # (68, 270) in [0, 1]
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import pathlib
import textwrap
from collections.abc import Callable
from typing import Any, NamedTuple

import ml_collections

# Re-exported (the redundant aliases mark it): ``dina_jax.<name>`` of HELPERS resolves here.
from dina_jax.models.feature_fns import attention_qk_fn as attention_qk_fn
from dina_jax.models.feature_fns import encode_images as encode_images
from dina_jax.models.feature_fns import encode_neurons as encode_neurons
from dina_jax.models.feature_fns import image_feature_fn as image_feature_fn
from dina_jax.models.feature_fns import neural_feature_fn as neural_feature_fn

# configs/ sits beside the package in the repository (an editable install or a clone).
CONFIGS_DIR = pathlib.Path(__file__).resolve().parent.parent / "configs"


# ------------------------------------------------------------------------------------ configs


def available_configs() -> list[str]:
    """Names accepted by :func:`load_config`: ``"base"`` and every ``configs/<name>.py``."""
    found = sorted(p.stem for p in CONFIGS_DIR.glob("*.py")) if CONFIGS_DIR.is_dir() else []
    return ["base", *found]


def _config_file(name_or_path: str | os.PathLike) -> pathlib.Path:
    text = os.fspath(name_or_path)
    if text.endswith(".py") or os.sep in text or "/" in text:
        path = pathlib.Path(text).expanduser()
    else:
        path = CONFIGS_DIR / f"{text}.py"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such config file; load_config takes a path or one of "
            f"{', '.join(available_configs())}"
        )
    return path


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, Any]) -> None:
    """Sets dotted fields in place: ``{"train.num_epochs": 5, "data.dir": "/data"}``.

    Unlike ``ConfigDict.update_from_flattened_dict`` an unknown key is an error, so a typo never
    goes unnoticed; values are type-checked by the ConfigDict (an int into a float field is fine).
    """
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
                raise KeyError(f"config override {key!r}: no section {part!r}")
            node = node[part]
        if leaf not in node:
            raise KeyError(f"config override {key!r}: no field {leaf!r} (see dina_jax/config.py)")
        node[leaf] = tuple(value) if isinstance(value, list) else value


def load_config(
    name_or_path: str | os.PathLike = "synthetic", overrides: dict[str, Any] | None = None
) -> ml_collections.ConfigDict:
    """The ConfigDict of ``configs/<name>.py`` (or of any config file), with overrides applied.

    The same object the command line builds from ``--config FILE --config.a.b=value``.

    Args:
      name_or_path: a config name (``"synthetic"``, ``"m1"``, ``"tiny"``, ... see
        :func:`available_configs`; ``"base"`` is ``dina_jax.config.get_base_config()``, the
        paper's defaults) or the path of a file defining ``get_config()``.
      overrides: dotted field -> value, e.g. ``{"train.num_epochs": 5}``; lists become tuples.

    Returns:
      A fresh, unlocked ``ml_collections.ConfigDict``.

    Raises:
      FileNotFoundError: no such config; KeyError: an override names no field.

    Example::

        config = dina_jax.load_config("m1", {"data.dir": "/content/drive/MyDrive/stringer"})
        config.train.batch_size          # 128: the global batch over all devices
    """
    if os.fspath(name_or_path) == "base":
        from dina_jax.config import get_base_config

        config = get_base_config()
    else:
        import importlib.util

        path = _config_file(name_or_path)
        spec = importlib.util.spec_from_file_location(f"dina_jax_config_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        config = module.get_config()
    apply_overrides(config, overrides or {})
    return config


# ------------------------------------------------------------------------------ trained runs


class TrainedRun(NamedTuple):
    """A trained workdir, ready for analysis; unpacks as ``model, params, config, dataset``.

    Attributes:
      model: the ``DualTower`` module (``dina_jax.build_model``), normalization statistics set.
      params: the checkpoint's parameter tree (numpy float32 arrays).
      config: the run's ConfigDict (fields added since training take their defaults).
      dataset: the run's ``Dataset`` (images (S, 68, 270), responses (S, N) float32) with the
        split the run was trained with (``dataset.split.test`` are the held-out rows).
    """

    model: Any
    params: Any
    config: ml_collections.ConfigDict
    dataset: Any


def load_trained(
    workdir: str | os.PathLike,
    which: str = "best",
    *,
    config: ml_collections.ConfigDict | None = None,
) -> TrainedRun:
    """Restores a checkpoint of ``workdir`` with its model and data (paper Sec. 3.3 run).

    Uses ``train.restore`` for the parameters and the checkpoint's config (which fixes the
    architecture), the data statistics saved with it, and the run's ``split.json``.

    Args:
      workdir: a folder written by ``train_and_evaluate`` (``checkpoints/``, ``split.json``).
      which: ``"best"`` (lowest validation loss) or ``"latest"``.
      config: optional config whose ``data`` section replaces the checkpoint's, e.g. when the
        data folder moved (a Drive mount in another session); everything else comes from the run.

    Returns:
      A :class:`TrainedRun` ``(model, params, config, dataset)``.

    Raises:
      FileNotFoundError: no finalized checkpoint; DataError: the data do not match the run.

    Example::

        model, params, config, dataset = dina_jax.load_trained("workdirs/synthetic")
        test = dataset.split.test                                    # (S_test,) int64 rows
        z_neu = dina_jax.encode_neurons(model, params, dataset.responses[test])  # (S_test, 16, 64)
    """
    from dina_jax import train
    from dina_jax.analysis.run import with_defaults
    from dina_jax.data import pipeline
    from dina_jax.data.stringer import DataError
    from dina_jax.models import build_model

    workdir = os.fspath(workdir)
    params, run_config, stats = train.restore(workdir, which)
    run_config = with_defaults(run_config)
    if config is not None:
        run_config.data = ml_collections.ConfigDict(config.data.to_dict())
    dataset = pipeline.load_dataset(run_config, workdir=workdir)
    if dataset.n_neurons != int(stats["n_neurons"]):
        raise DataError(
            f"{workdir}: the checkpoint has {stats['n_neurons']} neurons but the data "
            f"({dataset.name}) have {dataset.n_neurons}; was it trained on other data?"
        )
    split_path = os.path.join(workdir, "split.json")
    if os.path.exists(split_path):
        dataset = dataclasses.replace(dataset, split=pipeline.load_split(split_path))
    model = build_model(
        run_config,
        int(stats["n_neurons"]),
        image_mean=float(stats["image_mean"]),
        image_std=float(stats["image_std"]),
    )
    return TrainedRun(model, params, run_config, dataset)


# ------------------------------------------------------------------------------ re-exports


class Reexport(NamedTuple):
    """A library entry point exposed as ``dina_jax.<name>``: where it lives and its notes."""

    module: str
    attribute: str
    paper: str  # The paper section / equation it implements.
    example: str  # Notebook usage; names as in the examples above (model, params, dataset, ...).


REEXPORTS: dict[str, Reexport] = {
    # ---- data
    "DataError": Reexport("dina_jax.data.stringer", "DataError", "", ""),
    "load_images": Reexport(
        "dina_jax.data.stringer",
        "load_images",
        "Sec. 4.1: the 68 x 270 grayscale stimuli of Stringer et al. (2019).",
        'images = dina_jax.load_images("/data/images_natimg2800_all.mat")  # (2800, 68, 270)',
    ),
    "load_recording": Reexport(
        "dina_jax.data.stringer",
        "load_recording",
        "Sec. 4.1: the S x N stimulus-averaged responses, preprocessed as the authors'"
        " loadProc2800 (Stringer et al. 2019).",
        'rec = dina_jax.load_recording("/data/natimg2800_M160825_MP027_2016-12-14.mat")\n'
        "rec.responses.shape, rec.halves.shape   # (S, N), (2, S, N) float32\n"
        "rec.image_index                         # (S,) int64 rows of the images file",
    ),
    "load_dataset": Reexport(
        "dina_jax.data.pipeline",
        "load_dataset",
        "Sec. 4.1 data and Sec. 3.3 split (10 % test images, a validation split for early"
        " stopping).",
        'dataset = dina_jax.load_dataset(dina_jax.load_config("synthetic"))\n'
        "dataset.images.shape, dataset.responses.shape   # (S, 68, 270), (S, N) float32\n"
        "dataset.split.test                              # held-out rows, (S_test,) int64",
    ),
    # ---- model
    "build_model": Reexport(
        "dina_jax.models",
        "build_model",
        "Sec. 3.1-3.2, Fig. 2: image tower (Eq. 1-3) and neural tower (Eq. 4-9).",
        "model = dina_jax.build_model(config, dataset.n_neurons,\n"
        "                             image_mean=dataset.image_mean, image_std=dataset.image_std)\n"
        "params = dina_jax.init_params(model, jax.random.key(config.seed))\n"
        "z_img, z_neu, aux = model.apply({'params': params}, images, responses)"
        "  # (B, 16, 64) each",
    ),
    "init_params": Reexport(
        "dina_jax.models",
        "init_params",
        "Sec. 3 (random initialization; optional local pretrained image-encoder weights).",
        "params = dina_jax.init_params(model, jax.random.key(0))\n"
        "sorted(params)                    # ['image_tower', 'neural_tower']",
    ),
    # ---- training, evaluation, the analysis driver
    "train_and_evaluate": Reexport(
        "dina_jax.train",
        "train_and_evaluate",
        "Sec. 3.3: symmetric InfoNCE (T = 0.01) over the global batch, AdamW (image tower) +"
        " RMSprop (neural tower), early stopping on the validation loss.",
        'config = dina_jax.load_config("synthetic", {"train.num_epochs": 5})\n'
        'result = dina_jax.train_and_evaluate(config, "workdirs/synthetic")\n'
        'result["best_val_loss"], result["eval"]["retrieval"]["top1"]',
    ),
    "restore": Reexport(
        "dina_jax.train",
        "restore",
        "Sec. 3.3 (the best checkpoint by validation loss).",
        'params, config, stats = dina_jax.restore("workdirs/synthetic")\n'
        "# dina_jax.load_trained(workdir) also rebuilds the model and loads the data.",
    ),
    "analyze": Reexport(
        "dina_jax.analysis.run",
        "analyze",
        "Sec. 4.4-4.5, Fig. 5a-h and Fig. 6a-b (App. A).",
        'summary = dina_jax.analyze(config, "workdirs/synthetic")  # writes analysis.h5\n'
        'summary["blobs"]["sti_mean"], summary["figures"]',
    ),
    "run": Reexport(
        "dina_jax.main",
        "run",
        "The whole pipeline of the command line (Sec. 3.3-4.5).",
        'dina_jax.run(config, "workdirs/synthetic", mode="all")  # data, train, evaluate, analyze',
    ),
    # ---- metrics
    "infonce": Reexport(
        "dina_jax.losses",
        "infonce",
        "Sec. 3.3: CLIP-style symmetric InfoNCE with a fixed temperature.",
        "loss, metrics = dina_jax.infonce(z_img, z_neu, temperature=0.01)  # z: (B, 16, 64)",
    ),
    "retrieval_metrics": Reexport(
        "dina_jax.evaluation.retrieval",
        "retrieval_metrics",
        "Sec. 4.2, Table 1: top-k of neural queries among the test images.",
        "z_img = dina_jax.encode_images(model, params, dataset.images[test])\n"
        "z_neu = dina_jax.encode_neurons(model, params, dataset.responses[test])\n"
        'dina_jax.retrieval_metrics(z_neu, z_img)["top1"]        # fraction in [0, 1]',
    ),
    "cosine_similarity_matrix": Reexport(
        "dina_jax.evaluation.retrieval",
        "cosine_similarity_matrix",
        "Fig. A.1: image (rows) vs neural (columns) cosine similarity.",
        "similarity = dina_jax.cosine_similarity_matrix(z_img, z_neu)   # (S, S)",
    ),
    "ssim": Reexport(
        "dina_jax.analysis.ssim",
        "ssim",
        "Sec. 4.3 and App. A.1 Eq. 13 (Wang et al. 2004, as scikit-image).",
        "value = dina_jax.ssim(z_img[0], z_neu[0], win_size=7)            # scalar\n"
        "per_pair = jax.vmap(dina_jax.ssim)(z_img, z_neu)                # (S,)",
    ),
    "variance_spectrum": Reexport(
        "dina_jax.analysis.spectra",
        "variance_spectrum",
        "Fig. 4b: PCA variance spectra and power-law exponents.",
        "var, alpha = dina_jax.variance_spectrum(z_img)   # (min(S - 1, 1024),), float",
    ),
    # ---- analyses
    "pathway_ssim": Reexport(
        "dina_jax.analysis.pathways",
        "pathway_ssim",
        "Sec. 4.4, Fig. 5a: local vs global pathway masking.",
        "scores = dina_jax.pathway_ssim(model, params, dataset.images[test])\n"
        'scores["local"].mean(), scores["global"].mean()   # (S_test,) each',
    ),
    "occlusion_map": Reexport(
        "dina_jax.analysis.occlusion",
        "occlusion_map",
        "App. A.1, Eq. 10-15, Fig. 5b-c: Gaussian-occlusion importance map.",
        "feature_fn = dina_jax.image_feature_fn(model, params)\n"
        "rf = dina_jax.occlusion_map(feature_fn, dataset.images[test[0]])  # (68, 270) in [0, 1]",
    ),
    "occlusion_maps": Reexport(
        "dina_jax.analysis.occlusion",
        "occlusion_maps",
        "App. A.1, Eq. 10-15, Fig. 5c: occlusion maps of many stimuli in one computation.",
        "feature_fn = dina_jax.image_feature_fn(model, params)\n"
        "rfs = dina_jax.occlusion_maps(feature_fn, dataset.images[test[:4]])  # (4, 68, 270)",
    ),
    "extract_blobs": Reexport(
        "dina_jax.analysis.blobs",
        "extract_blobs",
        "App. A.2-A.3, Eq. 16-21, Fig. 5d-h: blobs, shape descriptors, STI = R - Tex(T).",
        "blobs = dina_jax.extract_blobs(rf, dataset.images[test[0]])   # list of Blob\n"
        "[(b.area, b.sti) for b in blobs]",
    ),
    "blob_table": Reexport(
        "dina_jax.analysis.blobs",
        "blob_table",
        "Fig. 5e-h: blob counts, sizes and the STI histogram.",
        "table = dina_jax.blob_table([dina_jax.extract_blobs(r, im) for r, im in zip(rfs, ims)])\n"
        'table["count"], table["sti"]     # (n_images,), (n_blobs,)',
    ),
    "neuron_ablation": Reexport(
        "dina_jax.analysis.ablation",
        "neuron_ablation",
        "Sec. 4.5, Fig. 6a: response-ranked vs random neuron subsets, SSIM to the full map.",
        "result = dina_jax.neuron_ablation(dina_jax.neural_feature_fn(model, params),\n"
        "                                  dataset.responses[test], fractions=(0.1, 0.5, 1.0),\n"
        "                                  key=jax.random.key(0))\n"
        'result["ranked_curve"], result["random_curve"]   # (3,), (10, 3)',
    ),
    "masked_map_ssim": Reexport(
        "dina_jax.analysis.ablation",
        "masked_map_ssim",
        "Sec. 4.5: SSIM of subset-population maps to the full map, vmapped over masks.",
        "masks = np.stack([np.arange(N) < k for k in (10, 100, N)])       # (3, N) bool\n"
        "dina_jax.masked_map_ssim(dina_jax.neural_feature_fn(model, params), responses, masks)"
        "  # (3, B)",
    ),
    "attention_bin_edges": Reexport(
        "dina_jax.analysis.attention_stats",
        "attention_bin_edges",
        "Fig. 6b: log-spaced bins of the attention probabilities of Eq. 7.",
        "edges = dina_jax.attention_bin_edges(dataset.n_neurons, 200)   # (201,) float64",
    ),
    "attention_histogram_stream": Reexport(
        "dina_jax.analysis.attention_stats",
        "attention_histogram_stream",
        "Sec. 4.5, Fig. 6b: distribution of the softmax(QK^T / sqrt(d)) scores of Eq. 7.",
        "qk_fn = dina_jax.attention_qk_fn(model, params)\n"
        "counts, moments = dina_jax.attention_histogram_stream(qk_fn, responses, edges)",
    ),
    "attention_summary": Reexport(
        "dina_jax.analysis.attention_stats",
        "attention_summary",
        "Sec. 4.5, Fig. 6b: log-normal fit of the attention scores.",
        "fit = dina_jax.attention_summary(counts, moments, edges)\n"
        'fit["mu"], fit["sigma"], fit["ks"]',
    ),
}


def with_notes(fn: Callable, paper: str, example: str) -> Callable:
    """``fn`` with the paper reference and the example appended to its docstring.

    The returned function calls ``fn`` unchanged; ``inspect.signature`` and ``__wrapped__``
    show the original.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)

    notes = [inspect.cleandoc(fn.__doc__ or "")]
    if paper:
        notes.append(f"Paper: {paper}")
    if example:
        notes.append("Example::\n\n" + textwrap.indent(example, "    "))
    wrapper.__doc__ = "\n\n".join(notes) + "\n"
    return wrapper


def resolve(name: str):
    """The object ``dina_jax.<name>`` stands for (importing only the module it lives in)."""
    import importlib

    entry = REEXPORTS[name]
    target = getattr(importlib.import_module(entry.module), entry.attribute)
    if inspect.isclass(target) or not callable(target) or not (entry.paper or entry.example):
        return target
    return with_notes(target, entry.paper, entry.example)


HELPERS = (
    "attention_qk_fn",
    "available_configs",
    "encode_images",
    "encode_neurons",
    "image_feature_fn",
    "load_config",
    "load_trained",
    "neural_feature_fn",
    "TrainedRun",
)
