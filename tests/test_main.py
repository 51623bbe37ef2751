"""The command line: one-line errors with exit code 2, the resolved config, the data summary."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_cli(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "dina_jax.main", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def test_unknown_config_key_is_a_one_line_error(tmp_path):
    result = _run_cli(
        "--config", "configs/tiny.py", "--workdir", str(tmp_path), "--config.data.no_such_key=1"
    )
    _assert_one_line_error(result, "no_such_key")


@pytest.mark.parametrize("config", ["tiny", "configs/tiny.py", "--config=configs/tiny.py"])
def test_config_names_resolve_from_any_folder(tmp_path, config):
    # Outside the repository (no configs/ link there) a name or configs/<name>.py is packaged;
    # the override error shows that the file was found and loaded.
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    args = [config] if config.startswith("--") else ["--config", config]
    result = subprocess.run(
        [sys.executable, "-m", "dina_jax.main", *args, "--workdir", str(tmp_path / "run")]
        + ["--config.data.no_such_key=1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    _assert_one_line_error(result, "no_such_key")


def test_resolve_config_argument_keeps_other_arguments():
    from dina_jax.cli import resolve_config_argument
    from dina_jax.config import CONFIGS_DIR

    argv = ["prog", "--config", "m1", "--workdir", "configs/x", "--config=no_such:arg"]
    assert resolve_config_argument(argv) == [
        "prog", "--config", str(CONFIGS_DIR / "m1.py"), "--workdir", "configs/x",
        "--config=no_such:arg",
    ]  # fmt: skip


def test_bad_training_option_is_a_one_line_error_and_writes_nothing(tmp_path):
    workdir = tmp_path / "run"
    cases = [
        ("--config.train.responses=trials", ("train.responses", "'trials'")),
        ("--config.train.ema_decay=1.0", ("train.ema_decay", "[0, 1)")),
        ("--config.optim.neural.weight_decay_on=biases", ("weight_decay_on", "'biases'")),
    ]
    for override, fragments in cases:
        result = _run_cli("--config", "configs/tiny.py", "--workdir", str(workdir), override)
        _assert_one_line_error(result, "configs/tiny.py", *fragments)
        assert not workdir.exists()


def test_missing_config_file_is_a_one_line_error(tmp_path):
    result = _run_cli("--config", "configs/does_not_exist.py", "--workdir", str(tmp_path))
    _assert_one_line_error(result, "does_not_exist.py")


def test_missing_recording_says_where_to_put_the_files(tmp_path):
    data_dir = tmp_path / "stringer"
    result = _run_cli(
        "--config",
        "configs/m1.py",
        "--workdir",
        str(tmp_path / "run"),
        f"--config.data.dir={data_dir}",
        "--mode=data",
    )
    _assert_one_line_error(result, str(data_dir), "natimg2800_M160825_MP027_2016-12-14.mat")


@pytest.mark.parametrize("override", ["--config.data.n_spont_pcs=0"])
def test_data_mode_prints_summary_and_writes_resolved_config(tiny_config, tmp_path, override):
    workdir = tmp_path / "run"
    result = _run_cli(
        "--config",
        "configs/tiny.py",
        "--workdir",
        str(workdir),
        f"--config.data.cache_dir={tiny_config.data.cache_dir}",
        override,
        "--mode=data",
    )
    assert result.returncode == 0, result.stderr
    assert "neurons" in result.stdout and "test" in result.stdout
    with open(workdir / "config.json") as f:
        written = json.load(f)
    assert written["data"]["n_spont_pcs"] == 0
    assert written["loss"]["temperature"] == 0.01


def test_compilation_cache_setting(tiny_config, tmp_path):
    import jax

    from dina_jax.main import enable_compilation_cache

    config = tiny_config.copy_and_resolve_references()
    before = jax.config.jax_compilation_cache_dir
    try:
        config.compilation_cache = ""
        assert enable_compilation_cache(config, str(tmp_path)) == ""
        assert jax.config.jax_compilation_cache_dir == before
        config.compilation_cache = "auto"
        expected = os.path.join(config.data.cache_dir, "xla")
        assert enable_compilation_cache(config, str(tmp_path)) == expected
        assert jax.config.jax_compilation_cache_dir == expected
        config.compilation_cache = str(tmp_path / "xla")
        assert enable_compilation_cache(config) == str(tmp_path / "xla")
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
