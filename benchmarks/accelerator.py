"""One script for a session on a GPU (or TPU): attention agreement, the train step, occlusion.

  python benchmarks/accelerator.py            # paper sizes; ~8 minutes on one H100 / H200
  python benchmarks/accelerator.py --small    # the same code paths at a CPU size (tests run it)

Prints, each line a number to record with the device name:

1. the device;
2. the population attention at N = 10,000 neurons in bfloat16: cuDNN's flash kernel against the
   project's blockwise kernel (max and mean absolute difference, with and without a key mask);
   without a GPU (or with ``--small``), blockwise against the materialized formula;
3. the paper-size train step (DINA, N = 10,000, global batch 128, both towers, InfoNCE, both
   optimizers), compiled once with ``pmap`` over the local devices, in float32 and in bfloat16:
   seconds per step, examples per second, peak device memory (the allocator's high-water mark
   since start, so the bfloat16 row can only be higher or equal; on a CPU the process's peak
   RSS), and model FLOP utilisation = XLA's cost-analysis FLOPs per step / step time / the
   device's peak (dense bf16 tensor-core peak for bfloat16, TF32 for float32, which XLA uses for
   float32 matmuls on these GPUs by default);
4. the occlusion map of one 68 x 270 image over the paper's 4,590 centres (stride 2).
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np
from train_step import time_train_step  # benchmarks/ is the script's folder

from dina_jax.analysis import occlusion
from dina_jax.analysis.stages import occlusion_batch
from dina_jax.config import get_base_config, load_config
from dina_jax.models import attention, build_model
from dina_jax.models.feature_fns import image_feature_fn

# Dense peak FLOP/s per device (no sparsity) by device kind: (bfloat16, TF32).
PEAK_FLOPS = {
    "H100": (989e12, 494e12),
    "H200": (989e12, 494e12),
    "A100": (312e12, 156e12),
}


def _peak_flops(device, dtype: str) -> float | None:
    for kind, (bf16, tf32) in PEAK_FLOPS.items():
        if kind in device.device_kind:
            return bf16 if dtype == "bfloat16" else tf32
    return None


def _peak_memory_gib(device) -> float:
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)


def attention_agreement(n_neurons: int, on_gpu: bool) -> None:
    rng = np.random.default_rng(0)
    shape = (2, n_neurons, 1, 32)  # (B, N, H, D): the paper's one head of d_model = 32
    q, k, v = (jnp.asarray(rng.normal(size=shape), jnp.bfloat16) for _ in range(3))
    keep = jnp.asarray(rng.random((2, n_neurons)) > 0.1)
    reference = "cudnn" if on_gpu else "materialized"
    for mask in (None, keep):
        outs = {
            impl: np.asarray(
                attention.dot_product_attention(q, k, v, key_mask=mask, implementation=impl),
                np.float32,
            )
            for impl in ("blockwise", reference)
        }
        diff = np.abs(outs["blockwise"] - outs[reference])
        print(
            f"attention agreement, N={n_neurons}, bfloat16, {reference} vs blockwise, "
            f"{'key mask' if mask is not None else 'no mask'}: max |diff| {diff.max():.3g}, "
            f"mean |diff| {diff.mean():.3g}, max |out| {np.abs(outs[reference]).max():.3g}",
            flush=True,
        )


def train_step(config, n_neurons: int, batch: int, dtype: str, steps: int) -> None:
    config = config.copy_and_resolve_references()
    config.model.dtype = dtype
    device = jax.local_devices()[0]
    timing = time_train_step(config, n_neurons, batch, steps)
    flops, step_s, peak = timing["flops"], timing["step_s"], _peak_flops(device, dtype)
    mfu = f"{100 * flops / step_s / peak:.1f}%" if flops and peak else "n/a"
    print(
        f"train step {dtype}, N={n_neurons}, batch {batch} on {jax.local_device_count()} "
        f"device(s): {step_s:.4f} s/step, {batch / step_s:.1f} examples/s, compile "
        f"{timing['compile_s']:.1f} s, peak memory {_peak_memory_gib(device):.2f} GiB, "
        f"{(flops or 0) / 1e9:.1f} GFLOP/step per device, MFU {mfu}, loss {timing['loss']:.3f}",
        flush=True,
    )


def occlusion_one_image(config, stride: int) -> None:
    model = build_model(config, n_neurons=16, image_mean=0.5, image_std=0.25)
    params = jax.jit(
        lambda key: model.init(key, jnp.zeros((1, *config.model.input_hw)), method="encode_images")
    )(jax.random.key(0))["params"]
    feature_fn = image_feature_fn(model, params)
    image = np.random.default_rng(1).random(config.model.input_hw, dtype=np.float32)
    an = config.analysis.occlusion
    batch = occlusion_batch(an.batch)
    options = dict(sigma=an.sigma, stride=stride, alpha=an.alpha, batch_size=batch)
    start = time.perf_counter()
    jax.block_until_ready(occlusion.occlusion_map(feature_fn, image, **options))
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    rf = jax.block_until_ready(occlusion.occlusion_map(feature_fn, image, **options))
    run_s = time.perf_counter() - start
    centres = np.prod([len(g) for g in occlusion.occlusion_grid(*image.shape, stride)])
    print(
        f"occlusion map, one image, {centres} centres (stride {stride}, chunks of {batch}): "
        f"{run_s:.2f} s ({1e3 * run_s / centres:.2f} ms per centre), first call with compile "
        f"{first_s:.1f} s, map in [{float(rf.min()):.2f}, {float(rf.max()):.2f}]",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="CPU sizes (tiny config)")
    parser.add_argument("--steps", type=int, default=5, help="timed train steps")
    args = parser.parse_args()
    device = jax.devices()[0]
    on_gpu = device.platform == "gpu" and not args.small
    print(
        f"device: {jax.local_device_count()} x {device.platform} ({device.device_kind}), "
        f"jax {jax.__version__}, {os.cpu_count()} CPUs",
        flush=True,
    )
    if args.small:
        config, n_neurons, batch, stride = load_config("tiny"), 300, 16, 17
    else:
        config, n_neurons, batch, stride = get_base_config(), 10_000, 128, 2
    attention_agreement(n_neurons, on_gpu)
    for dtype in ("float32", "bfloat16"):
        train_step(config, n_neurons, batch, dtype, args.steps)
    occlusion_one_image(config, stride)


if __name__ == "__main__":
    main()
