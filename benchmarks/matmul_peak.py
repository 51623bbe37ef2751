"""Float32 matmul throughput of this machine, for XLA (jax) and for PyTorch, at the shapes that
dominate the side-by-side rows: a large square product (the cores' practical peak), the image
tower's block MLP at one micro-batch, and the population attention's 500 x 500 x 32 block products
in each orientation the flash kernel uses.

    python benchmarks/matmul_peak.py                       # jax (XLA:CPU)
    /tmp/tv/bin/python benchmarks/matmul_peak.py --torch   # the PyTorch port's venv

The numbers bound what any implementation of the same mathematics can reach on these cores: a
row's floating-point work (XLA's cost analysis) divided by the peak is its time if it did nothing
but matmuls at full speed (benchmarks/README.md, "The roofline").
Each product is timed as a chain of ``--reps`` dependent calls (its output feeds a scalar into the
next call's smaller operand, so nothing is hoisted or skipped and the added work stays small
beside the product); the best of ``--rounds`` chains counts.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

# (name, lhs shape, rhs shape, contraction): "nn" = (m, k) @ (k, n); "nt" = (m, k) @ (n, k)^T;
# "tn" = (k, m)^T @ (k, n).
SUBSCRIPTS = {"nn": "mk,kn->mn", "nt": "mk,nk->mn", "tn": "km,kn->mn"}
SHAPES = (
    ("square 2048", (2048, 2048), (2048, 2048), "nn"),
    ("MLP in: 8,192 tokens, 64 -> 256", (8192, 64), (64, 256), "nn"),
    ("MLP out: 8,192 tokens, 256 -> 64", (8192, 256), (256, 64), "nn"),
    ("MLP in: 2,048 tokens, 128 -> 512", (2048, 128), (128, 512), "nn"),
    ("attention logits q k^T (500x32, 500x32)", (500, 32), (500, 32), "nt"),
    ("attention P v (500x500, 500x32)", (500, 500), (500, 32), "nn"),
    ("attention P^T dO (500x500, 500x32)", (500, 500), (500, 32), "tn"),
    ("attention (dO^T) P (32x500, 500x500)", (32, 500), (500, 500), "nn"),
)


def flops(lhs, rhs, kind):
    m = lhs[1] if kind == "tn" else lhs[0]
    k = lhs[0] if kind == "tn" else lhs[1]
    n = rhs[0] if kind == "nt" else rhs[1]
    return 2.0 * m * k * n


def perturbs_lhs(lhs, rhs) -> bool:
    """Whether the chain feeds its scalar into the lhs (the smaller operand) or the rhs."""
    return lhs[0] * lhs[1] <= rhs[0] * rhs[1]


def time_jax(lhs_shape, rhs_shape, kind, reps, rounds):
    import jax
    import jax.numpy as jnp

    subscripts = SUBSCRIPTS[kind]
    on_lhs = perturbs_lhs(lhs_shape, rhs_shape)
    key_a, key_b = jax.random.split(jax.random.key(0))
    a = jax.random.normal(key_a, lhs_shape, jnp.float32)
    b = jax.random.normal(key_b, rhs_shape, jnp.float32)

    @jax.jit
    def chain(a, b):
        def body(_, carry):
            nudge = carry * 1e-30
            out = (
                jnp.einsum(subscripts, a + nudge, b)
                if on_lhs
                else jnp.einsum(subscripts, a, b + nudge)
            )
            return out[0, 0]

        return jax.lax.fori_loop(0, reps, body, jnp.zeros((), jnp.float32))

    chain(a, b).block_until_ready()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        chain(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return best / reps, f"jax {jax.__version__} {jax.devices()[0].platform}"


def time_torch(lhs_shape, rhs_shape, kind, reps, rounds):
    import torch

    generator = torch.Generator().manual_seed(0)
    a = torch.randn(lhs_shape, generator=generator)
    b = torch.randn(rhs_shape, generator=generator)

    on_lhs = perturbs_lhs(lhs_shape, rhs_shape)

    def product(nudge):
        x, y = (a + nudge, b) if on_lhs else (a, b + nudge)
        if kind == "nt":
            return x @ y.T
        if kind == "tn":
            return x.T @ y
        return x @ y

    with torch.no_grad():
        product(0.0)
        best = float("inf")
        for _ in range(rounds):
            carry = torch.zeros(())
            start = time.perf_counter()
            for _ in range(reps):
                carry = product(carry * 1e-30)[0, 0]
            best = min(best, time.perf_counter() - start)
    return best / reps, f"torch {torch.__version__}, {torch.get_num_threads()} threads"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--torch", action="store_true", help="time PyTorch instead of jax")
    parser.add_argument("--reps", type=int, default=0, help="calls per chain (0: by size)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    timer = time_torch if args.torch else time_jax
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    for name, lhs, rhs, kind in SHAPES:
        work = flops(lhs, rhs, kind)
        reps = args.reps or max(3, int(2e10 // work))
        seconds, version = timer(lhs, rhs, kind, reps, args.rounds)
        speed = work / seconds / 1e9
        print(f"{version:>32} | {name:<42} | {seconds * 1e3:8.3f} ms | {speed:6.1f} GFLOP/s")


if __name__ == "__main__":
    main()
