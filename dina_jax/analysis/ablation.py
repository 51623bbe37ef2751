"""Neuron ablation of the neural tower (paper Sec. 4.5, Fig. 6a).

Neurons are ranked by response magnitude; for every subset size (a fraction of the population) the
neural feature map is recomputed from the top-ranked subset and from random subsets, with the other
neurons excluded through the tower's ``neuron_mask`` (removed as attention keys/values, their
aggregated scalar zeroed), and compared with the full-population map by SSIM. All masks are
evaluated in ONE compiled computation: ``vmap`` over masks, in chunks of ``mask_batch`` via
``lax.map`` to bound memory.

Conventions where Sec. 4.5 is silent (docs/decisions.md):
- Response magnitude = mean over the analysed stimuli of |r_i| (the responses are z-scored and
  mean-centred per neuron, so |r| measures how far a neuron is driven away from its baseline).
- Subset of fraction f: the first max(1, round(f N)) neurons of the ranking. Random subsets: each
  draw is a random permutation of the neurons whose first k are used for every size, so the subsets
  of a draw are nested like the ranked ones; draw d uses ``jax.random.fold_in(key, d)``.
- SSIM per stimulus with the full-population map's range as the data range, averaged over stimuli;
  the fraction that reaches the target is linearly interpolated between the two sizes that bracket
  it on the mean curve (NaN if it is never reached).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from dina_jax.analysis.ssim import ssim
from dina_jax.data.pipeline import batched_apply


def rank_neurons(responses: np.ndarray) -> np.ndarray:
    """Neuron order by decreasing mean |response|: (S, N) -> (N,) int64 (ties by index)."""
    magnitude = np.mean(np.abs(np.asarray(responses, np.float64)), axis=0)
    return np.argsort(-magnitude, kind="stable")


def subset_sizes(n_neurons: int, fractions) -> np.ndarray:
    """Neurons kept at each fraction: max(1, round(f N)), (F,) int64."""
    fractions = np.asarray(fractions, np.float64)
    if np.any(fractions <= 0) or np.any(fractions > 1):
        raise ValueError(f"ablation fractions must lie in (0, 1], got {fractions.tolist()}")
    return np.maximum(1, np.round(fractions * n_neurons)).astype(np.int64)


def subset_masks(
    order: np.ndarray, fractions, n_random: int, key: jax.Array
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean neuron masks of the ranked and random subsets.

    Args:
      order: (N,) neuron ranking (first = kept first).
      fractions: (F,) subset sizes as fractions of N.
      n_random: random draws per size.
      key: PRNG key of the random draws (draw d uses fold_in(key, d)).

    Returns:
      ranked (F, N) bool and random (n_random, F, N) bool.
    """
    n = len(order)
    sizes = subset_sizes(n, fractions)
    # position[i] = rank of neuron i; a subset of size k keeps the neurons of rank < k.
    position = np.empty(n, np.int64)
    position[order] = np.arange(n)
    ranked = position[None, :] < sizes[:, None]
    random = np.zeros((n_random, len(sizes), n), bool)
    for draw in range(n_random):
        permutation = np.asarray(jax.random.permutation(jax.random.fold_in(key, draw), n))
        rank = np.empty(n, np.int64)
        rank[permutation] = np.arange(n)
        random[draw] = rank[None, :] < sizes[:, None]
    return ranked, random


def masked_map_ssim(
    neural_fn: Callable,
    responses: jax.Array,
    masks: jax.Array,
    *,
    win_size: int = 7,
    mask_batch: int = 8,
) -> jax.Array:
    """SSIM of the map from each neuron subset to the full-population map, per stimulus.

    Args:
      neural_fn: (responses (B, N), neuron_mask (N,) float) -> feature maps (B, h, w), e.g.
        ``lambda r, m: model.apply(v, r, neuron_mask=m, method="encode_neurons")``; it is vmapped
        over the mask (a ``jax.tree_util.Partial`` keeps parameters traced, not constants).
      responses: (B, N) responses.
      masks: (M, N) bool/float masks, 1 = keep.
      win_size: SSIM window.
      mask_batch: masks evaluated together (vmap) in each step of the ``lax.map``.

    Returns:
      (M, B) float32 SSIM(full map, subset map); a full mask gives 1.

    Paper: Sec. 4.5: SSIM of subset-population maps to the full map, vmapped over masks.

    Example::

        masks = np.stack([np.arange(N) < k for k in (10, 100, N)])       # (3, N) bool
        neural_fn = dina_jax.neural_feature_fn(model, params)
        dina_jax.masked_map_ssim(neural_fn, responses, masks)  # (3, B)
    """
    fn = (
        neural_fn
        if isinstance(neural_fn, jax.tree_util.Partial)
        else jax.tree_util.Partial(neural_fn)
    )
    return _masked_map_ssim(fn, jnp.asarray(responses), jnp.asarray(masks), win_size, mask_batch)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _masked_map_ssim(neural_fn, responses, masks, win_size, mask_batch):
    masks = masks.astype(jnp.float32)
    full = neural_fn(responses, jnp.ones(masks.shape[1], jnp.float32))  # (B, N) -> (B, h, w)
    pair_ssim = jax.vmap(lambda a, b: ssim(a, b, win_size=win_size))

    def one_mask(mask):
        return pair_ssim(full, neural_fn(responses, mask))  # (B,)

    return jax.lax.map(one_mask, masks, batch_size=min(mask_batch, masks.shape[0]))  # (M, B)


