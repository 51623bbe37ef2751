"""Data: the Stringer et al. (2019) loaders, the simulated V1, and the dataset pipeline.

* :mod:`dina_jax.data.stringer`: load a recording (read, preprocess, cache); re-exports the public
  names of the three modules below, so ``dina_jax.data.stringer`` is the one import for the release.
* :mod:`dina_jax.data.stimuli`: the images file and the release's semantic class of each image.
* :mod:`dina_jax.data.preprocessing`: the authors' ``loadProc2800`` + ``compute_means`` on arrays.
* :mod:`dina_jax.data.matfile`: MATLAB v5 and v7.3 reading;
  :class:`~dina_jax.data.matfile.DataError` for unusable input.
* :mod:`dina_jax.data.synthetic`: a simulated recording in the same formats, with ground truth.
  Its parts: :mod:`~dina_jax.data.simulated_images` (the stimuli),
  :mod:`~dina_jax.data.simulated_neurons` (the Gabor cells and their trials) and
  :mod:`~dina_jax.data.mat_writer` (MATLAB v5 and v7.3 files laid out as MATLAB does).
* :mod:`dina_jax.data.pipeline`: ``load_dataset(config)``, splits, batches, sharding, noise ceiling.
"""

from dina_jax.data.matfile import DataError

__all__ = ["DataError"]
