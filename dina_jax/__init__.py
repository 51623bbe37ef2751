"""DINA: Dual-Tower Image-Neural Alignment in JAX/Flax (Wang et al. 2026, arXiv:2605.04309).

``import dina_jax`` is cheap: each name below is imported on first use, from the module that
implements it (``help(dina_jax.<name>)`` shows its shapes, the paper equation and an example;
``dina_jax.api`` explains the helpers).

Configs and data
  load_config, available_configs      a ``configs/<name>.py`` ConfigDict, with overrides
  load_images, load_recording         the Stringer et al. (2019) ``.mat`` files (v5 or v7.3)
  load_dataset, DataError             images + responses + split for a config (or simulated V1)
Model
  build_model, init_params            the dual tower (or a Table 1 baseline) from a config
  encode_images, encode_neurons       (S, 68, 270) images / (S, N) responses -> (S, 16, 64) maps
Runs (the command line's steps; ``dina_jax.evaluation.evaluate(config, workdir)`` evaluates alone)
  train_and_evaluate, analyze, run    train + evaluate, the Fig. 5-6 analyses, any CLI mode
  restore, load_trained, TrainedRun   a trained workdir as (model, params, config, dataset)
Metrics
  infonce, retrieval_metrics, cosine_similarity_matrix, ssim, variance_spectrum
Analyses (jit/vmap-compiled; the *_fn helpers build the callables they take)
  image_feature_fn, occlusion_map, occlusion_maps, extract_blobs, blob_table, pathway_ssim,
  neural_feature_fn, neuron_ablation, masked_map_ssim,
  attention_qk_fn, attention_bin_edges, attention_histogram_stream, attention_summary

Example::

    import dina_jax
    config = dina_jax.load_config("synthetic", {"train.num_epochs": 5})
    dina_jax.train_and_evaluate(config, "workdirs/synthetic")
    model, params, config, dataset = dina_jax.load_trained("workdirs/synthetic")
    images = dataset.images[dataset.split.test[:4]]                  # (4, 68, 270)
    z_img = dina_jax.encode_images(model, params, images)            # (4, 16, 64)
    rf = dina_jax.occlusion_map(dina_jax.image_feature_fn(model, params), images[0])
"""

__version__ = "0.1.0"

__all__ = [
    "DataError",
    "TrainedRun",
    "analyze",
    "attention_bin_edges",
    "attention_histogram_stream",
    "attention_qk_fn",
    "attention_summary",
    "available_configs",
    "blob_table",
    "build_model",
    "cosine_similarity_matrix",
    "encode_images",
    "encode_neurons",
    "extract_blobs",
    "image_feature_fn",
    "infonce",
    "init_params",
    "load_config",
    "load_dataset",
    "load_images",
    "load_recording",
    "load_trained",
    "masked_map_ssim",
    "neural_feature_fn",
    "neuron_ablation",
    "occlusion_map",
    "occlusion_maps",
    "pathway_ssim",
    "restore",
    "retrieval_metrics",
    "run",
    "ssim",
    "train_and_evaluate",
    "variance_spectrum",
]


# Submodules, imported on first attribute access (``dina_jax.evaluation.evaluate(...)``). No name
# of __all__ may equal one of them: ``from dina_jax import evaluation`` inside the package must
# keep binding the module.
SUBMODULES = (
    "analysis",
    "api",
    "config",
    "data",
    "evaluation",
    "losses",
    "main",
    "models",
    "plots",
    "train",
)


def __getattr__(name: str):
    # PEP 562: resolve lazily, so that `import dina_jax` imports neither JAX nor the models.
    import importlib

    if name in SUBMODULES:
        return importlib.import_module(f"dina_jax.{name}")
    if name not in __all__:
        raise AttributeError(f"module 'dina_jax' has no attribute {name!r}")
    api = importlib.import_module("dina_jax.api")
    value = getattr(api, name) if name in api.HELPERS else api.resolve(name)
    globals()[name] = value  # Later lookups bypass this hook.
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(SUBMODULES))
