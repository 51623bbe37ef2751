"""Reliability of the workdir: validate first and write after, one writer per workdir, atomic
outputs, cache failures as warnings, the non-finite guard, a torn ``analysis.h5``, and every bad
config value as one line with exit code 2 (issue 16). The longer fault injection (SIGKILL at
random moments of train, evaluate and analyze) is ``benchmarks/fault_injection.py``."""

import hashlib
import os
import shutil
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from dina_jax import checkpoint, files
from dina_jax.data import pipeline, stringer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 600


def _env(**extra):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    env.pop("XLA_FLAGS", None)
    env.update(extra)
    return env


def _cli(workdir, cache_dir, *args, env=None, preexec_fn=None, config="configs/tiny.py"):
    command = [
        sys.executable,
        "-m",
        "dina_jax.main",
        "--config",
        config,
        "--workdir",
        str(workdir),
        f"--config.data.cache_dir={cache_dir}",
        "--config.compilation_cache=",
        *args,
    ]
    return subprocess.run(
        command,
        cwd=ROOT,
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        preexec_fn=preexec_fn,
    )


def _one_line_error(result, *fragments):
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("error: ") and "None: None" not in lines[0], lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _digests(folder) -> dict:
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


# ------------------------------------------------------------------------------ atomic files


def test_atomic_write_replaces_whole_files_or_leaves_the_old_one(tmp_path):
    path = tmp_path / "results.json"
    files.write_json(path, {"a": 1})
    with pytest.raises(RuntimeError), files.atomic_write(path) as f:
        f.write('{"half": ')
        raise RuntimeError("killed mid-write")
    assert path.read_text() == '{"a": 1}\n'
    assert sorted(os.listdir(tmp_path)) == ["results.json"]  # no temp file left behind
    # Two writers of one file never share a temp name.
    with files.atomic_path(path) as first, files.atomic_path(path) as second:
        assert first != second
        assert os.path.dirname(first) == os.path.dirname(second) == str(tmp_path)
    # Temp files of a killed writer are removed by the next lock holder.
    (tmp_path / ".results.json.abc123.tmp").write_text("orphan")
    with files.workdir_lock(tmp_path):
        pass
    assert sorted(os.listdir(tmp_path)) == [".lock", "results.json"]


# ------------------------------------------------------------------------------ the workdir lock

HOLD_LOCK = textwrap.dedent(
    """
    import sys, time
    from dina_jax import files
    with files.workdir_lock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(600)
    """
)


def test_a_second_process_gets_the_holders_pid_and_a_killed_holder_leaves_no_lock(tmp_path):
    workdir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(workdir)],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with (
            pytest.raises(files.WorkdirBusy, match=f"PID {holder.pid}\\b"),
            files.workdir_lock(workdir),
        ):
            pass
    finally:
        holder.kill()  # SIGKILL: the OS releases the lock
        holder.wait()
    with files.workdir_lock(workdir), files.workdir_lock(workdir):  # re-entrant in a process
        assert (workdir / ".lock").read_text().strip() == str(os.getpid())
    assert (workdir / ".lock").read_text() == ""  # emptied on release


def test_a_training_on_a_busy_workdir_is_one_line_naming_the_holder(tiny_config, tmp_path):
    workdir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(workdir)],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = _cli(workdir, tiny_config.data.cache_dir, "--mode=train")
        _one_line_error(result, str(workdir), f"PID {holder.pid}", "another --workdir")
        assert sorted(os.listdir(workdir)) == [".lock"]  # the refused run wrote nothing
    finally:
        holder.kill()
        holder.wait()


# ------------------------------------------------------------------------------ validate first


def test_a_refused_rerun_leaves_a_finished_run_byte_identical(tiny_config, trained_workdir):
    before = _digests(trained_workdir)
    for override, fragment in [
        ("--config.seed=1", "seed=0, this config has seed=1"),
        ("--config.model.neural.d_model=16", "model.neural.d_model=8"),
    ]:
        result = _cli(trained_workdir, tiny_config.data.cache_dir, "--mode=train", override)
        _one_line_error(result, "checkpoints/latest", fragment, "new --workdir")
        assert _digests(trained_workdir) == before, override
    # evaluate/analyze refuse a split.json that is not the checkpoint's (nothing written).
    workdir = trained_workdir.parent / "edited_split"
    shutil.copytree(trained_workdir, workdir)
    split = pipeline.load_split(workdir / "split.json")
    pipeline.save_split(workdir / "split.json", pipeline.Split(split.test, split.val, split.train))
    before = _digests(workdir)
    result = _cli(workdir, tiny_config.data.cache_dir, "--mode=evaluate")
    _one_line_error(result, "split.json", "differs from the split recorded")
    assert _digests(workdir) == before


