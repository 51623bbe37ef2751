"""Shared fixtures: the tiny configuration and its (simulated) dataset, built once per session."""

from __future__ import annotations

import os

import jax
import pytest

from dina_jax.config import load_config

# The test session's compiled programs persist between runs (as the main job's do, see
# config.compilation_cache), so a second run of the suite compiles only what changed.
jax.config.update(
    "jax_compilation_cache_dir",
    os.environ.get("DINA_JAX_TEST_XLA_CACHE", os.path.expanduser("~/.cache/dina_jax/xla-tests")),
)


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory):
    """configs/tiny.py with ``data.cache_dir`` in a session temp folder.

    Shared by every test of the session: copy it (``config.copy_and_resolve_references()``)
    before changing a field.
    """
    config = load_config("tiny")
    config.data.cache_dir = str(tmp_path_factory.mktemp("dina_cache"))
    return config


@pytest.fixture(scope="session")
def tiny_dataset(tiny_config):
    """The :class:`dina_jax.data.pipeline.Dataset` of the tiny config (simulated on first use)."""
    from dina_jax.data.pipeline import load_dataset

    return load_dataset(tiny_config)


@pytest.fixture(scope="session")
def trained_workdir(tiny_config, tmp_path_factory):
    """A tiny run trained for one epoch and evaluated (``train_and_evaluate``): checkpoints,
    ``split.json``, ``results.json``, ``test_maps.npz``. Read it; copy it before changing it."""
    from dina_jax.training import train_and_evaluate

    config = tiny_config.copy_and_resolve_references()
    config.train.num_epochs = 1  # Any checkpoint will do; training itself is tested elsewhere.
    workdir = tmp_path_factory.mktemp("tiny_run")
    train_and_evaluate(config, str(workdir))  # Ends with evaluation.evaluate (first run).
    return workdir
