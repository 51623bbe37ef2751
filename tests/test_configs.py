"""Every config in configs/ loads, adds no field the base config lacks, and has the data fields."""

import glob
import os

import pytest

from dina_jax.config import get_base_config, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))


def _flat_keys(config, prefix=""):
    keys = set()
    for key, value in config.items():
        if hasattr(value, "items"):
            keys |= _flat_keys(value, f"{prefix}{key}.")
        else:
            keys.add(f"{prefix}{key}")
    return keys


def test_there_are_configs():
    names = {os.path.basename(p) for p in CONFIG_FILES}
    assert {"m1.py", "m2.py", "m3.py", "m4.py", "synthetic.py", "tiny.py"} <= names


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
def test_config_has_exactly_the_base_fields(path):
    config = load_config(path)
    assert _flat_keys(config) == _flat_keys(get_base_config())
    for field in ("source", "dir", "recording", "images"):
        assert field in config.data
    assert config.data.source in ("files", "synthetic")


def test_paper_values_are_the_defaults():
    config = get_base_config()
    assert config.loss.temperature == 0.01
    assert config.train.batch_size == 128
    assert config.model.image.depths == (3, 4)
    assert config.model.image.channels == (64, 128)
    assert config.model.latent_hw == (16, 64)
    assert config.model.neural.d_model == 32
    assert config.data.test_fraction == 0.1
    assert config.data.n_spont_pcs == 32
    assert (config.analysis.occlusion.sigma, config.analysis.occlusion.stride) == (4.0, 2)
    assert config.analysis.occlusion.alpha == 1.0
    assert config.analysis.occlusion.ssim_window == 3
    assert config.analysis.occlusion.repeats == 5
    assert config.analysis.blobs.threshold == 0.6
    assert config.analysis.ablation.random_draws == 10
    assert config.analysis.ablation.ssim_target == 0.9
    assert config.eval.topk == (1, 5, 10)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
def test_config_docstring_holds_the_launch_command(path):
    with open(path) as f:
        source = f.read()
    assert "python -m dina_jax.main --config configs/" + os.path.basename(path) in source
