"""Does retrieval follow semantic category? (paper Sec. 4.3 and abstract: decoding rests on
coarse, low-level structure "rather than semantic category information").

The paper says so from the variance spectra and from examples (Fig. 3: "the top-5 retrieved
images ... often differ in semantic category"); :func:`class_retrieval` measures it. Every neural
response of the test set is a query that ranks the test images; for each query we count how many
of its top-k retrieved images share its class (the release's
``stimuli_class_assignment_confident.mat``, read by
``dina_jax.data.stimuli.load_class_assignment``), against the rate a ranking blind to the images
would give with the same class sizes:

  ``all``     the top-k including the query's own image (which shares its class by definition).
              Under a random ranking the expected fraction for a query of class c is n_c / S
              (S candidates, n_c of them in class c).
  ``others``  the top-k of the ranking with the query's own image taken out: the images the
              model confuses the query with. Chance (n_c - 1) / (S - 1). This is the semantic
              test proper: a model that retrieves by category confuses a query with images of
              its class more often than chance.

Unlabelled images (class "unknown" in the release) are not queries, and retrieving one never
counts as a class match; they stay among the candidates. A permutation p-value (class labels
shuffled over the test images, the rankings kept) says how surprising the ``others`` rate is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _class_match_rates(ranked: np.ndarray, labels: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """(len(queries), k): whether each query's ranked candidates share its (non-negative) label."""
    query_labels = labels[queries][:, None]
    return (labels[ranked[queries]] == query_labels) & (query_labels >= 0)


def class_retrieval(
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    labelled: np.ndarray | None = None,
    topk: Sequence[int] = (1, 5),
    n_classes: int | None = None,
    n_permutations: int = 1000,
    seed: int = 0,
) -> dict:
    """Same-class retrieval rates of a ranking against chance (see the module docstring).

    Args:
      scores: (S, S) ``scores[q, c]``: the score of candidate image c for neural query q; the
        correct image of query q is c = q (``test_maps.npz``'s ``similarity`` is image x
        neural: pass its transpose). Higher is better; ties are broken by candidate order.
      labels: (S,) int class of each test image (rows of ``scores``' candidates).
      labelled: (S,) bool, images with a known class; default all.
      topk: the k reported.
      n_classes: classes of the confusion matrices (default ``labels.max() + 1``).
      n_permutations: label shuffles of the p-value (0: none).
      seed: seed of the shuffles.

    Returns:
      dict with ``n_queries``; per k: ``top{k}_all`` and ``top{k}_all_chance``,
      ``top{k}_others``, ``top{k}_others_chance``, ``top{k}_others_ratio`` (rate / chance) and
      ``top{k}_others_p`` (one-sided permutation p-value, (1 + #shuffles >= observed) /
      (1 + n_permutations)); ``class_counts`` (C,) labelled test images per class;
      ``confusion_top{k}`` (C, C) int: row = query class, column = class of each of its top-k
      retrievals other than its own image (unlabelled retrievals left out).

    Paper: Sec. 4.3 and Fig. 3 (retrievals "often differ in semantic category"), measured.

    Example::

        maps = np.load("workdirs/m1/dina/test_maps.npz")
        classes = dina_jax.load_class_assignment(path, n_images=2800)
        rates = dina_jax.class_retrieval(maps["similarity"].T, classes.labels[maps["image_index"]],
                                labelled=classes.labelled[maps["image_index"]])
        rates["top5_others"], rates["top5_others_chance"]
    """
    scores = np.asarray(scores, np.float64)
    n = scores.shape[0]
    if scores.shape != (n, n):
        raise ValueError(f"scores must be square (queries x candidates), got {scores.shape}")
    labels = np.asarray(labels, np.int64).reshape(-1)
    if labels.shape != (n,):
        raise ValueError(f"labels has {labels.size} entries for {n} test images")
    labelled = np.ones(n, bool) if labelled is None else np.asarray(labelled, bool).reshape(-1)
    n_classes = int(labels.max()) + 1 if n_classes is None else int(n_classes)
    known = np.where(labelled, labels, -1)  # -1: never a match.
    queries = np.flatnonzero(labelled)
    k_max = min(max(topk), n - 1)
    order = np.argsort(-scores, axis=1, kind="stable")  # (S, S) candidates, best first.
    others = order[order != np.arange(n)[:, None]].reshape(n, n - 1)  # Own image removed.
    ranked_all, ranked_others = order[:, :k_max], others[:, :k_max]

    counts = np.bincount(known[known >= 0], minlength=n_classes)  # Labelled images per class.
    size = counts[known[queries]].astype(np.float64)  # n_c of each query's class.
    result: dict = {"n_queries": int(queries.size), "class_counts": counts}
    match_all = _class_match_rates(ranked_all, known, queries)
    match_others = _class_match_rates(ranked_others, known, queries)
    rng = np.random.default_rng(seed)
    shuffled = [rng.permutation(known) for _ in range(n_permutations)]
    for k in topk:
        kk = min(k, k_max)
        observed = float(match_others[:, :kk].mean()) if queries.size else float("nan")
        result[f"top{k}_all"] = float(match_all[:, :kk].mean()) if queries.size else float("nan")
        result[f"top{k}_all_chance"] = float(np.mean(size / n)) if queries.size else float("nan")
        chance = float(np.mean((size - 1) / (n - 1))) if queries.size else float("nan")
        result[f"top{k}_others"] = observed
        result[f"top{k}_others_chance"] = chance
        result[f"top{k}_others_ratio"] = observed / chance if chance > 0 else float("nan")
        if n_permutations and queries.size:
            # The labelled queries move with the labels: shuffle the whole label vector.
            null = np.array(
                [
                    _class_match_rates(
                        ranked_others[:, :kk], perm, np.flatnonzero(perm >= 0)
                    ).mean()
                    for perm in shuffled
                ]
            )
            result[f"top{k}_others_p"] = float((1 + np.sum(null >= observed)) / (1 + len(null)))
        confusion = np.zeros((n_classes, n_classes), np.int64)
        retrieved = known[ranked_others[queries, :kk]]  # (Q, k)
        rows = np.repeat(known[queries], kk)
        keep = retrieved.reshape(-1) >= 0
        np.add.at(confusion, (rows[keep], retrieved.reshape(-1)[keep]), 1)
        result[f"confusion_top{k}"] = confusion
    return result
