"""DINA: Dual-Tower Image-Neural Alignment in JAX/Flax (Wang et al. 2026, arXiv:2605.04309).

``import dina_jax`` is cheap: each name below is imported on first use from the module that
implements it, and ``dina_jax.<name>`` *is* that object (``help(dina_jax.<name>)`` shows its
shapes, the paper equation and an example).

Configs and data
  load_config, available_configs      a ``configs/<name>.py`` ConfigDict, with overrides
  load_images, load_recording         the Stringer et al. (2019) ``.mat`` files (v5 or v7.3)
  load_class_assignment               the release's semantic class of each image
  load_dataset, DataError             images + responses + split for a config (or simulated V1)
Model
  build_model, init_params            the dual tower (or a Table 1 baseline) from a config
  encode_images, encode_neurons       (S, 68, 270) images / (S, N) responses -> (S, 16, 64) maps
Runs (the command line's steps)
  train_and_evaluate, evaluate,       training + evaluation, evaluation alone,
  analyze, run                        the Fig. 5-6 analyses, any CLI mode
  load_run (= load_trained),          a trained workdir as (model, params, config, dataset);
  TrainedRun, restore                 its parameters, config and data statistics alone
Metrics
  infonce, retrieval_metrics, cosine_similarity_matrix, ssim, variance_spectrum,
  class_retrieval (same-class retrievals against chance)
Analyses (jit/vmap-compiled; the *_fn helpers build the callables they take)
  image_feature_fn, occlusion_map, occlusion_maps, extract_blobs, blob_table, pathway_ssim,
  neural_feature_fn, neuron_ablation, masked_map_ssim,
  attention_qk_fn, attention_bin_edges, attention_histogram_stream, attention_summary

Example::

    import dina_jax
    config = dina_jax.load_config("synthetic", {"train.num_epochs": 5})
    dina_jax.train_and_evaluate(config, "workdirs/synthetic")
    model, params, config, dataset = dina_jax.load_run("workdirs/synthetic")
    images = dataset.images[dataset.split.test[:4]]                  # (4, 68, 270)
    z_img = dina_jax.encode_images(model, params, images)            # (4, 16, 64)
    rf = dina_jax.occlusion_map(dina_jax.image_feature_fn(model, params), images[0])
"""

__version__ = "0.1.0"

# Public name -> the module that defines it. This is the whole public surface: each entry is
# the library's own object, imported on first access.
_EXPORTS = {
    # configs and data
    "available_configs": "dina_jax.config",
    "load_config": "dina_jax.config",
    "DataError": "dina_jax.data.matfile",
    "load_images": "dina_jax.data.stimuli",
    "load_recording": "dina_jax.data.stringer",
    "load_class_assignment": "dina_jax.data.stimuli",
    "load_dataset": "dina_jax.data.pipeline",
    # model
    "build_model": "dina_jax.models",
    "init_params": "dina_jax.models",
    "encode_images": "dina_jax.models.feature_fns",
    "encode_neurons": "dina_jax.models.feature_fns",
    "image_feature_fn": "dina_jax.models.feature_fns",
    "neural_feature_fn": "dina_jax.models.feature_fns",
    "attention_qk_fn": "dina_jax.models.feature_fns",
    # runs
    "train_and_evaluate": "dina_jax.training",
    "evaluate": "dina_jax.evaluation",
    "analyze": "dina_jax.analysis.run",
    "run": "dina_jax.main",
    "TrainedRun": "dina_jax.checkpoint",
    "load_run": "dina_jax.checkpoint",
    "load_trained": "dina_jax.checkpoint",
    "restore": "dina_jax.checkpoint",
    # metrics
    "infonce": "dina_jax.losses",
    "retrieval_metrics": "dina_jax.evaluation",
    "cosine_similarity_matrix": "dina_jax.evaluation",
    "class_retrieval": "dina_jax.evaluation.semantic",
    "ssim": "dina_jax.analysis.ssim",
    "variance_spectrum": "dina_jax.analysis.spectra",
    # analyses
    "pathway_ssim": "dina_jax.analysis.pathways",
    "occlusion_map": "dina_jax.analysis.occlusion",
    "occlusion_maps": "dina_jax.analysis.occlusion",
    "extract_blobs": "dina_jax.analysis.blobs",
    "blob_table": "dina_jax.analysis.blobs",
    "neuron_ablation": "dina_jax.analysis.ablation",
    "masked_map_ssim": "dina_jax.analysis.ablation",
    "attention_bin_edges": "dina_jax.analysis.attention_stats",
    "attention_histogram_stream": "dina_jax.analysis.attention_stats",
    "attention_summary": "dina_jax.analysis.attention_stats",
}

__all__ = sorted(_EXPORTS)

# Subpackages and modules reachable as attributes (``dina_jax.training.loop``); no public
# name above may equal one of them.
SUBMODULES = (
    "analysis",
    "checkpoint",
    "cli",
    "config",
    "configs",
    "data",
    "evaluation",
    "files",
    "losses",
    "main",
    "models",
    "plots",
    "progress",
    "tensorboard_writer",
    "training",
)


def __getattr__(name: str):
    # PEP 562: resolve lazily, so that `import dina_jax` imports neither JAX nor the models.
    import importlib

    if name in SUBMODULES:
        return importlib.import_module(f"dina_jax.{name}")
    if name not in _EXPORTS:
        raise AttributeError(f"module 'dina_jax' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # Later lookups bypass this hook.
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(SUBMODULES))
