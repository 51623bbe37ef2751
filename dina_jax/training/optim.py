"""Optimizers chosen by name, one per tower, with warmup + cosine learning-rate schedules.

Sec. 3.3 trains the image tower with AdamW and the neural tower with RMSprop. Each tower's config
block (``config.optim.image``, ``config.optim.neural``) names its optimizer in ``name`` (a key of
:data:`OPTIMIZERS`) and holds the schedule fields (``learning_rate``, ``warmup_epochs``,
``end_factor``, ``clip_norm``) plus the optimizer's own options; each builder takes the options it
names in its signature, and fields it does not take are ignored (so switching the name needs no
other change). Adding an optimizer is one function and one entry in :data:`OPTIMIZERS`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

# Top-level parameter collections of every model (DINA and the baselines) -> its tower's
# optimizer. A model with any other top-level name is rejected rather than silently left untrained.
TOWER_OF_SUBMODULE = {"image_tower": "image", "neural_tower": "neural"}
WEIGHT_DECAY_TARGETS = ("kernels", "readout", "all")
# Submodule whose weight matrices "readout" spares: the neural tower's W_Q, W_K, W_V (Eq. 6).
ATTENTION_SUBMODULE = "population_attention"


# ------------------------------------------------------------------------------ schedules


def learning_rate_schedule(
    tower: ml_collections.ConfigDict, steps_per_epoch: int, num_epochs: int
) -> optax.Schedule:
    """Linear warmup to ``tower.learning_rate``, then cosine decay to ``end_factor`` times it.

    The schedule takes optax's update count (0 for the first update) and returns the rate that
    update uses. Warmup lasts ``round(warmup_epochs * steps_per_epoch)`` updates and the first
    update already uses ``peak / warmup_steps`` (not 0, which would waste a step); the cosine runs
    from the end of the warmup to the last step of ``num_epochs`` epochs.
    """
    peak = float(tower.learning_rate)
    end = peak * float(tower.end_factor)
    warmup = max(int(round(float(tower.warmup_epochs) * steps_per_epoch)), 0)
    total = max(int(num_epochs) * int(steps_per_epoch), 1)

    def schedule(count):
        step = jnp.asarray(count, jnp.float32) + 1.0  # 1-based number of this update
        warm = peak * step / max(warmup, 1)
        progress = jnp.clip((step - warmup) / max(total - warmup, 1), 0.0, 1.0)
        cosine = end + (peak - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
        return jnp.where(step <= warmup, warm, cosine)

    return schedule


def make_schedules(config: ml_collections.ConfigDict, steps_per_epoch: int) -> dict:
    """The learning-rate schedules of both towers: ``{"image": fn, "neural": fn}``."""
    epochs = config.train.num_epochs
    return {
        tower: learning_rate_schedule(config.optim[tower], steps_per_epoch, epochs)
        for tower in TOWER_OF_SUBMODULE.values()
    }


# ------------------------------------------------------------------------------ optimizers


def decay_mask(target: str):
    """Mask of the leaves a decoupled weight decay acts on: ``None`` (all) or a callable.

    "kernels": only the weight matrices of dense / conv layers (leaves named ``kernel``); biases,
    norms and per-neuron vectors such as the neural tower's embedding and aggregation weights
    keep their scale. "readout": the weight matrices outside the population attention (the
    neural tower's readout MLP): W_Q and W_K set the spread of the attention logits, and
    decaying them pulls the attention towards uniform.
    """
    if target not in WEIGHT_DECAY_TARGETS:
        raise ValueError(f"weight_decay_on must be one of {WEIGHT_DECAY_TARGETS}, got {target!r}")
    if target == "all":
        return None

    def decayed(path) -> bool:
        keys = [getattr(entry, "key", None) for entry in path]
        if target == "readout" and ATTENTION_SUBMODULE in keys:
            return False
        return keys[-1] == "kernel"

    def mask(params):
        return jax.tree_util.tree_map_with_path(lambda path, _: decayed(path), params)

    return mask


def adamw(
    learning_rate,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    weight_decay_on: str = "all",
) -> optax.GradientTransformation:
    """AdamW (Loshchilov & Hutter), epsilon outside the square root as in PyTorch."""
    return optax.adamw(
        learning_rate,
        b1=float(b1),
        b2=float(b2),
        eps=float(eps),
        weight_decay=float(weight_decay),
        mask=decay_mask(weight_decay_on),
    )


def rmsprop(
    learning_rate,
    *,
    decay: float = 0.99,
    eps: float = 1e-8,
    eps_in_sqrt: bool = False,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    weight_decay_on: str = "all",
) -> optax.GradientTransformation:
    """RMSprop with an optional momentum and a decoupled weight decay (as AdamW's).

    Written out so that the decay sits between the normalized step and the learning rate; with
    weight_decay 0 and no momentum this is exactly ``optax.rmsprop``. Momentum accumulates before
    the learning rate, as in PyTorch; ``eps_in_sqrt`` False divides by sqrt(nu) + eps (PyTorch).
    """
    return optax.chain(
        optax.scale_by_rms(decay=float(decay), eps=float(eps), eps_in_sqrt=bool(eps_in_sqrt)),
        optax.trace(decay=float(momentum)) if momentum else optax.identity(),
        optax.add_decayed_weights(float(weight_decay), mask=decay_mask(weight_decay_on)),
        optax.scale_by_learning_rate(learning_rate),
    )


def sgd(
    learning_rate, *, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0
) -> optax.GradientTransformation:
    """SGD with optional (Nesterov) momentum and a decoupled weight decay."""
    return optax.chain(
        optax.add_decayed_weights(float(weight_decay)),
        optax.sgd(learning_rate, momentum=float(momentum) or None, nesterov=bool(nesterov)),
    )


# config.optim.<tower>.name -> builder(learning_rate, **options).
OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "adamw": adamw,
    "rmsprop": rmsprop,
    "sgd": sgd,
}


def tower_optimizer(
    block: ml_collections.ConfigDict, schedule: optax.Schedule
) -> optax.GradientTransformation:
    """The optimizer one config block names, with its schedule and gradient-norm clipping."""
    if block.name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {block.name!r}; expected one of {sorted(OPTIMIZERS)}")
    builder = OPTIMIZERS[block.name]
    accepted = set(inspect.signature(builder).parameters) - {"learning_rate"}
    transform = builder(schedule, **{k: v for k, v in block.items() if k in accepted})
    if block.clip_norm and block.clip_norm > 0:
        # Inside multi_transform this norm is over the tower's own gradients only.
        return optax.chain(optax.clip_by_global_norm(float(block.clip_norm)), transform)
    return transform


def tower_labels(params) -> dict:
    """Labels every parameter leaf "image" or "neural" by its top-level submodule name."""
    unknown = sorted(set(params) - set(TOWER_OF_SUBMODULE))
    if unknown:
        raise ValueError(
            f"parameters {unknown} belong to no tower; expected top-level submodules "
            f"{sorted(TOWER_OF_SUBMODULE)}"
        )
    return {
        name: jax.tree.map(lambda _, tower=TOWER_OF_SUBMODULE[name]: tower, subtree)
        for name, subtree in params.items()
    }


def make_optimizer(
    config: ml_collections.ConfigDict, params, steps_per_epoch: int
) -> optax.GradientTransformation:
    """Each tower's optimizer (Sec. 3.3: AdamW on the image tower, RMSprop on the neural tower)."""
    schedules = make_schedules(config, steps_per_epoch)
    return optax.multi_transform(
        {tower: tower_optimizer(config.optim[tower], schedules[tower]) for tower in schedules},
        tower_labels(params),
    )


def check_optimizer_options(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError (naming the field) unless both towers' optimizer blocks are usable."""
    for tower in TOWER_OF_SUBMODULE.values():
        block = config.optim[tower]
        if block.name not in OPTIMIZERS:
            raise ValueError(
                f"optim.{tower}.name must be one of {sorted(OPTIMIZERS)}, got {block.name!r}"
            )
        if "weight_decay_on" in block:
            try:
                decay_mask(block.weight_decay_on)
            except ValueError as error:
                raise ValueError(f"optim.{tower}.{error}") from None
