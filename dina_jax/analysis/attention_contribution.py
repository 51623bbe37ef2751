"""What the population attention contributes to a trained neural tower (Sec. 4.5, Fig. 6).

Fig. 6a and 6b read the attention scores as neuron-neuron interactions; that reading presumes the
scores matter. Two controls measure it on a trained run, with the run's own parameters:

* ``uniform``: Eq. 7 with every kept neuron weighted 1 / N (``model.neural.mixer="uniform"``):
  the value vectors still mix, but the scores are gone;
* ``removed``: no attention output at all (``mixer="none"``): with the residual around the
  attention each token is then its own embedding (the residual path alone). Without a residual
  the tower would see only zeros, so this control exists only for residual towers.

For each, :func:`attention_contribution` reports 280-way retrieval (neural query -> image, against
the intact image-tower maps) and the SSIM of its neural maps to the intact ones; beside it,
:func:`attention_spread` measures how far the scores are from uniform: the standard deviation of
ln P over all (query, key) pairs (0 for uniform attention) and the mean row entropy relative to
ln(#keys) (1 for uniform attention). A recipe whose attention is uniform trains a readout, not DINA.

The spread is streamed query block by query block (memory O(block x N), never N x N per batch);
the per-row moments are combined in float64 on the host (Chan et al.'s pairwise formula), so a
spread of 1e-7 is not lost to cancellation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from dina_jax.analysis.ssim import batched_ssim, minmax_normalize
from dina_jax.evaluation.retrieval import retrieval_metrics
from dina_jax.models.feature_fns import encode_images, encode_neurons


@functools.partial(jax.jit, static_argnames=("block_size",))
def _row_statistics(qk_fn, responses, block_size):
    """Per query row of one stimulus: mean of ln P, sum of squared deviations, entropy.

    Returns (H, N) arrays ``mean_log``, ``m2_log``, ``entropy`` and the (N,) query mask.
    """
    q, k, key_mask = qk_fn(responses)  # (1, N) -> (1, N, H, D) each, (1, N)
    q, k = q[0], k[0]
    n_neurons = q.shape[0]
    keep = jnp.broadcast_to(key_mask, (1, n_neurons))[0]  # (N,)
    n_keys = jnp.maximum(keep.sum(), 1).astype(jnp.float32)
    block = min(block_size, n_neurons)
    n_blocks = -(-n_neurons // block)
    pad = n_blocks * block - n_neurons
    q_blocks = jnp.pad(q, ((0, pad), (0, 0), (0, 0))).reshape(n_blocks, block, *q.shape[1:])

    def one_block(q_block):  # (bq, H, D) -> (H, bq) statistics over the kept keys
        logits = jnp.einsum("qhd,khd->hqk", q_block, k)  # (H, bq, N)
        log_p = jax.nn.log_softmax(jnp.where(keep, logits, -jnp.inf), axis=-1)
        log_p = jnp.where(keep, log_p, 0.0)  # masked keys: no entry
        mean = log_p.sum(-1) / n_keys  # (H, bq)
        m2 = (jnp.where(keep, log_p - mean[..., None], 0.0) ** 2).sum(-1)
        entropy = -(jnp.exp(log_p) * jnp.where(keep, log_p, 0.0)).sum(-1)
        return mean, m2, entropy

    mean, m2, entropy = jax.lax.map(one_block, q_blocks)  # (n_blocks, H, bq) each

    def rows(x):  # (n_blocks, H, bq) -> (H, N)
        return jnp.moveaxis(x, 1, 0).reshape(x.shape[1], -1)[:, :n_neurons]

    return rows(mean), rows(m2), rows(entropy), keep


def attention_spread(
    qk_fn: Callable,
    responses: np.ndarray,
    *,
    block_size: int = 512,
    progress: Callable | None = None,
) -> dict:
    """How far the population attention of Eq. 7 is from uniform, over some stimuli.

    Args:
      qk_fn: ``responses (1, N) -> (q, k, key_mask)``, q pre-scaled (``attention_qk_fn``).
      responses: (S, N) stimulus-averaged responses; one stimulus at a time.
      block_size: query rows per block (memory O(block_size x N)).
      progress: optional wrapper of the stimulus iterator (e.g. tqdm).

    Returns:
      ``sd_log_p`` (std of ln P over every kept (query, key) pair, heads and stimuli pooled; 0 for
      uniform attention), ``mean_log_p``, ``relative_entropy`` (mean over query rows of
      H(P_i) / ln(#keys): 1 for uniform attention, near 0 for one-hot rows), ``n_rows``.

    Example::

        spread = attention_spread(dina_jax.attention_qk_fn(model, params), responses[:8])
        spread["sd_log_p"], spread["relative_entropy"]
    """
    fn = qk_fn if isinstance(qk_fn, jax.tree_util.Partial) else jax.tree_util.Partial(qk_fn)
    responses = np.asarray(responses, np.float32)
    count, total_mean, total_m2, entropy_sum, rows = 0.0, 0.0, 0.0, 0.0, 0
    stimuli = range(len(responses))
    for s in progress(stimuli) if progress else stimuli:
        mean, m2, entropy, keep = jax.device_get(
            _row_statistics(fn, responses[s : s + 1], block_size)
        )
        keep = np.asarray(keep, bool)
        n_keys = float(keep.sum())
        mean = np.asarray(mean, np.float64)[:, keep].ravel()
        m2 = np.asarray(m2, np.float64)[:, keep].ravel()
        # Chan et al.: the rows (n_keys entries each) of this stimulus, then the running total.
        n_new = n_keys * len(mean)
        new_mean = mean.mean()
        new_m2 = m2.sum() + n_keys * ((mean - new_mean) ** 2).sum()
        delta = new_mean - total_mean
        merged = count + n_new
        total_m2 += new_m2 + delta**2 * count * n_new / merged
        total_mean += delta * n_new / merged
        count = merged
        entropy_sum += float((np.asarray(entropy, np.float64)[:, keep] / np.log(n_keys)).sum())
        rows += int(keep.sum()) * entropy.shape[0]
    return {
        "sd_log_p": float(np.sqrt(total_m2 / max(count, 1.0))),
        "mean_log_p": float(total_mean),
        "relative_entropy": float(entropy_sum / max(rows, 1)),
        "n_rows": rows,
    }


def attention_contribution(
    model,
    params,
    images: np.ndarray,
    responses: np.ndarray,
    *,
    topk=(1, 5, 10),
    ssim_window: int = 7,
    batch_size: int = 64,
) -> dict:
    """Retrieval and map SSIM of a trained DINA with its population attention controlled.

    Args:
      model: a DINA ``DualTower`` (``build_model``; its neural tower has a population attention).
      params: its trained parameters.
      images: (S, 68, 270) test stimuli; responses: (S, N) their responses.
      topk: retrieval accuracies reported.
      ssim_window: SSIM window between a control's neural maps and the intact ones (min-max
        normalized maps, as the paired-map SSIM of Sec. 4.3).
      batch_size: stimuli per compiled call (memory only).

    Returns:
      ``{"intact": {...}, "uniform": {...}, "removed": {...}}`` (``removed`` only for a tower with
      the residual): each the neural-query retrieval metrics (``top1``, ``top5``, ...,
      ``mean_rank``) and, for the controls, ``ssim_to_intact`` (mean over stimuli).

    Example::

        result = attention_contribution(model, params, images[test], responses[test])
        result["intact"]["top1"] - result["uniform"]["top1"]   # what the scores add
    """
    tower = model.neural_tower
    if not hasattr(tower, "mixer"):
        raise ValueError(f"{type(tower).__name__} has no population attention (baseline model)")
    z_img = encode_images(model, params, images, batch_size=batch_size)
    z_intact = encode_neurons(model, params, responses, batch_size=batch_size)
    result = {"intact": _retrieval(z_intact, z_img, topk)}
    controls = {"uniform": "uniform"}
    if tower.residual:
        controls["removed"] = "none"
    reference = minmax_normalize(jnp.asarray(z_intact))
    for name, mixer in controls.items():
        control = model.clone(neural_tower=tower.clone(mixer=mixer))
        z_neu = encode_neurons(control, params, responses, batch_size=batch_size)
        metrics = _retrieval(z_neu, z_img, topk)
        ssim = batched_ssim(
            reference, minmax_normalize(jnp.asarray(z_neu)), win_size=ssim_window, data_range=1.0
        )
        metrics["ssim_to_intact"] = float(np.mean(np.asarray(ssim)))
        result[name] = metrics
    return result


def _retrieval(z_neu, z_img, topk) -> dict:
    metrics = retrieval_metrics(z_neu, z_img, topk)
    return {k: v for k, v in metrics.items() if k.startswith("top") or k == "mean_rank"}
