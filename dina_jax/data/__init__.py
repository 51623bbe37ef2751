"""Data: the Stringer et al. (2019) loaders, the simulated V1, and the dataset pipeline.

* :mod:`dina_jax.data.stringer`: read the release's ``.mat`` files (v5 and v7.3), preprocess
  (``loadProc2800``), cache; :class:`~dina_jax.data.stringer.DataError` for unusable input.
* :mod:`dina_jax.data.synthetic`: a simulated recording in the same formats, with ground truth.
  Its parts: :mod:`~dina_jax.data.simulated_images` (the stimuli),
  :mod:`~dina_jax.data.simulated_neurons` (the Gabor cells and their trials) and
  :mod:`~dina_jax.data.mat_writer` (MATLAB v5 and v7.3 files laid out as MATLAB does).
* :mod:`dina_jax.data.pipeline`: ``load_dataset(config)``, splits, batches, sharding, noise ceiling.
"""

from dina_jax.data.stringer import DataError

__all__ = ["DataError"]
