"""The glibc malloc settings of dina_jax/allocator.py: applied on import, respectful of the
user's MALLOC_* variables, and measured against the kernel's page-fault counter."""

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)

# Each compiled call allocates a 64 MB temporary (a cumulative sum XLA cannot fuse away).
PROBE = """
import json, resource
import dina_jax
from dina_jax import allocator
import jax, jax.numpy as jnp

@jax.jit
def f(x):
    y = jnp.cumsum(jnp.sin(x), axis=0)
    return jnp.cumsum(y[::-1], axis=1).sum()

x = jnp.ones((4096, 4096))
for _ in range(10):  # glibc's heap settles within a few calls
    f(x).block_until_ready()
start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    f(x).block_until_ready()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / 3
print(json.dumps({"applied": allocator.tune(), "faults": faults}))
"""


def _probe(**env_overrides) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.pop("DINA_JAX_MALLOC", None)
    env.update(env_overrides)
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_tuned_allocator_reuses_the_step_buffers_instead_of_faulting_them_in():
    tuned, default = _probe(), _probe(DINA_JAX_MALLOC="default")
    assert tuned["applied"] == {
        "MALLOC_ARENA_MAX": 1,
        "MALLOC_MMAP_THRESHOLD_": 1 << 30,
        "MALLOC_TRIM_THRESHOLD_": 1 << 30,
    }
    assert default["applied"] == {}
    # glibc's defaults map the 64 MB temporaries afresh each call (16,384 pages each); tuned,
    # the freed blocks are reused once the heap has settled.
    assert default["faults"] > 16384, default
    assert tuned["faults"] < default["faults"] / 100, (tuned, default)


def test_a_users_malloc_variable_wins():
    probe = _probe(MALLOC_ARENA_MAX="4")
    assert "MALLOC_ARENA_MAX" not in probe["applied"]
    assert set(probe["applied"]) == {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"}
