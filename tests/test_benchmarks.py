"""The benchmark scripts run at CPU size, so they cannot rot: benchmarks/accelerator.py (--small)
before a session that has a GPU, and the image-tower profile."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_script(*args, timeout=900):
    """Runs ``python *args`` from the repository root on one CPU device; its stdout lines."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    result = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.splitlines()


def test_accelerator_script_runs_at_cpu_size():
    lines = _run_script("benchmarks/accelerator.py", "--small", "--steps", "1")
    assert lines[0].startswith("device: 1 x cpu")
    agreement = [line for line in lines if line.startswith("attention agreement")]
    assert len(agreement) == 2 and all("max |diff|" in line for line in agreement)
    for dtype in ("float32", "bfloat16"):
        (row,) = [line for line in lines if line.startswith(f"train step {dtype}")]
        assert "examples/s" in row and "GFLOP/step" in row and "loss nan" not in row
    (occ,) = [line for line in lines if line.startswith("occlusion map")]
    assert "64 centres" in occ and "map in [0.00, 1.00]" in occ


def test_image_tower_profile_attributes_the_op_time_to_layers():
    lines = _run_script("benchmarks/profile_image_tower.py", "--config", "tiny", "--batch", "4")
    assert lines[0].startswith("device: 1 x cpu") and "block paper, batch 4" in lines[0]
    layers = lines[lines.index("-- by layer") + 1 :]
    shares = [float(line.split("%")[0].split()[-1]) for line in layers]
    assert 0 < sum(shares) <= 100.5
    # Both stages own some of the time.
    named = " ".join(layers)
    assert "stage1_block1/" in named and "stage2_block1/" in named
