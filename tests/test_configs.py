"""Every packaged config loads, adds no field the base config lacks, and has the data fields;
``configs/`` at the root is the same folder, and every name resolves from any folder."""

import glob
import os
import pathlib

import pytest

from dina_jax.config import (
    CONFIGS_DIR,
    available_configs,
    config_path,
    get_base_config,
    load_config,
    with_defaults,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(glob.glob(os.path.join(ROOT, "dina_jax", "configs", "[!_]*.py")))


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
    assert config.model.image.block == "paper"  # Eq. 1-3 as printed


def test_runs_recorded_before_the_block_field_keep_the_dsnet_block():
    old = get_base_config().to_dict()
    del old["model"]["image"]["block"]
    assert with_defaults(old).model.image.block == "dsnet"  # the only form back then
    for block in ("paper", "dsnet"):
        recorded = get_base_config().to_dict()
        recorded["model"]["image"]["block"] = block
        assert with_defaults(recorded).model.image.block == block
    assert with_defaults({"seed": 3}).model.image.block == "paper"


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
def test_config_docstring_holds_the_launch_command(path):
    with open(path) as f:
        source = f.read()
    assert "python -m dina_jax.main --config configs/" + os.path.basename(path) in source


def test_root_configs_is_a_link_to_the_packaged_folder():
    # One copy of each config: configs/ in the clone is a symbolic link, not a second folder.
    root_configs = pathlib.Path(ROOT, "configs")
    assert root_configs.is_symlink()
    assert root_configs.resolve() == CONFIGS_DIR
    assert sorted(p.name for p in root_configs.glob("[!_]*.py")) == [
        os.path.basename(p) for p in CONFIG_FILES
    ]


def test_every_name_loads_from_another_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here: names and configs/<name>.py are packaged
    names = available_configs()
    assert len(names) == len(CONFIG_FILES) + 1 and "__init__" not in names
    for name in names:
        assert load_config(name).data.source in ("files", "synthetic")
    assert config_path("configs/m1.py") == CONFIGS_DIR / "m1.py"
    assert load_config("configs/tiny.py").train.batch_size == load_config("tiny").train.batch_size


def test_an_existing_local_file_wins_over_the_packaged_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "m1.py").write_text(
        "from dina_jax.config import get_base_config\n\n\n"
        "def get_config():\n    config = get_base_config()\n    config.seed = 7\n"
        "    return config\n"
    )
    assert load_config("configs/m1.py").seed == 7
    assert load_config("m1").seed == 0
