"""Shared fixtures: the tiny configuration and its (simulated) dataset, built once per session."""

from __future__ import annotations

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config_file(name: str):
    """``get_config()`` of ``configs/<name>.py`` (the configs folder is not a package)."""
    path = os.path.join(ROOT, "configs", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"dina_configs_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory):
    """configs/tiny.py with ``data.cache_dir`` in a session temp folder.

    Shared by every test of the session: copy it (``config.copy_and_resolve_references()``)
    before changing a field.
    """
    config = load_config_file("tiny")
    config.data.cache_dir = str(tmp_path_factory.mktemp("dina_cache"))
    return config


@pytest.fixture(scope="session")
def tiny_dataset(tiny_config):
    """The :class:`dina_jax.data.pipeline.Dataset` of the tiny config (simulated on first use)."""
    from dina_jax.data.pipeline import load_dataset

    return load_dataset(tiny_config)
