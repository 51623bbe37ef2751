"""Where the time goes: a jax.profiler trace of a compiled program, op time summed by layer.

    python benchmarks/op_profile.py                         # image tower, paper size, batch 32
    python benchmarks/op_profile.py --block dsnet           # DS-Net's full block
    python benchmarks/op_profile.py --set model.image.micro_batch=32 --set model.image.remat=False
    python benchmarks/op_profile.py --config tiny --batch 4 --top 8
    python benchmarks/op_profile.py --step --config synthetic   # the demo's whole train step

By default it compiles the gradient of the InfoNCE loss with respect to the image tower (the
side-by-side row "image tower forward+backward"); with ``--step`` the training loop's pmapped
train step of ``--config`` (both towers, the loss, the optimizers; random inputs, the config's
batch and simulated neuron count unless ``--batch`` / ``--neurons`` say otherwise). It runs the
program once to warm up, traces one more call, and sums the duration of every XLA op of that call
by the layer that emitted it (the ``op_name`` metadata of the compiled HLO:
``stage1_block2/mlp_in``, ``merge1``, the attention einsums, ...; an op without metadata, such
as XLA:CPU's YNNPACK fusions, takes the name of the first op inside it, else that of the loop or
fusion around it: :func:`op_names`). Prints three tables: by kind of sub-layer (all blocks
together), by HLO op type, and by layer. In ``--step`` mode layers are prefixed ``image/``,
``neural/``, ``loss`` (the InfoNCE and what autodiff adds around the towers) and ``optimizer``
(the update and everything else outside the towers); ops that carry no name at all are listed
as ``(no op_name)``. Op time is summed over XLA's threads, so it can exceed the wall time.
Nothing is written outside a temporary folder.
"""

from __future__ import annotations

import argparse
import ast
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

INSTRUCTION = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = .*?metadata=\{op_name="([^"]*)"', re.M)
COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$")
ASSIGNMENT = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = ")
CALLEE = re.compile(r"\b(?:calls|to_apply|body|condition)=%?([\w.\-]+)")


def op_names(hlo_text: str) -> dict[str, str]:
    """HLO instruction -> its ``op_name`` metadata. An instruction without metadata (XLA:CPU's
    YNNPACK fusions, the ops of a custom VJP's loops) takes the name of the first instruction with
    metadata in a computation it calls, else that of the instruction that calls its own
    computation (a while loop, a fusion), recursively."""
    names = dict(INSTRUCTION.findall(hlo_text))
    home: dict[str, str] = {}  # instruction -> the computation it is in
    callees: dict[str, list[str]] = {}  # instruction -> the computations it calls
    callers: dict[str, str] = {}  # computation -> an instruction that calls it
    called: dict[str, list[str]] = {}  # computation -> the computations its instructions call
    first: dict[str, str] = {}  # computation -> the first op_name inside it
    current = None
    for line in hlo_text.splitlines():
        header = COMPUTATION.match(line)
        if header:
            current = header.group(1)
            continue
        assignment = ASSIGNMENT.match(line)
        if current is None or not assignment:
            continue
        instruction = assignment.group(1)
        home[instruction] = current
        if instruction in names:
            first.setdefault(current, names[instruction])
        for callee in CALLEE.findall(line):
            callees.setdefault(instruction, []).append(callee)
            callers.setdefault(callee, instruction)
            called.setdefault(current, []).append(callee)

    def inside(computation: str, seen: frozenset) -> str | None:
        if computation in first:
            return first[computation]
        for callee in called.get(computation, ()):
            if callee not in seen and (name := inside(callee, seen | {callee})):
                return name
        return None

    def resolve(instruction: str, seen: frozenset = frozenset()) -> str | None:
        if instruction in names:
            return names[instruction]
        for callee in callees.get(instruction, ()):
            if name := inside(callee, frozenset({callee})):
                return name
        caller = callers.get(home.get(instruction, ""))
        if caller is not None and caller not in seen:
            return resolve(caller, seen | {instruction})
        return None

    return {instruction: name for instruction in home if (name := resolve(instruction)) is not None}


def layer_of(op_name: str) -> tuple[str, str]:
    """HLO op_name metadata -> (layer, kind): ("stage1_block2/mlp_in", "mlp_in")."""
    match = re.search(r"encode/(.*)", op_name)
    parts = (match.group(1) if match else op_name.rsplit("/", 1)[-1]).split("/")
    if parts[0].startswith("stage") and len(parts) > 1:
        return "/".join(parts[:2]), re.sub(r"\d+$", "", parts[1])
    return parts[0], re.sub(r"\d+$", "", parts[0])


