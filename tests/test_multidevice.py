"""Device invariance of the loss and the gradient: 8 devices == 1 device at the same global batch.

The 8 devices are XLA's fake host devices (``--xla_force_host_platform_device_count=8``). That
flag must be set before JAX starts, so the devices live in a subprocess that runs this file as a
script; the other test modules keep their single device. The script writes an ``.npz`` that the
test compares:

* ``compute_grads`` (the gradient of ``train_step``) under ``jax.pmap`` on 8 devices, each with
  2 of the 16 examples, against the same function on 1 device with all 16: loss and gradients
  agree to 1e-5, because the towers' embeddings are all-gathered before the loss and each
  device's gradient through its own examples is summed over devices;
* the naive data-parallel loss (InfoNCE over each device's 2 local examples, then averaged)
  is a different number: it would train a different, easier objective.
"""

import functools
import os
import subprocess
import sys

import numpy as np
import pytest

N_DEVICES = 8
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _device_run(out_path: str, cache_dir: str) -> None:
    """Runs in the 8-device subprocess (XLA_FLAGS already set); writes the numbers to compare."""
    import jax
    from jax import lax

    from dina_jax import losses
    from dina_jax.config import load_config
    from dina_jax.data import pipeline
    from dina_jax.models import build_model
    from dina_jax.training import state as state_lib
    from dina_jax.training import step as step_lib

    assert jax.local_device_count() == N_DEVICES, jax.devices()
    config = load_config("tiny")
    config.data.cache_dir = cache_dir
    dataset = pipeline.load_dataset(config)
    batch = config.train.batch_size
    rows = dataset.split.train[:batch]
    images, responses = dataset.images[rows], dataset.responses[rows]
    model = build_model(
        config, dataset.n_neurons, image_mean=dataset.image_mean, image_std=dataset.image_std
    )
    state = state_lib.create_train_state(config, model, jax.random.PRNGKey(0), 8)
    temperature = config.loss.temperature

    def grads_and_loss(params, x, r, rng, centre_neural=False):
        grads, metrics = step_lib.compute_grads(
            params,
            model.apply,
            x,
            r,
            rng,
            temperature=temperature,
            axis_name="batch",
            centre_neural=centre_neural,
        )
        return grads, metrics["loss"]

    def naive_loss(params, x, r):
        z_img, z_neu, _ = model.apply({"params": params}, x, r)
        local, _ = losses.infonce(z_img, z_neu, temperature)  # local negatives only
        return lax.pmean(local, "batch")

    results = {}
    # Also with the batch-centred neural maps (loss.centre_neural): the centre is a mean over
    # the global batch, so it must be taken after the all-gather.
    for prefix, centre in (("", False), ("centred_", True)):
        for n in (1, N_DEVICES):
            devices = jax.devices()[:n]
            fn = jax.pmap(
                functools.partial(grads_and_loss, centre_neural=centre),
                axis_name="batch",
                devices=devices,
            )
            grads, loss = fn(
                step_lib.replicate(state.params, devices),
                pipeline.shard(images, n),
                pipeline.shard(responses, n),
                step_lib.replicate(state.rng, devices),
            )
            flat = [np.asarray(leaf) for leaf in jax.tree.leaves(grads)]
            # After the psum every device holds the same (global) gradient.
            for leaf in flat:
                assert all(np.array_equal(leaf[0], leaf[d]) for d in range(n))
            results[f"{prefix}loss_{n}"] = np.asarray(loss)[0]
            for i, leaf in enumerate(flat):
                results[f"{prefix}grad_{n}_{i}"] = leaf[0]
    naive = jax.pmap(naive_loss, axis_name="batch")(
        step_lib.replicate(state.params),
        pipeline.shard(images, N_DEVICES),
        pipeline.shard(responses, N_DEVICES),
    )
    results["loss_naive"] = np.asarray(naive)[0]
    results["n_leaves"] = len(flat)
    np.savez(out_path, **results)


@pytest.fixture(scope="module")
def device_numbers(tiny_config, tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("multidevice") / "numbers.npz"
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={N_DEVICES}")
    env["JAX_PLATFORMS"] = "cpu"
    result = subprocess.run(
        [sys.executable, os.path.abspath(__file__), str(out), tiny_config.data.cache_dir],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    with np.load(out) as data:
        return {key: data[key] for key in data.files}


def test_loss_on_8_devices_equals_1_device(device_numbers):
    assert abs(device_numbers["loss_8"] - device_numbers["loss_1"]) <= 1e-5
    assert np.isfinite(device_numbers["loss_1"])


def test_gradients_on_8_devices_equal_1_device(device_numbers):
    n_leaves = int(device_numbers["n_leaves"])
    assert n_leaves > 10
    for i in range(n_leaves):
        one, eight = device_numbers[f"grad_1_{i}"], device_numbers[f"grad_{N_DEVICES}_{i}"]
        assert np.abs(one).max() > 0, i  # every parameter gets a gradient
        np.testing.assert_allclose(eight, one, rtol=1e-5, atol=1e-5 * np.abs(one).max())


def test_batch_centred_loss_and_gradients_on_8_devices_equal_1_device(device_numbers):
    one, eight = device_numbers["centred_loss_1"], device_numbers["centred_loss_8"]
    assert abs(eight - one) <= 1e-5 and np.isfinite(one)
    assert abs(one - device_numbers["loss_1"]) > 1e-3  # the centring changes the objective
    for i in range(int(device_numbers["n_leaves"])):
        g1 = device_numbers[f"centred_grad_1_{i}"]
        g8 = device_numbers[f"centred_grad_{N_DEVICES}_{i}"]
        np.testing.assert_allclose(g8, g1, rtol=1e-5, atol=1e-5 * np.abs(g1).max())


def test_local_negatives_alone_give_a_different_loss(device_numbers):
    """Without the gather each device contrasts 2 examples instead of 16: not the same loss."""
    assert abs(device_numbers["loss_naive"] - device_numbers["loss_1"]) > 0.5


if __name__ == "__main__":
    _device_run(sys.argv[1], sys.argv[2])
