"""Peak memory and time of the neural tower's forward+backward: materialized vs blockwise attention.

  python benchmarks/attention_memory.py [--neurons 1000,2500,5000,10000] [--batch 8]
      [--implementations materialized,blockwise] [--limit-gb 4] [--repeats 2]

The paper's neural tower (d_model 32, one head, MLP N -> 1024 -> 1024) is differentiated with
respect to its parameters (loss = mean of the squared feature map) for every N and attention
implementation. Each case runs in a fresh subprocess, so that one case's memory cannot hide
another's and an out-of-memory failure is reported instead of taking the benchmark down. Per case:

* ``xla_temp_gb``: the temporary buffers XLA's buffer assignment plans for the compiled program
  (``compiled.memory_analysis()``) — the program's own peak working memory, exact and
  deterministic; it is read after compiling and BEFORE running.
* ``peak_gb``: measured peak — on CPU the process's peak resident set (VmHWM, everything: Python,
  JAX, compiler, parameters), on a GPU the device's ``peak_bytes_in_use``.
* ``seconds``: wall time of one forward+backward (best of ``--repeats`` after a warm-up call).

A case whose XLA plan exceeds ``--limit-gb`` (default 4 GB: the machine is shared) is not run and
is reported as "does not fit"; the materialized (B, N, N) logits alone need 4 B N^2 bytes.
Default batch: 8 on a CPU, the paper's 128 on a GPU/TPU. The allocator environment
(``MALLOC_*``, ``XLA_FLAGS``) is printed with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys

ALLOCATOR_VARS = (
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "XLA_FLAGS",
)


def _rss_peak_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def run_case(n_neurons: int, implementation: str, batch: int, limit_gb: float, repeats: int):
    """One measurement (runs inside the child process); returns a JSON-able dict."""
    import time

    import jax
    import jax.numpy as jnp
    import numpy as np

    from dina_jax.config import get_base_config
    from dina_jax.models import NeuralTower

    neural = get_base_config().model.neural
    tower = NeuralTower(
        n_neurons=n_neurons,
        d_model=neural.d_model,
        num_heads=neural.num_heads,
        mlp_hidden=neural.mlp_hidden,
        attention=implementation,
        block_size=neural.block_size,
    )
    rng = np.random.default_rng(0)
    responses = jnp.asarray(rng.standard_normal((batch, n_neurons)), jnp.float32)
    params = jax.jit(tower.init)(jax.random.PRNGKey(0), responses[:1])["params"]

    def loss(params, responses):
        return jnp.mean(tower.apply({"params": params}, responses) ** 2)

    step = jax.jit(jax.value_and_grad(loss))
    compiled = step.lower(params, responses).compile()
    analysis = compiled.memory_analysis()
    temp_gb = analysis.temp_size_in_bytes / 1e9
    result = {
        "n_neurons": n_neurons,
        "implementation": implementation,
        "batch": batch,
        "xla_temp_gb": temp_gb,
        "nxn_logits_gb": 4 * batch * n_neurons**2 / 1e9,
    }
    if temp_gb > limit_gb:
        result["status"] = f"does not fit (XLA plans {temp_gb:.1f} GB > limit {limit_gb:g} GB)"
        return result
    device = jax.devices()[0]
    jax.block_until_ready(compiled(params, responses))  # warm-up: first-touch page faults
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(params, responses))
        times.append(time.perf_counter() - start)
    stats = device.memory_stats() or {}
    peak = stats.get("peak_bytes_in_use", _rss_peak_bytes())
    result.update(status="ok", seconds=min(times), peak_gb=peak / 1e9)
    return result


def _device_name() -> str:
    import jax

    device = jax.devices()[0]
    name = f"{device.platform}: {device.device_kind}"
    if device.platform == "cpu":
        cpu = platform.processor() or "cpu"
        try:
            with open("/proc/cpuinfo") as f:
                models = [line.split(":", 1)[1].strip() for line in f if "model name" in line]
            cpu = f"{models[0]} x {len(models)} cores" if models else cpu
        except OSError:
            pass
        name += f" ({cpu})"
    return name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--neurons", default="1000,2500,5000,10000")
    parser.add_argument("--implementations", default="materialized,blockwise")
    parser.add_argument("--batch", type=int, default=0, help="0: 8 on CPU, 128 on GPU/TPU")
    parser.add_argument("--limit-gb", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", default="", help="also write the rows to this file")
    parser.add_argument("--case", default="", help=argparse.SUPPRESS)  # child mode: N,impl
    args = parser.parse_args()

    if args.case:
        n, implementation = args.case.split(",")
        print(json.dumps(run_case(int(n), implementation, args.batch, args.limit_gb, args.repeats)))
        return

    import jax

    batch = args.batch or (8 if jax.default_backend() == "cpu" else 128)
    print(f"device: {_device_name()}")
    for name in ALLOCATOR_VARS:
        print(f"{name}={os.environ.get(name, '(unset)')}")
    print(f"batch {batch}, d_model 32, 1 head, limit {args.limit_gb:g} GB\n")
    header = "| N | implementation | XLA temp (GB) | B*N^2 logits (GB) | peak (GB) | fwd+bwd (s) |"
    print(header)
    print("|" + "---|" * 6)
    rows = []
    for n in [int(x) for x in args.neurons.split(",")]:
        for implementation in args.implementations.split(","):
            command = [
                sys.executable,
                os.path.abspath(__file__),
                f"--case={n},{implementation}",
                f"--batch={batch}",
                f"--limit-gb={args.limit_gb}",
                f"--repeats={args.repeats}",
            ]
            child = subprocess.run(command, capture_output=True, text=True)
            if child.returncode != 0:
                tail = (child.stderr.strip().splitlines() or ["?"])[-1]
                row = {
                    "n_neurons": n,
                    "implementation": implementation,
                    "status": "failed: " + tail,
                }
                if child.returncode < 0:
                    row["status"] = f"killed (signal {-child.returncode}, out of memory?)"
            else:
                row = json.loads(child.stdout.strip().splitlines()[-1])
            rows.append(row)
            if row.get("status") == "ok":
                cells = (
                    f"{row['xla_temp_gb']:.3f}",
                    f"{row['nxn_logits_gb']:.2f}",
                    f"{row['peak_gb']:.2f}",
                    f"{row['seconds']:.2f}",
                )
            else:
                temp = row.get("xla_temp_gb")
                cells = (
                    "-" if temp is None else f"{temp:.1f}",
                    f"{4 * batch * n * n / 1e9:.2f}",
                    row["status"],
                    "-",
                )
            print(f"| {n:,} | {implementation} | " + " | ".join(cells) + " |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