def step_layer_of(op_name: str) -> tuple[str, str]:
    """op_name in a train step -> (layer, kind) with a tower prefix: ("image/stage1_block1/
    mlp_in", "image/mlp_in"), ("neural/population_attention", ...), ("loss", ...), ("optimizer",
    ...)."""
    if "image_tower" in op_name:
        layer, kind = layer_of(op_name)
        return f"image/{layer}", f"image/{kind}"
    match = re.search(r"neural_tower/(?:neural_tower\.)?([^/;]*)", op_name)
    if match:
        return f"neural/{match.group(1)}", f"neural/{match.group(1)}"
    if "jvp(" in op_name:  # differentiated, outside the towers: the loss
        return "loss", "loss"
    if op_name == "?":
        return "(no op_name)", "(no op_name)"
    return "optimizer", "optimizer"


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


def _override(text: str) -> tuple[str, object]:
    """ "a.b=value" -> ("a.b", value as a Python literal, else the string)."""
    field, sep, value = text.partition("=")
    if not sep:
        raise SystemExit(f"--set {text!r}: expected FIELD=VALUE")
    try:
        return field, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return field, value


def _image_tower_gradient(config, batch: int):
    """(jitted gradient of InfoNCE w.r.t. the image tower, its arguments)."""
    model = dina_jax.build_model(config, 8, image_mean=0.0, image_std=1.0)
    params = dina_jax.init_params(model, jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.normal(size=(batch, *model.input_hw)), jnp.float32)
    z_neural = jnp.asarray(rng.normal(size=(batch, *config.model.latent_hw)), jnp.float32)

    def loss(image_params, x):
        merged = {**params, "image_tower": image_params}
        z_image = model.apply({"params": merged}, x, method="encode_images")
        return infonce(z_image, z_neural, config.loss.temperature)[0]

    return jax.jit(jax.grad(loss)), (params["image_tower"], images)


def _train_step(config, batch: int, neurons: int):
    """(the loop's pmapped train step over the local devices, its arguments), as
    benchmarks/train_step.py builds and times it."""
    from train_step import build_train_step  # benchmarks/, beside this script

    step, args, _ = build_train_step(config, neurons or int(config.data.synthetic.n_neurons), batch)
    return step, args


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="base", help="config name or file (default: base)")
    parser.add_argument("--block", choices=("paper", "dsnet"), help="model.image.block")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="config override, e.g. model.image.micro_batch=32 (repeatable; Python literals)",
    )
    parser.add_argument("--batch", type=int, default=0, help="0: 32, or the config's with --step")
    parser.add_argument("--step", action="store_true", help="the whole train step of --config")
    parser.add_argument("--neurons", type=int, default=0, help="--step: 0 = the config's")
    parser.add_argument("--top", type=int, default=20, help="rows per table")
    args = parser.parse_args(argv)

    config = dina_jax.load_config(args.config, dict(map(_override, args.set)))
    if args.block:
        config.model.image.block = args.block
    if args.step:
        batch = args.batch or int(config.train.batch_size)
        fn, call_args = _train_step(config, batch, args.neurons)
        classify = step_layer_of
    else:
        batch = args.batch or 32
        fn, call_args = _image_tower_gradient(config, batch)
        classify = layer_of
    compiled = fn.lower(*call_args).compile()
    names = op_names(compiled.as_text())

    def call():
        nonlocal call_args
        out = compiled(*call_args)
        if args.step:  # the step donates its state: the next call takes the new one
            call_args = (out[0], *call_args[1:])
        return out

    jax.block_until_ready(call())
    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir)
        start = time.perf_counter()
        jax.block_until_ready(call())
        wall = time.perf_counter() - start
        jax.profiler.stop_trace()
        durations = op_durations(trace_dir)

    by_kind, by_type, by_layer = (collections.Counter() for _ in range(3))
    for op, micros in durations:
        layer, kind = classify(names.get(op, "?"))
        by_kind[kind] += micros
        by_type[op.split(".")[0]] += micros
        by_layer[layer] += micros
    total = sum(by_type.values())
    print(
        f"device: {jax.device_count()} x {jax.devices()[0].platform}, jax {jax.__version__}, "
        f"config {args.config}, block {config.model.image.block}, batch {batch}"
        + (" (train step)" if args.step else " (image tower forward + backward)")
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
