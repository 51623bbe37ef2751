"""Evaluation of a trained run (paper Sec. 4.2-4.3, App. B): retrieval, its context, paired maps.

``evaluate(config, workdir)`` (``run.py``) evaluates the best checkpoint of a run on its test split
and writes ``results.json``, ``test_maps.npz`` and the figures. The metrics work on any paired
feature maps:

  retrieval   cosine_similarity_matrix, correlation_matrix, retrieval_from_similarity,
              retrieval_metrics, chance_metrics (Sec. 4.2, Fig. A.1; the tie rule)
  baseline    linear_baseline (ridge -> pixel PCs), noise_ceiling (repeat halves)
  maps        map_similarity (paired-map SSIM), map_spectra (Fig. 4b)
  lpips       map_lpips (paired-map LPIPS with local AlexNet weights), LPIPS_MISSING

The package is named ``evaluation`` so that its entry point may be the function ``evaluate``
(``dina_jax.evaluate``); the orchestrator module is ``run.py``, as in ``analysis/``.
"""

from dina_jax.evaluation.baseline import linear_baseline, noise_ceiling
from dina_jax.evaluation.lpips import LPIPS_MISSING, map_lpips
from dina_jax.evaluation.maps import map_similarity, map_spectra
from dina_jax.evaluation.retrieval import (
    chance_metrics,
    correlation_matrix,
    cosine_similarity_matrix,
    retrieval_from_similarity,
    retrieval_metrics,
)
from dina_jax.evaluation.run import evaluate

__all__ = [
    "LPIPS_MISSING",
    "chance_metrics",
    "correlation_matrix",
    "cosine_similarity_matrix",
    "evaluate",
    "linear_baseline",
    "map_lpips",
    "map_similarity",
    "map_spectra",
    "noise_ceiling",
    "retrieval_from_similarity",
    "retrieval_metrics",
]