def fraction_to_reach(fractions, curve, target: float = 0.9) -> float:
    """Smallest fraction at which ``curve`` reaches ``target``, linearly interpolated; NaN if never.

    Args: fractions (F,) increasing; curve (F,) SSIM at each fraction.
    """
    fractions = np.asarray(fractions, np.float64)
    curve = np.asarray(curve, np.float64)
    above = np.nonzero(curve >= target)[0]
    if above.size == 0:
        return float("nan")
    i = int(above[0])
    if i == 0:
        return float(fractions[0])
    f0, f1, c0, c1 = fractions[i - 1], fractions[i], curve[i - 1], curve[i]
    return float(f0 + (target - c0) * (f1 - f0) / (c1 - c0))


def neuron_ablation(
    neural_fn: Callable,
    responses: np.ndarray,
    *,
    fractions,
    n_random: int = 10,
    key: jax.Array,
    target: float = 0.9,
    win_size: int = 7,
    mask_batch: int = 8,
    stimulus_batch: int = 64,
    order: np.ndarray | None = None,
    progress: Callable | None = None,
) -> dict[str, np.ndarray | float]:
    """Response-ranked vs random neuron subsets (Fig. 6a).

    Args:
      neural_fn: see :func:`masked_map_ssim`.
      responses: (S, N) responses of the analysed stimuli.
      fractions: (F,) subset sizes as fractions of N, increasing.
      n_random: random draws per size (10 in the paper).
      key: PRNG key of the random subsets.
      target: SSIM to reach (0.9).
      win_size: SSIM window.
      mask_batch: masks per vmapped step.
      stimulus_batch: stimuli per compiled call (SSIM is per stimulus, so chunks are exact).
      order: neuron ranking; default :func:`rank_neurons` of ``responses``.
      progress: optional wrapper of the stimulus-chunk iterator (e.g. tqdm).

    Returns:
      dict with ``fractions`` (F,), ``sizes`` (F,), ``order`` (N,), ``ranked_ssim`` (F, S),
      ``random_ssim`` (n_random, F, S), ``ranked_curve`` (F,) and ``random_curve`` (n_random, F)
      (means over stimuli), ``ranked_fraction`` and ``random_fraction`` (fraction reaching
      ``target`` on the ranked curve and on the mean random curve), ``random_fraction_draws``
      (n_random,).

    Paper: Sec. 4.5, Fig. 6a: response-ranked vs random neuron subsets, SSIM to the full map.

    Example::

        result = dina_jax.neuron_ablation(dina_jax.neural_feature_fn(model, params),
                                          dataset.responses[test], fractions=(0.1, 0.5, 1.0),
                                          key=jax.random.key(0))
        result["ranked_curve"], result["random_curve"]   # (3,), (10, 3)
    """
    responses = np.asarray(responses, np.float32)
    fractions = np.asarray(fractions, np.float64)
    order = rank_neurons(responses) if order is None else np.asarray(order)
    ranked, random = subset_masks(order, fractions, n_random, key)
    masks = np.concatenate([ranked, random.reshape(-1, ranked.shape[1])])  # (F (1 + R), N)
    per_stimulus = batched_apply(  # (S, M): batched_apply stacks stimuli on axis 0.
        lambda r: masked_map_ssim(neural_fn, r, masks, win_size=win_size, mask_batch=mask_batch).T,
        responses,
        batch_size=stimulus_batch,
        progress=progress,
    )
    all_ssim = per_stimulus.T  # (M, S)
    n_frac = len(fractions)
    ranked_ssim = all_ssim[:n_frac]
    random_ssim = all_ssim[n_frac:].reshape(n_random, n_frac, -1)
    ranked_curve = ranked_ssim.mean(axis=1)
    random_curve = random_ssim.mean(axis=2)
    return dict(
        fractions=fractions,
        sizes=subset_sizes(len(order), fractions),
        order=order,
        ranked_ssim=ranked_ssim,
        random_ssim=random_ssim,
        ranked_curve=ranked_curve,
        random_curve=random_curve,
        ranked_fraction=fraction_to_reach(fractions, ranked_curve, target),
        random_fraction=fraction_to_reach(fractions, random_curve.mean(axis=0), target),
        random_fraction_draws=np.asarray(
            [fraction_to_reach(fractions, c, target) for c in random_curve]
        ),
    )


def ground_truth_overlap(order: np.ndarray, truth: np.ndarray, k: int | None = None) -> dict:
    """Overlap of the top-k ranked neurons with a ground-truth set, against chance.

    Under random ranking the overlap is hypergeometric: drawing k of N neurons of which K are in the
    set gives an expected overlap k K / N.

    Args:
      order: (N,) ranking.
      truth: (N,) bool, e.g. the simulator's high-gain visual neurons.
      k: neurons taken from the top of the ranking; default K (the size of the set).

    Returns:
      dict with ``k``, ``n_truth`` (K), ``overlap``, ``expected`` (k K / N), ``enrichment``
      (overlap / expected), ``precision`` (overlap / k) and ``p_value`` (P[overlap >= observed]).
    """
    truth = np.asarray(truth, bool)
    n, n_truth = truth.size, int(truth.sum())
    k = n_truth if k is None else int(k)
    overlap = int(truth[np.asarray(order)[:k]].sum())
    expected = k * n_truth / n
    return dict(
        k=k,
        n_truth=n_truth,
        overlap=overlap,
        expected=expected,
        enrichment=overlap / expected if expected > 0 else float("nan"),
        precision=overlap / k if k > 0 else float("nan"),
        p_value=float(stats.hypergeom.sf(overlap - 1, n, n_truth, k)),
    )
