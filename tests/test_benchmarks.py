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
    lines = _run_script("benchmarks/op_profile.py", "--config", "tiny", "--batch", "4")
    assert lines[0].startswith("device: 1 x cpu") and "block paper, batch 4" in lines[0]
    layers = lines[lines.index("-- by layer") + 1 :]
    shares = [float(line.split("%")[0].split()[-1]) for line in layers]
    assert 0 < sum(shares) <= 100.5
    # Both stages own some of the time.
    named = " ".join(layers)
    assert "stage1_block1/" in named and "stage2_block1/" in named


def test_op_profile_names_fusions_by_their_first_op_and_splits_a_step_by_tower():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import op_profile

    hlo = "\n".join(
        [
            "%fused_computation.17 (p0: f32[4,8], p1: f32[4,8]) -> f32[4,4] {",
            '  %dot.3 = f32[4,4]{1,0} dot(%p0, %p1), metadata={op_name="jit(f)/a/dot_general"}',
            "}",
            "%wrapper.2 (p0: f32[4,8]) -> f32[4,4] {",
            "  %ynn_fusion.17 = f32[4,4]{1,0} fusion(%p0, %p0), calls=%fused_computation.17",
            "}",
            "%body.9 (p: f32[4,8]) -> f32[4,8] {",
            "  ROOT %dot.124 = f32[4,8]{1,0} dot(%p, %p), lhs_contracting_dims={0}",
            "}",
            "ENTRY %main.5 (x: f32[4,8]) -> f32[4,4] {",
            "  %call.1 = f32[4,4]{1,0} call(%x), to_apply=%wrapper.2",
            '  %exp.4 = f32[4,8]{1,0} exponential(%x), metadata={op_name="jit(f)/b/exp"}',
            "  %while.7 = f32[4,8]{1,0} while(%x), condition=%cond.8, body=%body.9, "
            'metadata={op_name="jit(f)/c/while"}',
            "}",
        ]
    )
    names = op_profile.op_names(hlo)
    assert names["exp.4"] == "jit(f)/b/exp"
    assert names["ynn_fusion.17"] == "jit(f)/a/dot_general"  # from the computation it calls
    assert names["call.1"] == "jit(f)/a/dot_general"  # through a call of a call
    assert names["dot.124"] == "jit(f)/c/while"  # unnamed in a loop body: the loop's name
    tower = "jit(_fun)/jvp(DualTower)/DualTower.encode_{}/{}_tower/"
    image = tower.format("images", "image") + "image_tower.encode/stage1_block2/mlp_in/dot"
    neural = tower.format("neurons", "neural") + "population_attention/while/body/exp"
    assert op_profile.step_layer_of(image) == ("image/stage1_block2/mlp_in", "image/mlp_in")
    assert op_profile.step_layer_of(neural)[0] == "neural/population_attention"
    assert op_profile.step_layer_of("jit(_fun)/jvp()/log_softmax/sub")[0] == "loss"
    assert op_profile.step_layer_of("flat_args[12]/add")[0] == "optimizer"


def test_matmul_peak_counts_flops_as_xla_does_and_reports_every_shape():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import jax
    import jax.numpy as jnp
    import matmul_peak

    for _, lhs, rhs, kind in matmul_peak.SHAPES:
        if lhs[0] * lhs[1] > 1 << 20:  # the square product compiles slowly; its count is m k n too
            continue
        lowered = jax.jit(lambda a, b, s=matmul_peak.SUBSCRIPTS[kind]: jnp.einsum(s, a, b)).lower(
            jax.ShapeDtypeStruct(lhs, jnp.float32), jax.ShapeDtypeStruct(rhs, jnp.float32)
        )
        cost = lowered.compile().cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        assert cost["flops"] == matmul_peak.flops(lhs, rhs, kind), (lhs, rhs, kind)

    lines = _run_script("benchmarks/matmul_peak.py", "--reps", "1", "--rounds", "1")
    rows = [line for line in lines if "GFLOP/s" in line]
    assert len(rows) == len(matmul_peak.SHAPES)
    assert all(float(row.split("|")[-1].split()[0]) > 0 for row in rows)
