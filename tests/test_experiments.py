"""The experiments/ scripts share the main CLI's style: absl flags, ``--config.a.b=value``
overrides, runnable as ``python -m experiments.<name>`` or as files without editing sys.path."""

import os
import pathlib
import subprocess
import sys

import pytest

from experiments import stimulus_conditions, table1

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = ("table1", "stimulus_conditions", "interpret", "validate_analyses")


def _run(args):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("name", SCRIPTS)
def test_runs_as_a_module_and_as_a_file_with_config_overrides(name):
    result = _run(["-m", f"experiments.{name}", "--helpshort"])  # absl's help exits 1
    assert "--config" in result.stdout and "--workdir" in result.stdout
    # As a file, and a misspelt override is refused by the same parser as dina_jax.main's.
    result = _run([f"experiments/{name}.py", "--workdir=/nonexistent", "--config.train.no_such=1"])
    assert result.returncode != 0
    assert "no_such" in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_overrides_apply_to_every_run(tmp_path):
    overrides = {"train.num_epochs": 3, "data.synthetic.n_neurons": 500}
    config = table1.mouse_config(
        "sim1", synthetic=True, n_synthetic_mice=2, root=tmp_path, overrides=overrides
    )
    assert config.train.num_epochs == 3 and config.data.synthetic.n_neurons == 500
    assert config.data.synthetic.mouse == 1
    assert config.data.cache_dir == str(tmp_path / "dina_cache")
    moved = table1.mouse_config(
        "m2", synthetic=False, n_synthetic_mice=0, root=tmp_path,
        overrides={"data.cache_dir": "/elsewhere", "data.dir": "/data"},
    )  # fmt: skip
    assert (moved.data.cache_dir, moved.data.dir) == ("/elsewhere", "/data")


def test_real_conditions_find_the_packaged_configs(tmp_path):
    for condition, expected in (("natimg2800", 4), ("white", 2), ("8D", 2)):
        configs = stimulus_conditions.condition_configs(
            condition, tmp_path, synthetic=False, overrides={"data.dir": "/data"}
        )
        assert len(configs) == expected
        assert all(c.data.dir == "/data" for c in configs.values())
