"""The train state: parameters, optimizer state, step, PRNG key and an optional parameter EMA."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import struct

from dina_jax.models import init_params
from dina_jax.training import optim


class TrainState(struct.PyTreeNode):
    """Everything one training step reads and writes (one replica per device under pmap).

    Attributes:
      step: int32 scalar, number of optimizer updates applied so far.
      params: the model parameters ``{"image_tower": ..., "neural_tower": ...}``.
      opt_state: the state of ``tx``.
      rng: uint32 (2,) base PRNG key; step ``s`` on device ``d`` uses
        ``fold_in(fold_in(rng, s), d)``.
      apply_fn: ``model.apply`` (static).
      tx: the optimizer (static).
      ema_params: exponential moving average of ``params`` (``config.train.ema_decay`` > 0), or
        ``None``. Validation, early stopping and the ``best`` checkpoint use it when present.
      ema_decay: the EMA decay d (static); see :func:`ema_update`.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array
    apply_fn: Callable = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)
    ema_params: Any = None
    ema_decay: float = struct.field(pytree_node=False, default=0.0)

    @property
    def eval_params(self):
        """The parameters that are validated and saved as ``best``: the EMA when it is kept."""
        return self.params if self.ema_params is None else self.ema_params

    def apply_gradients(self, grads) -> TrainState:
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        params = optax.apply_updates(self.params, updates)
        step = self.step + 1
        ema = self.ema_params
        if ema is not None:
            ema = ema_update(ema, params, step, self.ema_decay)
        return self.replace(step=step, params=params, opt_state=opt_state, ema_params=ema)


def ema_update(ema, params, step, decay: float):
    """One step of the parameter EMA: ``ema <- w ema + (1 - w) params``.

    ``w = min(decay, (1 + step) / (10 + step))`` after update number ``step`` (1-based), so the
    average forgets the random initialization within the first tens of steps instead of the
    1 / (1 - decay) steps a constant weight would need (the warmup of TensorFlow's
    ExponentialMovingAverage with ``num_updates``). ``decay`` 0 makes the EMA the parameters.
    """
    step = jnp.asarray(step, jnp.float32)
    weight = jnp.minimum(jnp.float32(decay), (1.0 + step) / (10.0 + step))
    return jax.tree.map(lambda e, p: (weight * e + (1.0 - weight) * p).astype(e.dtype), ema, params)


def create_train_state(
    config: ml_collections.ConfigDict, model, rng: jax.Array, steps_per_epoch: int
) -> TrainState:
    """Initializes the parameters and the optimizer: an unreplicated state at step 0.

    Args:
      config: the full ConfigDict (``optim``, ``train.ema_decay``, ``model.pretrained_path``:
        local image-encoder weights that replace the initial ones they name).
      model: the module from ``build_model``.
      rng: PRNG key; split into the parameter-init key and the state's step key.
      steps_per_epoch: optimizer steps per epoch (converts the schedules' epochs into steps).
    """
    init_rng, state_rng = jax.random.split(rng)
    params = init_params(model, init_rng, pretrained_path=config.model.pretrained_path)
    tx = optim.make_optimizer(config, params, steps_per_epoch)
    ema_decay = float(config.train.ema_decay)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=state_rng,
        apply_fn=model.apply,
        tx=tx,
        ema_params=jax.tree.map(jnp.copy, params) if ema_decay > 0 else None,
        ema_decay=ema_decay,
    )


def state_arrays(state: TrainState) -> dict:
    """The arrays of a state that a checkpoint stores (see ``dina_jax.checkpoint``).

    ``params`` are the parameters to evaluate: the EMA when one is kept. The optimizer's own
    parameters then travel as ``train_params``, next to the optimizer state.
    """
    arrays = {
        "params": state.eval_params,
        "opt_state": state.opt_state,
        "step": state.step,
        "rng": state.rng,
    }
    if state.ema_params is not None:
        arrays["train_params"] = state.params
    return arrays


def with_arrays(state: TrainState, arrays: dict) -> TrainState:
    """``state`` with the arrays of :func:`state_arrays` (restored from a checkpoint) put back."""
    if state.ema_params is None:
        params, ema_params = arrays["params"], None
    else:
        params, ema_params = arrays["train_params"], arrays["params"]
    return state.replace(
        params=params,
        ema_params=ema_params,
        opt_state=arrays["opt_state"],
        step=jnp.asarray(arrays["step"], jnp.int32),
        rng=jnp.asarray(arrays["rng"]),
    )
