"""The towers as compiled functions on numpy arrays: encoders and the analyses' feature functions.

Every function here is built from a handful of per-model callables cached with ``lru_cache``
(:func:`_image_apply`, :func:`_neural_apply`, :func:`_attention_apply`, jitted by
:func:`_compiled`): ``jax.jit`` keys its cache on the function object, so holding one object per
(model, pathways) means that repeated encodings and analyses of a model trace and compile once,
not once per call. The parameters are always arguments (or ``jax.tree_util.Partial`` leaves),
never constants baked into a program, so new parameters of the same model reuse the program too.

* :func:`encode_images`, :func:`encode_neurons`: one tower on (S, ...) arrays of any length, in
  zero-padded chunks of ``batch_size`` rows (``dina_jax.data.pipeline.batched_apply``);
* :func:`encode`: both towers on paired inputs, as the evaluation uses them (paper Sec. 4.2);
* :func:`image_feature_fn`, :func:`neural_feature_fn`, :func:`attention_qk_fn`: the callables
  the analyses take (occlusion, neuron ablation, attention statistics; Sec. 4.4-4.5, App. A).

Models stay at the bottom of the import graph: this module imports only JAX, numpy and the data
pipeline's batching helper, never the training or evaluation code.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import numpy as np

from dina_jax.data.pipeline import batched_apply


@functools.lru_cache(maxsize=32)
def _image_apply(model, pathways: tuple[str, ...] | None) -> Callable:
    # One function object per (model, pathways): jit caches key on it, so analyses that take
    # image_feature_fn(...) compile once per model, not once per call.
    if pathways is None:  # The model's default: both streams.
        return functools.partial(model.apply, method="encode_images")
    return functools.partial(model.apply, pathways=pathways, method="encode_images")


@functools.lru_cache(maxsize=32)
def _neural_apply(model) -> Callable:
    def apply(variables, responses, neuron_mask=None):
        return model.apply(variables, responses, neuron_mask=neuron_mask, method="encode_neurons")

    return apply


@functools.lru_cache(maxsize=32)
def _attention_apply(model) -> Callable:
    return functools.partial(model.apply, method="neural_attention_qk")


@functools.lru_cache(maxsize=32)
def _compiled(apply: Callable) -> Callable:
    return jax.jit(apply)


def encode_images(
    model,
    params,
    images,
    *,
    pathways: Sequence[str] | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """Image-tower feature maps of raw stimuli (paper Sec. 3.1, Eq. 1-3, Fig. 2 left).

    Args:
      model: a module from ``dina_jax.build_model`` (or ``load_trained(...).model``).
      params: its parameter tree (the ``"params"`` collection).
      images: (S, 68, 270) raw pixels, any float dtype (standardized inside the model with the
        training statistics the model was built with).
      pathways: image-tower streams kept: None (the full model, both streams), ``("local",)``
        or ``("global",)`` (pathway masking, Fig. 5a).
      batch_size: stimuli per compiled call (memory); the result does not depend on it.

    Returns:
      (S, 16, 64) float32 numpy, the raw (un-normalized) feature maps z_img.

    Example::

        z_img = dina_jax.encode_images(model, params, dataset.images[:8])   # (8, 16, 64)
        z_local = dina_jax.encode_images(model, params, dataset.images[:8], pathways=("local",))
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 3:
        raise ValueError(f"encode_images expects (S, H, W) images, got shape {images.shape}")
    variables = {"params": params}
    fn = _compiled(_image_apply(model, None if pathways is None else tuple(pathways)))
    return batched_apply(lambda x: fn(variables, x), images, batch_size=batch_size)


def encode_neurons(
    model,
    params,
    responses,
    *,
    neuron_mask=None,
    batch_size: int = 64,
) -> np.ndarray:
    """Neural-tower feature maps of population responses (paper Sec. 3.2, Eq. 4-9).

    Args:
      model: a module from ``dina_jax.build_model`` (or ``load_trained(...).model``).
      params: its parameter tree.
      responses: (S, N) stimulus-averaged responses, any float dtype, N the model's neurons.
      neuron_mask: optional (N,) bool/float, 1 = keep; an excluded neuron is removed as an
        attention key/value and its aggregated scalar u_i (Eq. 8) is zeroed (Fig. 6a ablation).
      batch_size: responses per compiled call (memory); the result does not depend on it.

    Returns:
      (S, 16, 64) float32 numpy, the raw feature maps z_neu.

    Example::

        z_neu = dina_jax.encode_neurons(model, params, dataset.responses[:8])   # (8, 16, 64)
        keep = np.arange(dataset.n_neurons) < 100                               # (N,) bool
        z_100 = dina_jax.encode_neurons(model, params, dataset.responses[:8], neuron_mask=keep)
    """
    responses = np.asarray(responses, np.float32)
    if responses.ndim != 2:
        raise ValueError(f"encode_neurons expects (S, N) responses, got shape {responses.shape}")
    variables = {"params": params}
    mask = None if neuron_mask is None else jax.numpy.asarray(neuron_mask, jax.numpy.float32)
    fn = _compiled(_neural_apply(model))
    return batched_apply(lambda r: fn(variables, r, mask), responses, batch_size=batch_size)


