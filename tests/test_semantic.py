"""Same-class retrieval against chance (``dina_jax.evaluation.semantic``), by hand."""

import numpy as np
import pytest

from dina_jax.evaluation.semantic import class_retrieval


def _scores(rankings):
    """(S, S) scores whose row q ranks the candidates in the order rankings[q]."""
    n = len(rankings)
    scores = np.zeros((n, n))
    for q, ranking in enumerate(rankings):
        scores[q, ranking] = np.arange(n, 0, -1)
    return scores


RANKINGS = [[0, 1, 2, 3], [2, 1, 0, 3], [3, 2, 0, 1], [0, 1, 2, 3]]
LABELS = [0, 0, 1, 1]


def test_rates_chance_and_confusion_match_a_hand_count():
    result = class_retrieval(_scores(RANKINGS), LABELS, topk=(1, 2), n_permutations=0)
    # Own image included: q0 and q2 retrieve a class-mate first; chance n_c / S = 2 / 4.
    assert result["top1_all"] == pytest.approx(0.5)
    assert result["top1_all_chance"] == pytest.approx(0.5)
    # Own image removed: q0 -> 1 (same), q1 -> 2 (not), q2 -> 3 (same), q3 -> 0 (not).
    assert result["top1_others"] == pytest.approx(0.5)
    assert result["top1_others_chance"] == pytest.approx(1 / 3)  # (n_c - 1) / (S - 1)
    assert result["top1_others_ratio"] == pytest.approx(1.5)
    # Top-2 others: q0 [1, 2] 1/2, q1 [2, 0] 1/2, q2 [3, 0] 1/2, q3 [0, 1] 0.
    assert result["top2_others"] == pytest.approx(0.375)
    np.testing.assert_array_equal(result["confusion_top1"], [[1, 1], [1, 1]])
    np.testing.assert_array_equal(result["confusion_top2"], [[2, 2], [3, 1]])
    np.testing.assert_array_equal(result["class_counts"], [2, 2])
    assert result["n_queries"] == 4


def test_unlabelled_images_are_no_query_and_never_a_match():
    labelled = np.array([True, True, True, False])
    result = class_retrieval(
        _scores(RANKINGS), LABELS, labelled=labelled, topk=(1,), n_permutations=0
    )
    assert result["n_queries"] == 3
    np.testing.assert_array_equal(result["class_counts"], [2, 1])
    assert result["top1_others"] == pytest.approx(1 / 3)  # q2's best other is image 3: unknown.
    assert result["top1_others_chance"] == pytest.approx((1 / 3 + 1 / 3 + 0) / 3)
    assert result["confusion_top1"].sum() == 2  # q2's unlabelled retrieval is left out.


def test_permutation_p_value_separates_category_retrieval_from_chance():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 10)
    by_class = (labels[:, None] == labels[None, :]) + 0.1 * rng.random((40, 40))
    sorted_ = class_retrieval(by_class, labels, n_permutations=200)
    assert sorted_["top5_others"] == 1.0 and sorted_["top5_others_p"] == pytest.approx(1 / 201)
    blind = class_retrieval(rng.random((40, 40)), labels, n_permutations=200)
    assert blind["top5_others_p"] > 0.01
    assert abs(blind["top5_others"] - blind["top5_others_chance"]) < 0.1