def test_resuming_with_another_optimizer_ema_or_data_option_is_refused(tiny_config, tmp_path):
    import json

    config = tiny_config.copy_and_resolve_references()
    saved = checkpoint.config_json(config)
    meta = {"config": saved, "stats": {"n_neurons": 44}, "split": {"train": [1], "val": [2]}}
    manager = checkpoint.manager(tmp_path, "latest", create=True)
    checkpoint.save(manager, {"params": {"w": np.zeros(2)}, "step": np.int32(3)}, meta)
    assert checkpoint.check_resumable(tmp_path, meta)["stats"] == {"n_neurons": 44}
    allowed = {"train.num_epochs": 7, "data.dir": "/elsewhere", "eval.batch_size": 4}
    for changes, fragment in [
        ({"optim.neural.learning_rate": 0.5}, "optim.neural.learning_rate=1e-05"),
        ({"train.ema_decay": 0.5}, "train.ema_decay=0.0"),
        ({"data.n_spont_pcs": 0}, "data.n_spont_pcs=4"),
        ({"loss.temperature": 0.1}, "loss.temperature=0.01"),
        ({}, None),
    ]:
        current = json.loads(json.dumps(saved))
        for key, value in {**allowed, **changes}.items():
            section, *rest = key.split(".")
            node = current[section]
            for part in rest[:-1]:
                node = node[part]
            node[rest[-1]] = value
        this = {**meta, "config": current}
        if fragment is None:
            assert checkpoint.check_resumable(tmp_path, this) is not None
            continue
        with pytest.raises(checkpoint.CheckpointError, match=f"trained with {fragment}"):
            checkpoint.check_resumable(tmp_path, this)
    with pytest.raises(checkpoint.CheckpointError, match="another train/val/test split"):
        checkpoint.check_resumable(tmp_path, {**meta, "split": {"train": [2], "val": [1]}})


@pytest.mark.parametrize(
    "override, fragments",
    [
        ("--config.train.batch_size=-16", ("train.batch_size=-16", "positive integer")),
        ("--config.train.batch_size=0", ("train.batch_size=0", "positive integer")),
        ("--config.train.batch_size=4096", ("train.batch_size=4096", "larger than the training")),
        ("--config.data.source=nope", ("data.source='nope'", "synthetic")),
        ("--config.model.name=nope", ("model.name='nope'", "'dina'")),
        ("--config.data.test_fraction=2", ("data.test_fraction=2.0", "(0, 1)")),
        ("--config.loss.temperature=0", ("loss.temperature=0.0", "positive")),
        ("--config.model.image.block=ds-net", ("model.image.block='ds-net'", "'dsnet'")),
        ("--config.model.neural.attention=flash", ("model.neural.attention='flash'", "compact")),
        (
            "--config.train.checkpoint_every_minutes=-1",
            ("train.checkpoint_every_minutes=-1.0", ">= 0"),
        ),
    ],
)
def test_bad_config_values_are_one_line_and_write_nothing(
    tiny_config, tmp_path, override, fragments
):
    workdir = tmp_path / "run"
    result = _cli(workdir, tiny_config.data.cache_dir, "--mode=train", override)
    _one_line_error(result, "configs/tiny.py", *fragments)
    assert not workdir.exists()


def test_a_batch_that_does_not_divide_over_the_devices(tiny_config, tmp_path):
    env = _env(XLA_FLAGS="--xla_force_host_platform_device_count=2")
    workdir = tmp_path / "run"
    result = _cli(workdir, tiny_config.data.cache_dir, "--config.train.batch_size=15", env=env)
    _one_line_error(result, "train.batch_size=15", "2 devices", "multiple of 2")
    assert not workdir.exists()


