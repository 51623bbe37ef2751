"""Where the image tower's time goes: a jax.profiler trace of its compiled forward + backward.

    python benchmarks/profile_image_tower.py                    # paper size, batch 32
    python benchmarks/profile_image_tower.py --block dsnet      # DS-Net's full block
    python benchmarks/profile_image_tower.py --config tiny --batch 4 --top 8

Compiles the gradient of the InfoNCE loss with respect to the image tower (the side-by-side
row "image tower forward+backward"), runs it once to warm up, traces one more call, and sums the
duration of every XLA op of that call by the layer that emitted it (the ``op_name`` metadata of
the compiled HLO: ``stage1_block2/mlp_in``, ``merge1``, the attention einsums, ...). Prints three
tables: by kind of sub-layer (all blocks together), by HLO op type, and by layer. Op time is
summed over XLA's threads, so it can exceed the wall time. Nothing is written outside a
temporary folder.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

import dina_jax
from dina_jax import infonce

INSTRUCTION = re.compile(r'^\s*%?([\w.\-]+) = .*?metadata=\{op_name="([^"]*)"', re.M)


def layer_of(op_name: str) -> tuple[str, str]:
    """HLO op_name metadata -> (layer, kind): ("stage1_block2/mlp_in", "mlp_in")."""
    match = re.search(r"encode/(.*)", op_name)
    parts = (match.group(1) if match else op_name.rsplit("/", 1)[-1]).split("/")
    if parts[0].startswith("stage") and len(parts) > 1:
        return "/".join(parts[:2]), re.sub(r"\d+$", "", parts[1])
    return parts[0], re.sub(r"\d+$", "", parts[0])


def op_durations(trace_dir: str) -> list[tuple[str, float]]:
    """(HLO op, microseconds) of every XLA op in the newest trace under ``trace_dir``."""
    (path,) = sorted(glob.glob(os.path.join(trace_dir, "plugins/profile/*/*.trace.json.gz")))[-1:]
    with gzip.open(path) as f:
        events = json.load(f)["traceEvents"]
    return [
        (event["args"]["hlo_op"], float(event["dur"]))
        for event in events
        if event.get("ph") == "X" and (event.get("args") or {}).get("hlo_op")
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="base", help="config name or file (default: base)")
    parser.add_argument("--block", choices=("paper", "dsnet"), help="model.image.block")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--top", type=int, default=20, help="rows per table")
    args = parser.parse_args(argv)

    config = dina_jax.load_config(args.config)
    if args.block:
        config.model.image.block = args.block
    model = dina_jax.build_model(config, 8, image_mean=0.0, image_std=1.0)
    params = dina_jax.init_params(model, jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.normal(size=(args.batch, *model.input_hw)), jnp.float32)
    latent = tuple(config.model.latent_hw)
    z_neural = jnp.asarray(rng.normal(size=(args.batch, *latent)), jnp.float32)

    def loss(image_params, x):
        merged = {**params, "image_tower": image_params}
        z_image = model.apply({"params": merged}, x, method="encode_images")
        return infonce(z_image, z_neural, config.loss.temperature)[0]

    grad = jax.jit(jax.grad(loss))
    compiled = grad.lower(params["image_tower"], images).compile()
    names = dict(INSTRUCTION.findall(compiled.as_text()))
    jax.block_until_ready(compiled(params["image_tower"], images))
    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir)
        start = time.perf_counter()
        jax.block_until_ready(compiled(params["image_tower"], images))
        wall = time.perf_counter() - start
        jax.profiler.stop_trace()
        durations = op_durations(trace_dir)

    by_kind, by_type, by_layer = (collections.Counter() for _ in range(3))
    for op, micros in durations:
        layer, kind = layer_of(names.get(op, "?"))
        by_kind[kind] += micros
        by_type[op.split(".")[0]] += micros
        by_layer[layer] += micros
    total = sum(by_type.values())
    print(
        f"device: {jax.device_count()} x {jax.devices()[0].platform}, jax {jax.__version__}, "
        f"config {args.config}, block {config.model.image.block}, batch {args.batch}"
    )
    print(
        f"traced call {wall:.2f} s wall, {total / 1e6:.2f} s of XLA op time ({len(durations)} ops)"
    )
    for title, counter in (("sub-layer", by_kind), ("HLO op type", by_type), ("layer", by_layer)):
        print(f"-- by {title}")
        for name, micros in counter.most_common(args.top):
            print(f"{micros / 1e3:9.1f} ms {100 * micros / total:5.1f}%  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
