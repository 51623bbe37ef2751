"""The multi-host path: 2 processes x 4 devices train exactly as 1 process x 8 devices.

``tests/multihost_worker.py`` trains the tiny config for 2 steps of a global batch of 48 with
the project's ``Trainer``, (a) as a 2-process ``jax.distributed`` cluster on this machine (CPU
collectives over gloo, 4 simulated devices per process, a shared workdir), (b) as 1 process with
8 simulated devices; each process has a timeout, so a hang in a collective fails the test
instead of blocking the suite. Compared:

* the metrics process 0 logged (every step's loss, gradient norms, learning rates; the epoch's
  validation loss) against the 1-process run's;
* the final parameters: both processes hold bitwise the same replica, which matches the
  1-process run's and the checkpoint process 0 saved.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "multihost_worker.py")
TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def _launch(out_dir, cache_dir, workdir, n_processes: int, process_id: int, port: int):
    """Starts one worker process with ``8 // n_processes`` simulated CPU devices."""
    import jax

    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={8 // n_processes}"
    # The test session's compilation cache (tests/conftest.py): a rerun compiles nothing.
    cache = jax.config.jax_compilation_cache_dir
    if cache:
        env["JAX_COMPILATION_CACHE_DIR"] = cache
    args = [out_dir, cache_dir, workdir, n_processes, process_id, port]
    return subprocess.Popen(
        [sys.executable, WORKER, *map(str, args)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _records(workdir) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _run(name: str, n_processes: int, cache_dir: str, tmp_path_factory, attempts: int = 2):
    """Runs one set-up to the end; returns its workdir and each process's npz.

    gloo gives the processes 30 s to meet at each new collective (not settable from Python): on
    a slow machine one process may still be compiling when the other arrives. That failure, and
    only that one (in any of the processes), is retried once; the retry finds the programs in
    the compilation cache.
    """
    out = tmp_path_factory.mktemp(f"multihost_{name}")
    workdir, port = out / "workdir", _free_port()
    procs = [_launch(out, cache_dir, workdir, n_processes, i, port) for i in range(n_processes)]
    failures = []
    for pid, proc in enumerate(procs):
        try:
            log, _ = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            for other in procs:  # a hung worker leaves its peer waiting in a collective too
                other.kill()
            log, _ = proc.communicate()
            failures.append(f"{name} process {pid} timed out after {TIMEOUT_S} s:\n{log[-3000:]}")
            continue
        if proc.returncode:
            failures.append(f"{name} process {pid} exited {proc.returncode}:\n{log[-3000:]}")
    if failures and attempts > 1 and any("DEADLINE_EXCEEDED" in f for f in failures):
        return _run(name, n_processes, cache_dir, tmp_path_factory, attempts - 1)
    assert not failures, "\n".join(failures)
    return workdir, [dict(np.load(out / f"process{i}.npz")) for i in range(n_processes)]


@pytest.fixture(scope="module")
def runs(tiny_config, tiny_dataset, tmp_path_factory):
    """Both set-ups, one after the other: {"multi": (workdir, npzs), "single": ...}.

    Not at once: gloo gives the processes of a cluster 30 s to meet at each new collective, and
    a third process competing for the CPUs while they compile could make one of them miss it.
    """
    import jax

    if "jax_cpu_collectives_implementation" not in jax.config.values:
        pytest.skip(f"jax {jax.__version__} has no cross-process CPU collectives")
    del tiny_dataset  # Built here once, so the workers only read the data cache.
    cache_dir = tiny_config.data.cache_dir
    return {
        name: _run(name, n, cache_dir, tmp_path_factory)
        for name, n in (("multi", 2), ("single", 1))
    }


def _params(npz: dict) -> dict:
    return {k: v for k, v in npz.items() if k.startswith("params/")}


def test_two_processes_log_the_losses_of_one(runs):
    single, multi = _records(runs["single"][0]), _records(runs["multi"][0])
    assert [r["kind"] for r in multi] == ["train", "train", "epoch"]
    assert [r["step"] for r in multi] == [r["step"] for r in single] == [1, 2, 2]
    for one, two in zip(single, multi, strict=True):
        assert one.keys() == two.keys()
        for key in one.keys() - {"kind", "step", "epoch", "examples_per_sec"}:
            # float32 sums over 8 devices; only the order differs (in one process, or over
            # gloo across two): equal up to a few ulp.
            np.testing.assert_allclose(two[key], one[key], rtol=1e-5, atol=1e-7, err_msg=key)
    assert single[0]["train_loss"] != single[1]["train_loss"]  # step 1 changed the parameters


def test_two_processes_hold_the_parameters_of_one(runs):
    (proc0, proc1), (one,) = runs["multi"][1], runs["single"][1]
    assert int(proc0["local_devices"]) == int(proc1["local_devices"]) == 4
    assert int(one["local_devices"]) == 8
    assert int(proc0["step"]) == int(one["step"]) == 2
    two, one = _params(proc0), _params(one)
    assert two.keys() == one.keys() == _params(proc1).keys() and len(one) > 10
    for key in two:  # the psum gives every device of every process the same update
        np.testing.assert_array_equal(proc1[key], two[key], err_msg=key)
    # Adam's step g / (sqrt(v) + eps) scales a parameter whose exact gradient is 0 (the key
    # biases: softmax ignores a constant shift) to a step of up to the learning rate from the
    # psum's rounding noise, whose order differs between the two set-ups. So: every element
    # within 1% of the image tower's peak learning rate, and nearly all within 1e-4 of it.
    peak_lr = _records(runs["single"][0])[0]["lr_image"]
    far = 0
    for key in one:
        np.testing.assert_allclose(two[key], one[key], rtol=1e-5, atol=1e-2 * peak_lr, err_msg=key)
        far += int(np.sum(np.abs(two[key] - one[key]) > 1e-4 * peak_lr))
    assert far <= 5e-3 * sum(v.size for v in one.values()), far


def test_process_0_saved_the_trained_parameters(runs):
    import jax

    from dina_jax import checkpoint

    workdir, (proc0, _) = runs["multi"]
    saved = checkpoint.load_run(str(workdir), "latest").params
    flat = {
        f"params/{jax.tree_util.keystr(path)}": np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(saved)
    }
    assert flat.keys() == _params(proc0).keys()
    for key, value in flat.items():
        np.testing.assert_array_equal(value, proc0[key], err_msg=key)