def test_config_file_errors_unwritable_workdir_and_damaged_checkpoints(
    tiny_config, trained_workdir, tmp_path
):
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config(:\n")
    result = _cli(tmp_path / "run", tiny_config.data.cache_dir, config=str(broken))
    _one_line_error(result, "broken.py")

    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("")  # root ignores permissions; a path under a file fails for all
    result = _cli(not_a_folder / "run", tiny_config.data.cache_dir, "--mode=data")
    _one_line_error(result, "file.txt", "writable")

    workdir = tmp_path / "damaged"
    shutil.copytree(trained_workdir, workdir)
    (step,) = os.listdir(workdir / "checkpoints" / "best")
    shutil.rmtree(workdir / "checkpoints" / "best" / step / "meta")
    result = _cli(workdir, tiny_config.data.cache_dir, "--mode=evaluate")
    _one_line_error(result, "checkpoints/best", "damaged or incomplete")
    (step,) = os.listdir(workdir / "checkpoints" / "latest")
    shutil.rmtree(workdir / "checkpoints" / "latest" / step / "params")
    before = _digests(workdir)
    result = _cli(workdir, tiny_config.data.cache_dir, "--mode=train")
    _one_line_error(result, "checkpoints/latest", "damaged or incomplete")
    assert _digests(workdir) == before


# ------------------------------------------------------------------------------ cache and data


def test_any_cache_write_failure_is_a_warning(tiny_config, tmp_path, monkeypatch):
    path, _ = pipeline.data_paths(tiny_config)

    def broken(*_args):
        raise RuntimeError("h5py: Can't write data")

    monkeypatch.setattr(stringer, "_write_cache", broken)
    with pytest.warns(UserWarning, match="could not write cache .*continuing without it"):
        recording = stringer.load_recording(path, n_spont_pcs=4, cache_dir=tmp_path)
    assert np.isfinite(recording.responses).all()


def test_a_full_disk_during_the_cache_write_is_a_warning(tiny_config, tmp_path):
    import resource

    recording, images = pipeline.data_paths(tiny_config)
    limit = 32 * 1024  # below the preprocessed cache (~90 kB), above config.json

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = _cli(
        tmp_path / "run",
        tmp_path / "cache",
        "--mode=data",
        "--config.data.source=files",
        f"--config.data.dir={os.path.dirname(recording)}",
        f"--config.data.recording={os.path.basename(recording)}",
        f"--config.data.images={os.path.basename(images)}",
        preexec_fn=small_disk,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "could not write cache" in result.stderr and "File too large" in result.stderr
    assert "neurons" in result.stdout
    assert not os.listdir(tmp_path / "cache" / "preprocessed")  # no partial file


# ------------------------------------------------------------------------------ non-finite guard


def test_a_non_finite_update_is_never_logged_or_saved(tiny_config, tmp_path):
    from dina_jax.training import train_and_evaluate
    from dina_jax.training.loop import NonFiniteLossError

    config = tiny_config.copy_and_resolve_references()
    config.optim.neural.learning_rate = float("inf")  # a finite loss, an infinite update
    config.train.evaluate_at_end = False
    workdir = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match="gradient or an updated parameter .* step 1 "):
        train_and_evaluate(config, workdir)
    metrics = workdir / "metrics.jsonl"
    assert not metrics.exists() or metrics.read_text() == ""  # step 1 was not logged
    assert checkpoint.manager(workdir, "latest", create=False).latest_step() is None


# ------------------------------------------------------------------------------ analysis.h5


def test_a_torn_analysis_file_is_reported_and_recomputed(tmp_path):
    from dina_jax.analysis.run import ResultsFile

    path = str(tmp_path / "analysis.h5")
    with ResultsFile(path) as store:
        store.h5.create_dataset("kept", data=np.arange(3))
    with ResultsFile(path) as store:
        assert store.h5["kept"][...].tolist() == [0, 1, 2]
        store.h5.create_dataset("big", data=np.zeros(100_000))
        store.save()
        # A kill inside a later save leaves the last complete file (the rename never happens).
        store.h5.create_dataset("lost", data=np.ones(3))
        real_replace = os.replace
        try:
            os.replace = lambda *_a: (_ for _ in ()).throw(KeyboardInterrupt())
            with pytest.raises(KeyboardInterrupt):
                store.save()
        finally:
            os.replace = real_replace
        with h5py.File(path) as h5:
            assert sorted(h5) == ["big", "kept"]
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:  # as an in-place writer killed mid-way left it
        f.write(data[: len(data) // 2])
    with pytest.warns(UserWarning, match="analysis.h5: unreadable"), ResultsFile(path) as store:
        assert list(store.h5) == []
        store.h5.create_dataset("again", data=np.arange(2))
    with h5py.File(path) as h5:
        assert list(h5) == ["again"]
