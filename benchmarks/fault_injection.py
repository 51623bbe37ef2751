"""Fault injection on the tiny config: SIGKILL at random moments, concurrent runs, a full disk.

    python benchmarks/fault_injection.py --root /tmp/fault_injection --points 5

1. A reference run, uninterrupted: ``--mode train`` (no evaluation at the end), ``--mode
   evaluate``, ``--mode analyze``, each timed.
2. For each of train, evaluate and analyze, ``--points`` times: start the mode on the workdir it
   needs, SIGKILL it at a random moment of its reference duration, check that every output on
   disk is readable (JSON, ``metrics.jsonl`` line by line, ``.npz``, ``analysis.h5``, the
   checkpoints), rerun it to completion and compare with the reference: the ``best`` and
   ``latest`` parameters bitwise, ``results.json``, ``test_maps.npz`` and every dataset of
   ``analysis.h5`` (timings aside) equal.
3. Two trainings started together on one workdir: one finishes, the other exits 2 naming the
   holder's PID.
4. A refused rerun (``--config.seed=1`` on the finished run): exit 2, every file byte-identical.
5. A full disk during the cache write (``RLIMIT_FSIZE`` below the cache's size): a warning, exit 0.

Prints one line per check and ends with ``ALL OK`` (exit 0) or the failures (exit 1). Runs in
about 20-30 minutes on 2 CPU cores (the tests in ``tests/test_reliability.py`` are the fast
subset).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

FAILURES: list[str] = []


def check(ok: bool, what: str) -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {what}", flush=True)
    if not ok:
        FAILURES.append(what)


def command(workdir: str, cache: str, mode: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "dina_jax.main",
        "--config",
        "configs/tiny.py",
        "--workdir",
        workdir,
        f"--mode={mode}",
        f"--config.data.cache_dir={cache}",
        "--config.train.evaluate_at_end=False",
        *extra,
    ]


def env() -> dict:
    environ = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    environ.pop("XLA_FLAGS", None)
    return environ


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, env=env(), capture_output=True, text=True, **kwargs)


def run_and_kill(args: list[str], after: float) -> int | None:
    """Starts ``args`` and SIGKILLs it ``after`` seconds later; its return code if it ended."""
    process = subprocess.Popen(
        args, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        return process.wait(timeout=after)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
        return None


# ------------------------------------------------------------------------------ readability


def readable(workdir: str) -> list[str]:
    """Every output of a workdir that cannot be read (empty when all can)."""
    from dina_jax import checkpoint

    bad = []
    for name in ("config.json", "split.json", "results.json", "analysis.json"):
        path = os.path.join(workdir, name)
        if os.path.exists(path):
            try:
                with open(path) as f:
                    json.load(f)
            except ValueError:
                bad.append(name)
    path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(path):
        with open(path) as f:
            lines = f.read().splitlines()
        # The last line may be torn by the kill (the resume drops it); no other may be.
        for number, line in enumerate(lines[:-1], start=1):
            try:
                json.loads(line)
            except ValueError:
                bad.append(f"metrics.jsonl:{number}")
    path = os.path.join(workdir, "test_maps.npz")
    if os.path.exists(path):
        try:
            with np.load(path) as npz:
                [npz[k] for k in npz.files]
        except Exception:  # noqa: BLE001
            bad.append("test_maps.npz")
    path = os.path.join(workdir, "analysis.h5")
    if os.path.exists(path):
        try:
            with h5py.File(path, "r") as h5:
                h5.visititems(lambda _n, obj: obj[()] if isinstance(obj, h5py.Dataset) else None)
        except Exception:  # noqa: BLE001
            bad.append("analysis.h5")
    for which in checkpoint.CHECKPOINT_KINDS:
        if os.path.isdir(os.path.join(workdir, "checkpoints", which)):
            manager = checkpoint.manager(workdir, which, create=False)
            if manager.latest_step() is not None:
                try:
                    checkpoint.restore(workdir, which)
                except Exception:  # noqa: BLE001
                    bad.append(f"checkpoints/{which}")
    return bad


# ------------------------------------------------------------------------------ comparisons


def same_params(a: str, b: str) -> bool:
    import jax

    from dina_jax import checkpoint

    for which in checkpoint.CHECKPOINT_KINDS:
        first, _, _ = checkpoint.restore(a, which)
        second, _, _ = checkpoint.restore(b, which)
        if not all(jax.tree.leaves(jax.tree.map(np.array_equal, first, second))):
            return False
    return True


def same_evaluation(a: str, b: str) -> bool:
    with open(os.path.join(a, "results.json")) as f, open(os.path.join(b, "results.json")) as g:
        first, second = json.load(f), json.load(g)
    keys = ("retrieval", "linear_baseline", "noise_ceiling", "ssim", "spectra")
    if any(first[k] != second[k] for k in keys):
        return False
    with (
        np.load(os.path.join(a, "test_maps.npz")) as x,
        np.load(os.path.join(b, "test_maps.npz")) as y,
    ):
        return sorted(x.files) == sorted(y.files) and all(
            np.array_equal(x[k], y[k]) for k in x.files
        )


def h5_contents(path: str) -> dict:
    out = {}
    with h5py.File(path, "r") as h5:

        def visit(name, obj):
            attrs = {k: str(v) for k, v in obj.attrs.items() if "seconds" not in k}
            out[name] = (obj[()].tobytes() if isinstance(obj, h5py.Dataset) else None, attrs)

        h5.visititems(visit)
    return out


def digests(folder: str) -> dict:
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(root, name), "rb") as f:
                out[os.path.relpath(os.path.join(root, name), folder)] = hashlib.sha256(
                    f.read()
                ).hexdigest()
    return out


# ------------------------------------------------------------------------------ scenarios


def timed(args: list[str]) -> float:
    start = time.time()
    result = run(args)
    if result.returncode:
        sys.exit(f"reference run failed: {' '.join(args)}\n{result.stderr[-3000:]}")
    return time.time() - start


def kills(mode: str, points: int, reference: str, prepare, seconds: float, rng, cache, root):
    """SIGKILLs ``mode`` at ``points`` random moments, checks, reruns, compares with ``reference``.

    A run that ends before its kill moment (the machine is shared) does not count: the moment
    is halved and drawn again, so that ``points`` runs are really killed.
    """
    killed = attempts = 0
    while killed < points and attempts < 3 * points:
        workdir = os.path.join(root, f"{mode}_{attempts}")
        attempts += 1
        prepare(mode, workdir)
        after = rng.uniform(0.05, 0.8) * seconds
        code = run_and_kill(command(workdir, cache, mode), after)
        if code is not None:
            print(f"     {mode} ended ({code}) before the kill at {after:.1f} s; not counted")
            seconds *= 0.5
            continue
        killed += 1
        bad = readable(workdir)
        check(not bad, f"{mode} killed at {after:.1f} s: every output readable {bad or ''}")
        result = run(command(workdir, cache, mode))
        check(result.returncode == 0, f"{mode} rerun after the kill at {after:.1f} s completes")
        if result.returncode:
            print(result.stderr[-2000:])
            continue
        check(not readable(workdir), f"{mode} rerun: every output readable")
        if mode == "train":
            check(same_params(reference, workdir), "train rerun: best and latest bitwise equal")
            with open(os.path.join(workdir, "metrics.jsonl")) as f:
                steps = [json.loads(line)["step"] for line in f if '"train"' in line]
            check(steps == list(range(1, steps[-1] + 1)), "train rerun: each step logged once")
        elif mode == "evaluate":
            check(same_evaluation(reference, workdir), "evaluate rerun: results and maps equal")
        else:
            same = h5_contents(os.path.join(reference, "analysis.h5")) == h5_contents(
                os.path.join(workdir, "analysis.h5")
            )
            check(same, "analyze rerun: analysis.h5 equal to the uninterrupted one")
    check(killed == points, f"{mode}: {killed} runs killed at random moments")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="/tmp/dina_fault_injection")
    parser.add_argument("--points", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    shutil.rmtree(args.root, ignore_errors=True)
    os.makedirs(args.root)
    cache = os.path.join(args.root, "cache")
    reference = os.path.join(args.root, "reference")

    # Each mode runs twice: the first compiles (into the shared cache), the second is timed, so
    # that the kill moments fall inside the runs being killed.
    trained = os.path.join(args.root, "trained")  # a finished training, not yet evaluated
    timed(command(reference, cache, "train"))
    seconds = {"train": timed(command(trained, cache, "train"))}
    for mode in ("evaluate", "analyze"):
        timed(command(reference, cache, mode))
        timing = os.path.join(args.root, f"timing_{mode}")
        shutil.copytree(trained, timing)
        seconds[mode] = timed(command(timing, cache, mode))
    print(
        "durations of the runs killed (s): "
        + json.dumps({k: round(v, 1) for k, v in seconds.items()})
    )

    def prepare(mode: str, workdir: str) -> None:
        if mode != "train":
            shutil.copytree(trained, workdir)

    for mode in ("train", "evaluate", "analyze"):
        kills(mode, args.points, reference, prepare, seconds[mode], rng, cache, args.root)

    # Two trainings on one workdir.
    workdir = os.path.join(args.root, "concurrent")
    processes = [
        subprocess.Popen(
            command(workdir, cache, "train"),
            cwd=ROOT,
            env=env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outcomes = sorted((p.wait(), p.stderr.read(), p.pid) for p in processes)
    codes = [code for code, _, _ in outcomes]
    message = outcomes[1][1].strip().splitlines()
    check(
        codes == [0, 2] and len(message) == 1 and f"PID {outcomes[0][2]}" in message[0],
        f"two concurrent trainings: one finishes, the other is refused ({message[-1:]})",
    )
    check(same_params(reference, workdir), "concurrent: the finished one equals the reference")

    # A refused rerun leaves the finished run byte-identical.
    before = digests(reference)
    result = run(command(reference, cache, "train", "--config.seed=1"))
    lines = result.stderr.strip().splitlines()
    check(
        result.returncode == 2 and len(lines) == 1 and digests(reference) == before,
        f"refused rerun (--config.seed=1): exit {result.returncode}, files unchanged ({lines})",
    )

    # A full disk during the cache write.
    from dina_jax.config import load_config
    from dina_jax.data import pipeline

    config = load_config("tiny", {"data.cache_dir": cache})
    recording, images = pipeline.data_paths(config)

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (32 * 1024, 32 * 1024))

    result = subprocess.run(
        command(
            os.path.join(args.root, "full_disk"), os.path.join(args.root, "small_cache"), "data"
        )
        + [
            "--config.data.source=files",
            f"--config.data.dir={os.path.dirname(recording)}",
            f"--config.data.recording={os.path.basename(recording)}",
            f"--config.data.images={os.path.basename(images)}",
        ],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        preexec_fn=small_disk,
    )
    check(
        result.returncode == 0 and "could not write cache" in result.stderr,
        f"full disk during the cache write: exit {result.returncode}, a warning",
    )

    print("ALL OK" if not FAILURES else f"{len(FAILURES)} FAILURES:\n  " + "\n  ".join(FAILURES))
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    main()