def encode(
    model,
    params,
    images,
    responses,
    *,
    batch_size: int,
    pathways: Sequence[str] | None = None,
    neuron_mask=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Feature maps of both towers for paired inputs (paper Sec. 3, the maps of Sec. 4.2-4.3).

    The two towers are independent (``DualTower.__call__`` is ``encode_images`` followed by
    ``encode_neurons``), so this is :func:`encode_images` and :func:`encode_neurons`: one cached
    compiled program per model and pathway setting for each tower, reused by every later call.

    Args:
      model: a dual-tower module from ``dina_jax.models.build_model``.
      params: its parameter tree (the ``"params"`` collection).
      images: (S, 68, 270) raw pixels; responses: (S, N) stimulus-averaged responses, row s of
        both belonging to the same stimulus.
      batch_size: rows per compiled call (memory); the last chunk is zero-padded to it so that
        one program serves every chunk. The result does not depend on it.
      pathways: image-tower streams kept (None: both; Fig. 5a pathway masking).
      neuron_mask: optional (N,) bool/float, 1 = keep (Fig. 6a neuron ablation).

    Returns:
      (z_img, z_neu), each (S, 16, 64) float32 numpy, the raw (un-normalized) feature maps.

    Raises:
      ValueError: images and responses with different numbers of rows, or a bad batch_size.

    Example::

        z_img, z_neu = encode(model, params, dataset.images[test], dataset.responses[test],
                              batch_size=64)                       # (S_test, 16, 64) each
    """
    if len(images) != len(responses):
        raise ValueError(f"{len(images)} images but {len(responses)} responses")
    z_img = encode_images(model, params, images, pathways=pathways, batch_size=batch_size)
    z_neu = encode_neurons(model, params, responses, neuron_mask=neuron_mask, batch_size=batch_size)
    return z_img, z_neu


def image_feature_fn(
    model, params, *, pathways: Sequence[str] | None = None
) -> jax.tree_util.Partial:
    """The image tower as ``feature_fn(images (B, 68, 270)) -> (B, 16, 64)`` for the analyses.

    A ``jax.tree_util.Partial`` holding the parameters as a pytree leaf, so ``occlusion_map`` and
    ``occlusion_maps`` trace them instead of baking them into the program, and calls with the same
    model reuse one compilation (App. A.1, Eq. 10-15).

    Example::

        feature_fn = dina_jax.image_feature_fn(model, params)
        rf = dina_jax.occlusion_map(feature_fn, dataset.images[0])   # (68, 270) float32
    """
    apply = _image_apply(model, None if pathways is None else tuple(pathways))
    return jax.tree_util.Partial(apply, {"params": params})


def neural_feature_fn(model, params) -> jax.tree_util.Partial:
    """The neural tower as ``neural_fn(responses (B, N), neuron_mask (N,)) -> (B, 16, 64)``.

    The callable ``neuron_ablation`` and ``masked_map_ssim`` vmap over neuron masks (Sec. 4.5,
    Fig. 6a); the parameters are a traced pytree leaf.

    Example::

        neural_fn = dina_jax.neural_feature_fn(model, params)
        result = dina_jax.neuron_ablation(neural_fn, dataset.responses[test],
                                          fractions=(0.05, 0.1, 0.5, 1.0),
                                          key=jax.random.key(0))
        result["ranked_curve"]                                        # (4,) mean SSIM
    """
    return jax.tree_util.Partial(_neural_apply(model), {"params": params})


def attention_qk_fn(model, params) -> jax.tree_util.Partial:
    """The population attention's ``qk_fn(responses (B, N)) -> (q, k, key_mask)`` (Eq. 6-7).

    q, k are (B, N, H, D) float32 with q pre-scaled, so softmax(q k^T) are the attention
    probabilities; ``attention_histogram_stream`` streams them into a histogram (Fig. 6b)
    without an N x N matrix per batch. DINA only (the MLP baselines have no attention).

    Example::

        qk_fn = dina_jax.attention_qk_fn(model, params)
        edges = dina_jax.attention_bin_edges(dataset.n_neurons, 200)       # (201,) float64
        counts, moments = dina_jax.attention_histogram_stream(qk_fn, dataset.responses[:8], edges)
        dina_jax.attention_summary(counts, moments, edges)["sigma"]       # log-normal sigma
    """
    return jax.tree_util.Partial(_attention_apply(model), {"params": params})
