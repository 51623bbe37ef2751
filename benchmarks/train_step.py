"""Throughput of the compiled, pmapped DINA train step for the tiny, synthetic and paper sizes.

  MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 \
      python benchmarks/train_step.py [--sizes tiny,synthetic,paper] [--paper-batch 8] [--steps 3]

For every size it builds the real model (``build_model``) and the real optimizer
(``create_train_state``), compiles ``step.pmapped_train_step`` over all local devices and times
``--steps`` steps on random inputs after a warm-up call (``block_until_ready`` after the last).
It prints the device, the allocator settings, the compile time, the step time and the examples
per second. Sizes:

* ``tiny``: configs/tiny.py (batch 16, N = 48);
* ``synthetic``: configs/synthetic.py (its batch, 32; N = 2,000);
* ``paper``: the base config (the paper's model, N = 10,000 neurons) at ``--paper-batch``
  (default: 8 on a CPU, the paper's 128 on a GPU/TPU).

The global batch is split over the local devices, so it must divide by their number.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import numpy as np

from dina_jax.config import get_base_config, load_config
from dina_jax.models import build_model
from dina_jax.training import optim
from dina_jax.training import state as state_lib
from dina_jax.training import step as step_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALLOCATOR_VARS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "XLA_FLAGS")
PAPER_NEURONS = 10_000


def size_setup(name: str, paper_batch: int):
    """(config, n_neurons, global batch) of a benchmark size."""
    if name == "tiny":
        config = load_config("tiny")
        return config, config.data.synthetic.n_neurons, config.train.batch_size
    if name == "synthetic":
        config = load_config("synthetic")
        return config, config.data.synthetic.n_neurons, config.train.batch_size
    if name == "paper":
        return get_base_config(), PAPER_NEURONS, paper_batch
    raise ValueError(f"unknown size {name!r}; expected tiny, synthetic or paper")


def build_train_step(config, n_neurons: int, batch: int):
    """The loop's pmapped train step for ``config`` over all local devices, on random inputs.

    Returns ``(step, args, n_params)``: the pmapped step (state donated), its arguments (the
    replicated state of the real model and optimizer, then the images and responses split over
    the devices) and the parameter count of each tower.
    """
    n_dev = jax.local_device_count()
    if batch % n_dev:
        raise ValueError(f"batch {batch} does not split over {n_dev} devices")
    rng = np.random.default_rng(0)
    images = rng.random((n_dev, batch // n_dev, *config.model.input_hw), dtype=np.float32)
    responses = rng.normal(size=(n_dev, batch // n_dev, n_neurons)).astype(np.float32)
    model = build_model(config, n_neurons, image_mean=0.5, image_std=0.25)
    state = state_lib.create_train_state(config, model, jax.random.PRNGKey(0), 100)
    n_params = {
        tower: sum(leaf.size for leaf in jax.tree.leaves(state.params[tower]))
        for tower in ("image_tower", "neural_tower")
    }
    step = step_lib.pmapped_train_step(
        float(config.loss.temperature),
        optim.make_schedules(config, 100),
        centre_neural=bool(config.loss.centre_neural),
    )
    return step, (step_lib.replicate(state), images, responses), n_params


def time_train_step(config, n_neurons: int, batch: int, steps: int) -> dict:
    """Compiles the loop's pmapped train step for ``config`` and times ``steps`` calls.

    Random inputs, the real model and optimizer. Returns ``compile_s`` (lowering and XLA
    compilation), ``step_s`` (mean over ``steps`` calls after one warm-up call), ``flops`` (XLA's
    cost analysis of the per-device program; None where the backend gives none), ``loss`` and
    the parameter counts ``params_image`` / ``params_neural``.
    """
    p_train, (rstate, *shards), n_params = build_train_step(config, n_neurons, batch)
    start = time.perf_counter()
    compiled = p_train.lower(rstate, *shards).compile()
    compile_s = time.perf_counter() - start
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list | tuple):  # older JAX: one dict per program
        analysis = analysis[0] if analysis else None
    rstate, metrics = p_train(rstate, *shards)  # warm-up: the first call of the compiled program
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
        rstate, metrics = p_train(rstate, *shards)
    jax.block_until_ready(metrics)
    return {
        "compile_s": compile_s,
        "step_s": (time.perf_counter() - start) / steps,
        "flops": float(analysis["flops"]) if analysis and "flops" in analysis else None,
        "loss": float(step_lib.unreplicate_to_host(metrics)["loss"]),
        "params_image": n_params["image_tower"],
        "params_neural": n_params["neural_tower"],
    }


def bench(name: str, paper_batch: int, steps: int) -> dict:
    config, n_neurons, batch = size_setup(name, paper_batch)
    timing = time_train_step(config, n_neurons, batch, steps)
    return {
        "size": name,
        "neurons": n_neurons,
        "batch": batch,
        **timing,
        "examples_per_s": batch / timing["step_s"],
        "loss_finite": bool(np.isfinite(timing["loss"])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,synthetic,paper", help="comma-separated sizes")
    parser.add_argument(
        "--paper-batch", type=int, default=0, help="paper-size batch (0: 8 on CPU, else 128)"
    )
    parser.add_argument("--steps", type=int, default=3, help="timed steps after the compiling one")
    args = parser.parse_args()

    device = jax.devices()[0]
    on_cpu = device.platform == "cpu"
    paper_batch = args.paper_batch or (8 if on_cpu else 128)
    print(
        f"device: {jax.local_device_count()} x {device.platform} ({device.device_kind}), "
        f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}; "
        f"jax {jax.__version__}"
    )
    print("allocator: " + ", ".join(f"{v}={os.environ.get(v, '<unset>')}" for v in ALLOCATOR_VARS))
    header = (
        f"{'size':<10}{'N':>7}{'batch':>7}{'img params':>12}{'neu params':>12}"
        f"{'compile s':>11}{'step s':>9}{'examples/s':>12}"
    )
    print(header)
    for name in args.sizes.split(","):
        r = bench(name.strip(), paper_batch, args.steps)
        print(
            f"{r['size']:<10}{r['neurons']:>7}{r['batch']:>7}{r['params_image']:>12,}"
            f"{r['params_neural']:>12,}{r['compile_s']:>11.1f}{r['step_s']:>9.3f}"
            f"{r['examples_per_s']:>12.1f}" + ("" if r["loss_finite"] else "  (non-finite loss)"),
            flush=True,
        )


if __name__ == "__main__":
    main()
