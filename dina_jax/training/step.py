"""The compiled train and eval steps (paper Sec. 3.3), data-parallel with ``jax.pmap``.

One training step is a single program over all local devices (axis ``"batch"``):

* every device encodes its b = B / n_devices examples with both towers;
* ``losses.infonce(..., axis_name="batch")`` all-gathers both towers' normalized maps, so every
  query is contrasted with the B - 1 negatives of the *global* batch (the loss and the gradient
  are those of one device holding the whole batch);
* the other devices' rows enter the loss as constants, so a device's gradient is the gradient
  through its own examples and the ``psum`` over devices is the gradient of the global loss;
* each tower's optimizer (``training.optim``) applies its update; the step returns the loss
  metrics, both towers' gradient norms and the learning rates it used.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from dina_jax import losses
from dina_jax.training.optim import TOWER_OF_SUBMODULE
from dina_jax.training.state import TrainState

AXIS_NAME = "batch"


def compute_grads(
    params,
    apply_fn,
    images,
    responses,
    rng,
    *,
    temperature: float,
    axis_name: str | None,
    centre_neural: bool = False,
):
    """Gradient of the global-batch InfoNCE and its metrics.

    Args:
      params: model parameters.
      apply_fn: ``model.apply``.
      images: (b, 68, 270) this device's images; responses: (b, N).
      rng: PRNG key for stochastic layers (the models have none today).
      temperature: InfoNCE temperature.
      centre_neural: InfoNCE on batch-centred neural maps (``losses.infonce``).
      axis_name: the pmap axis; ``None`` on a single device without pmap.

    Returns:
      ``(grads, metrics)``: under pmap ``grads`` is the ``psum`` over devices of each device's
      gradient through its own examples, i.e. the gradient of the global loss, identical on
      every device; ``metrics`` are those of ``losses.infonce`` over the global batch.
    """

    def loss_fn(p):
        z_img, z_neu, _ = apply_fn(
            {"params": p}, images, responses, train=True, rngs={"dropout": rng}
        )
        return losses.infonce(
            z_img, z_neu, temperature, axis_name=axis_name, centre_neural=centre_neural
        )

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    if axis_name is not None:
        grads = lax.psum(grads, axis_name)
    return grads, metrics


def train_step(
    state: TrainState,
    images,
    responses,
    *,
    temperature: float,
    schedules: dict[str, optax.Schedule],
    axis_name: str | None,
    centre_neural: bool = False,
):
    """One optimizer step on the global batch; returns ``(new_state, metrics)``.

    ``images`` (b, 68, 270) and ``responses`` (b, N) are this device's share of the global batch.
    Metrics add the pre-clipping gradient norm of each tower (``grad_norm_image``/``_neural``),
    the learning rate each tower's update used (``lr_image``/``lr_neural``, from
    ``schedules``, the optimizer's own schedules) and ``finite`` (1.0 when the loss, the
    gradients and the whole updated state are finite, see :func:`all_finite`).
    """
    rng = jax.random.fold_in(state.rng, state.step)
    if axis_name is not None:
        rng = jax.random.fold_in(rng, lax.axis_index(axis_name))
    grads, metrics = compute_grads(
        state.params,
        state.apply_fn,
        images,
        responses,
        rng,
        temperature=temperature,
        axis_name=axis_name,
        centre_neural=centre_neural,
    )
    for name, tower in TOWER_OF_SUBMODULE.items():
        metrics[f"grad_norm_{tower}"] = optax.global_norm(grads[name])
    for tower, schedule in schedules.items():
        metrics[f"lr_{tower}"] = schedule(state.step)  # optax counts updates from 0
    new_state = state.apply_gradients(grads)
    metrics["finite"] = all_finite(
        (metrics["loss"], grads, new_state.params, new_state.ema_params, new_state.opt_state)
    )
    return new_state, metrics


def all_finite(tree) -> jax.Array:
    """1.0 when every floating-point leaf of ``tree`` is finite, else 0.0 (a float32 scalar).

    One fused reduction per leaf: the train step returns it so the host loop can refuse to log
    or save a state past a NaN or Inf in the loss, the gradients or the updated parameters.
    """
    leaves = [
        jnp.all(jnp.isfinite(leaf))
        for leaf in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
    ]
    return jnp.all(jnp.stack(leaves)).astype(jnp.float32) if leaves else jnp.float32(1.0)


def eval_step(
    params,
    images,
    responses,
    mask,
    *,
    apply_fn: Callable,
    temperature: float,
    axis_name: str | None,
    centre_neural: bool = False,
):
    """InfoNCE metrics of one (possibly padded) evaluation batch over the global batch.

    ``images`` (b, 68, 270), ``responses`` (b, N) and ``mask`` (b,) (1 = real row, 0 = padding)
    are this device's share. It takes the parameters alone (not the train state) so that the
    same compiled program scores a restored checkpoint in another process.
    """
    z_img, z_neu, _ = apply_fn({"params": params}, images, responses, train=False)
    _, metrics = losses.infonce(
        z_img, z_neu, temperature, axis_name=axis_name, mask=mask, centre_neural=centre_neural
    )
    return metrics


def pmapped_train_step(
    temperature: float, schedules: dict[str, optax.Schedule], *, centre_neural: bool = False
) -> Callable:
    """``train_step`` compiled over all local devices (axis ``"batch"``), the state donated.

    Donation lets XLA reuse the old state's buffers for the new one (XLA:CPU ignores it).
    """
    return jax.pmap(
        functools.partial(
            train_step,
            temperature=temperature,
            schedules=schedules,
            axis_name=AXIS_NAME,
            centre_neural=centre_neural,
        ),
        axis_name=AXIS_NAME,
        donate_argnums=(0,),
    )


def pmapped_eval_step(
    apply_fn: Callable, temperature: float, *, centre_neural: bool = False
) -> Callable:
    """``eval_step`` compiled over all local devices: ``(params, images, responses, mask)``."""
    return jax.pmap(
        functools.partial(
            eval_step,
            apply_fn=apply_fn,
            temperature=temperature,
            axis_name=AXIS_NAME,
            centre_neural=centre_neural,
        ),
        axis_name=AXIS_NAME,
    )


def replicate(tree, devices=None):
    """One copy of a pytree per device, stacked on a leading axis and placed on the devices.

    The arrays get the sharding pmap gives its own outputs (split over a "batch" mesh of the
    devices): a state fed back into the pmapped step then hits the same compiled program, where
    host arrays would make the second call compile the step again.

    Args:
      tree: a pytree of arrays (host or device).
      devices: the pmap's devices; default all local devices.
    """
    devices = jax.local_devices() if devices is None else list(devices)
    sharding = NamedSharding(Mesh(np.array(devices), (AXIS_NAME,)), PartitionSpec(AXIS_NAME))

    def put(x):
        x = np.asarray(x)
        return jax.device_put(np.broadcast_to(x, (len(devices), *x.shape)), sharding)

    return jax.tree.map(put, jax.device_get(tree))


def unreplicate_to_host(tree):
    """The first local device's copy of a replicated pytree, as numpy arrays."""
    # Reading the first shard compiles nothing (``x[0]`` would compile a slice per leaf shape).
    return jax.tree.map(lambda x: np.asarray(x.addressable_shards[0].data)[0], tree)
