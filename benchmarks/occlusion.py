"""Occlusion RF map of one 68 x 270 image with the paper-size image tower: compiled vs a loop.

  MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 \
      python benchmarks/occlusion.py [--batch 8] [--loop-centres 16] [--stride 2]

Runs ``dina_jax.analysis.occlusion.occlusion_map`` (all 4,590 centres of App. A.1 as ONE jitted
computation: vmapped occluded images, ``lax.map`` over chunks of ``--batch`` centres, closed-form
Eq. 14) and the naive reference ``occlusion_map_loop`` (a Python loop, one jitted feature-map call
per centre with numpy masks) on the same image and the same randomly initialized paper-size
image tower (config defaults: C = 64/128, depths 3/4). The loop is timed on its first
``--loop-centres`` centres after a warm-up call and extrapolated linearly to all centres (every
centre costs the same); the paper's N = 5 repeats would multiply the loop by 5, while the
compiled map of a deterministic model is computed once (tests/test_occlusion.py checks that both
give the same map). Prints the device and the allocator settings.

On a CPU the tower's cost per image does not fall with the batch (large batches even fall out of
cache), so the compiled map's gain there comes from dropping the Python/dispatch overhead per
centre and from computing the 5 identical repeats once; on a GPU the batch is what pays.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from dina_jax.analysis import occlusion
from dina_jax.config import get_base_config
from dina_jax.models import build_model

ALLOCATOR_VARS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "XLA_FLAGS")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8, help="occluded images per chunk")
    parser.add_argument("--loop-centres", type=int, default=16, help="centres timed in the loop")
    parser.add_argument("--stride", type=int, default=2, help="occlusion grid stride (paper: 2)")
    args = parser.parse_args()

    device = jax.devices()[0]
    print(
        f"device: {device.platform} ({device.device_kind}), {os.cpu_count()} CPUs, "
        f"{platform.processor() or platform.machine()}"
    )
    print("allocator: " + ", ".join(f"{v}={os.environ.get(v, '<unset>')}" for v in ALLOCATOR_VARS))

    config = get_base_config()
    model = build_model(config, n_neurons=16, image_mean=0.5, image_std=0.25)
    variables = jax.jit(
        lambda key: model.init(key, jnp.zeros((1, 68, 270)), method="encode_images")
    )(jax.random.key(0))
    n_params = sum(x.size for x in jax.tree.leaves(variables))
    feature_fn = jax.tree_util.Partial(
        functools.partial(model.apply, method="encode_images"), variables
    )
    image = np.random.default_rng(0).random((68, 270)).astype(np.float32)
    rows, cols = occlusion.occlusion_grid(68, 270, args.stride)
    n_centres = len(rows) * len(cols)
    an = config.analysis.occlusion
    options = dict(
        sigma=an.sigma,
        alpha=an.alpha,
        measure=an.measure,
        ssim_window=an.ssim_window,
        stride=args.stride,
    )
    print(
        f"paper-size image tower: {n_params:,} parameters; {n_centres:,} occlusion centres "
        f"(stride {args.stride}); chunk {args.batch}"
    )

    # Naive loop: warm up (compile the batch-1 call), then time the first centres.
    jitted = jax.jit(feature_fn)
    occlusion.occlusion_map_loop(jitted, image, centres=1, **options)
    start = time.perf_counter()
    occlusion.occlusion_map_loop(jitted, image, centres=args.loop_centres, **options)
    loop_per_centre = (time.perf_counter() - start) / args.loop_centres
    loop_total = loop_per_centre * n_centres
    print(
        f"python loop: {loop_per_centre * 1e3:.1f} ms per centre over {args.loop_centres} "
        f"centres -> {loop_total:.0f} s extrapolated to {n_centres} centres "
        f"({5 * loop_total:.0f} s for the paper's 5 repeats)"
    )

    # Compiled: one jitted computation for all centres (first call = compile + run).
    start = time.perf_counter()
    compiled = occlusion._occlusion_map_jit.lower(
        feature_fn,
        jnp.asarray(image),
        None,
        repeats=1,
        batch_size=args.batch,
        eps=1e-8,
        **options,
    ).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    rf = compiled(feature_fn, jnp.asarray(image), None)
    rf.block_until_ready()
    run_s = time.perf_counter() - start
    print(
        f"compiled occlusion_map: compile {compile_s:.1f} s, run {run_s:.1f} s "
        f"({run_s / n_centres * 1e3:.1f} ms per centre); map {rf.shape}, "
        f"range [{float(rf.min()):.2f}, {float(rf.max()):.2f}]"
    )
    print(
        f"speed-up over the per-centre loop: {loop_total / run_s:.2f}x "
        f"(x5 repeats: {5 * loop_total / run_s:.2f}x); including compilation: "
        f"{loop_total / (run_s + compile_s):.2f}x"
    )


if __name__ == "__main__":
    main()
