"""Training (paper Sec. 3.3): InfoNCE over the global batch, AdamW + RMSprop, early stopping.

``train_and_evaluate(config, workdir)`` is what the CLI and notebooks call. One training step is a
single compiled program, data-parallel over all devices with ``jax.pmap(axis_name="batch")``:

* every device encodes its b = B / n_devices examples with both towers;
* ``losses.infonce(..., axis_name="batch")`` all-gathers both towers' normalized maps, so every
  query is contrasted with the B - 1 negatives of the *global* batch (the loss and the gradient
  are those of one device holding the whole batch);
* the other devices' rows enter the loss as constants, so a device's gradient is the gradient
  through its own examples and the ``psum`` over devices is the gradient of the global loss;
* AdamW updates the image tower and RMSprop the neural tower (``optax.multi_transform``), each
  with its own warmup + cosine learning rate and gradient-norm clipping.

Multi-host (TPU pods, several GPU hosts): set ``config.train.distributed`` and every process
calls ``jax.distributed.initialize()`` first; every process draws the same global batch order and
feeds its own contiguous share of each batch to its local devices; the gather spans all hosts.

With ``config.train.ema_decay`` > 0 the state also keeps an exponential moving average of the
parameters (updated inside the compiled step); validation, early stopping, the ``best``
checkpoint and everything evaluated from a checkpoint then use the average.

The loop checkpoints ``latest`` every ``config.train.checkpoint_every_steps`` steps and at every
epoch end (train state, RNG, epoch and position inside it, early-stopping state, config, split and
the data's normalization statistics), and ``best`` whenever the validation loss improves. Batch
order is a pure function of (seed, epoch), so a run killed at any point and restarted with the
same workdir skips the batches it already did and ends with bitwise the same parameters.

Workdir layout::

    config.json, split.json, metrics.jsonl, tensorboard/ (if a TensorBoard writer is installed)
    checkpoints/latest/<step>/{params,train,meta}
    checkpoints/best/<step>/{params,train,meta}
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import struct
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm import tqdm

from dina_jax import losses
from dina_jax.data import pipeline
from dina_jax.models import build_model, load_pretrained

AXIS_NAME = "batch"
# Top-level parameter collections of every model (DINA and the baselines) -> optimizer of that
# tower. A model with any other top-level name is rejected rather than silently left untrained.
TOWER_OF_SUBMODULE = {"image_tower": "image", "neural_tower": "neural"}
CHECKPOINT_KINDS = ("latest", "best")


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; training stopped before saving that state."""


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


# ------------------------------------------------------------------------------------ optimizer


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

    def schedule(count, xp=jnp):
        # xp=numpy evaluates the same formula on the host (logging) without compiling anything.
        step = xp.asarray(count, xp.float32) + xp.float32(1.0)  # 1-based number of this update
        warm = peak * step / max(warmup, 1)
        progress = xp.clip((step - warmup) / max(total - warmup, 1), 0.0, 1.0)
        cosine = end + (peak - end) * 0.5 * (1.0 + xp.cos(xp.pi * progress))
        return xp.where(step <= warmup, warm, cosine)

    return schedule


def make_schedules(config: ml_collections.ConfigDict, steps_per_epoch: int) -> dict:
    """The learning-rate schedules of both towers: ``{"image": fn, "neural": fn}``."""
    epochs = config.train.num_epochs
    return {
        "image": learning_rate_schedule(config.optim.image, steps_per_epoch, epochs),
        "neural": learning_rate_schedule(config.optim.neural, steps_per_epoch, epochs),
    }


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


def _clipped(clip_norm: float, transform: optax.GradientTransformation):
    if clip_norm and clip_norm > 0:
        # Inside multi_transform this norm is over the tower's own gradients only.
        return optax.chain(optax.clip_by_global_norm(float(clip_norm)), transform)
    return transform


WEIGHT_DECAY_TARGETS = ("kernels", "all")


def _decay_mask(target: str):
    """Mask of the leaves a decoupled weight decay acts on: ``None`` (all) or a callable.

    "kernels": only the weight matrices of dense / conv layers (leaves named ``kernel``); biases,
    norms and per-neuron vectors such as the neural tower's embedding and aggregation weights
    keep their scale.
    """
    if target not in WEIGHT_DECAY_TARGETS:
        raise ValueError(
            f"optim.neural.weight_decay_on must be one of {WEIGHT_DECAY_TARGETS}, got {target!r}"
        )
    if target == "all":
        return None

    def mask(params):
        return jax.tree_util.tree_map_with_path(
            lambda path, _: getattr(path[-1], "key", None) == "kernel", params
        )

    return mask


def make_optimizer(
    config: ml_collections.ConfigDict, params, steps_per_epoch: int
) -> optax.GradientTransformation:
    """AdamW on the image tower, RMSprop on the neural tower (Sec. 3.3), schedules from config."""
    schedules = make_schedules(config, steps_per_epoch)
    image, neural = config.optim.image, config.optim.neural
    image_tx = optax.adamw(
        schedules["image"],
        b1=float(image.b1),
        b2=float(image.b2),
        eps=float(image.eps),
        weight_decay=float(image.weight_decay),
    )
    # RMSprop written out so that a decoupled weight decay (as AdamW's) can sit between the
    # normalized step and the learning rate; with weight_decay 0 and no momentum this is exactly
    # optax.rmsprop. Momentum, when used, accumulates before the learning rate, as in PyTorch.
    neural_tx = optax.chain(
        optax.scale_by_rms(
            decay=float(neural.decay), eps=float(neural.eps), eps_in_sqrt=bool(neural.eps_in_sqrt)
        ),
        optax.trace(decay=float(neural.momentum)) if neural.momentum else optax.identity(),
        optax.add_decayed_weights(
            float(neural.weight_decay), mask=_decay_mask(neural.weight_decay_on)
        ),
        optax.scale_by_learning_rate(schedules["neural"]),
    )
    return optax.multi_transform(
        {
            "image": _clipped(image.clip_norm, image_tx),
            "neural": _clipped(neural.clip_norm, neural_tx),
        },
        tower_labels(params),
    )


def create_train_state(
    config: ml_collections.ConfigDict,
    model,
    rng: jax.Array,
    steps_per_epoch: int,
    sample_images,
    sample_responses,
) -> TrainState:
    """Initializes the parameters (from a sample batch) and the optimizer: an unreplicated state.

    Args:
      config: the full ConfigDict.
      model: the module from ``build_model``.
      rng: PRNG key; split into the parameter-init key and the state's step key.
        ``config.model.pretrained_path`` (local image-encoder weights) replaces the initial
        image-tower parameters it names.
      steps_per_epoch: optimizer steps per epoch (converts the schedules' epochs into steps).
      sample_images: (b, 68, 270) float32, any b >= 1 (only shapes matter).
      sample_responses: (b, N) float32.
    """
    init_rng, state_rng = jax.random.split(rng)
    params = jax.jit(model.init)(init_rng, sample_images[:1], sample_responses[:1])["params"]
    if config.model.pretrained_path:
        params = load_pretrained(params, config.model.pretrained_path)
    tx = make_optimizer(config, params, steps_per_epoch)
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


# ----------------------------------------------------------------------------------- the steps


def compute_grads(
    params, apply_fn, images, responses, rng, *, temperature: float, axis_name: str | None
):
    """Gradient of the global-batch InfoNCE and its metrics.

    Args:
      params: model parameters.
      apply_fn: ``model.apply``.
      images: (b, 68, 270) this device's images; responses: (b, N).
      rng: PRNG key for stochastic layers (the models have none today).
      temperature: InfoNCE temperature.
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
        return losses.infonce(z_img, z_neu, temperature, axis_name=axis_name)

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    if axis_name is not None:
        grads = lax.psum(grads, axis_name)
    return grads, metrics


def train_step(state: TrainState, images, responses, *, temperature: float, axis_name: str | None):
    """One optimizer step on the global batch; returns ``(new_state, metrics)``.

    ``images`` (b, 68, 270) and ``responses`` (b, N) are this device's share of the global batch.
    Metrics add the pre-clipping gradient norm of each tower (``grad_norm_image``/``_neural``).
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
    )
    for name, tower in TOWER_OF_SUBMODULE.items():
        metrics[f"grad_norm_{tower}"] = optax.global_norm(grads[name])
    return state.apply_gradients(grads), metrics


def eval_step(
    params,
    images,
    responses,
    mask,
    *,
    apply_fn: Callable,
    temperature: float,
    axis_name: str | None,
):
    """InfoNCE metrics of one (possibly padded) evaluation batch over the global batch.

    ``images`` (b, 68, 270), ``responses`` (b, N) and ``mask`` (b,) (1 = real row, 0 = padding)
    are this device's share. It takes the parameters alone (not the train state) so that the
    same compiled program scores a restored checkpoint in another process.
    """
    z_img, z_neu, _ = apply_fn({"params": params}, images, responses, train=False)
    _, metrics = losses.infonce(z_img, z_neu, temperature, axis_name=axis_name, mask=mask)
    return metrics


def pmapped_train_step(temperature: float) -> Callable:
    """``train_step`` compiled over all local devices (axis ``"batch"``), the state donated.

    Donation lets XLA reuse the old state's buffers for the new one (XLA:CPU ignores it).
    """
    return jax.pmap(
        functools.partial(train_step, temperature=temperature, axis_name=AXIS_NAME),
        axis_name=AXIS_NAME,
        donate_argnums=(0,),
    )


def pmapped_eval_step(apply_fn: Callable, temperature: float) -> Callable:
    """``eval_step`` compiled over all local devices: ``(params, images, responses, mask)``."""
    return jax.pmap(
        functools.partial(
            eval_step, apply_fn=apply_fn, temperature=temperature, axis_name=AXIS_NAME
        ),
        axis_name=AXIS_NAME,
    )


# ----------------------------------------------------------------------------- host-side helpers


def maybe_initialize_distributed(config: ml_collections.ConfigDict) -> None:
    """Calls ``jax.distributed.initialize()`` once when ``config.train.distributed`` is set.

    It must run before anything touches a JAX backend (even ``jax.devices()``); the cluster
    (coordinator, process ids) comes from the environment (TPU pods, SLURM, Open MPI).
    """
    if config.train.distributed and not jax.distributed.is_initialized():
        jax.distributed.initialize()


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


def _process_rows(rows: np.ndarray) -> np.ndarray:
    """This process's contiguous share of a global batch of row indices."""
    count, index = jax.process_count(), jax.process_index()
    per = len(rows) // count
    return rows[index * per : (index + 1) * per]


RESPONSE_SOURCES = ("mean", "halves")


def check_response_options(source: str, neuron_dropout: float) -> None:
    """Raises ValueError unless ``train.responses`` / ``train.neuron_dropout`` are usable."""
    if source not in RESPONSE_SOURCES:
        raise ValueError(f"train.responses must be one of {RESPONSE_SOURCES}, got {source!r}")
    if not 0.0 <= neuron_dropout < 1.0:
        raise ValueError(f"train.neuron_dropout must be in [0, 1), got {neuron_dropout}")


def check_train_options(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError unless the training options of ``config`` are usable."""
    train = config.train
    check_response_options(train.responses, float(train.neuron_dropout))
    if not 0.0 <= float(train.ema_decay) < 1.0:
        raise ValueError(f"train.ema_decay must be in [0, 1), got {train.ema_decay}")
    _decay_mask(config.optim.neural.weight_decay_on)  # raises on an unknown target


def training_responses(
    dataset,
    rows: np.ndarray,
    *,
    source: str,
    neuron_dropout: float,
    seed: int,
    epoch: int,
    batch_index: int,
) -> np.ndarray:
    """(B, N) float32 responses of one global training batch, after the configured augmentation.

    ``source`` "mean": the stimulus-averaged responses (paper); "halves": each example takes the
    mean over the first or the second half of its image's repeats (``dataset.halves``), drawn
    anew every epoch. ``neuron_dropout`` p > 0 zeroes each (example, neuron) entry with
    probability p and scales the rest by 1 / (1 - p). Drawn on the host from (seed, epoch,
    batch_index) over the whole global batch: the same on any number of devices and after a
    resume. Validation and test always see the plain means.
    """
    check_response_options(source, neuron_dropout)
    rng = np.random.default_rng([int(seed), int(epoch), int(batch_index), 2])
    if source == "halves":
        responses = dataset.halves[rng.integers(0, 2, size=len(rows)), rows]
    else:
        responses = dataset.responses[rows]
    if neuron_dropout > 0.0:
        keep = rng.random(responses.shape, dtype=np.float32) >= neuron_dropout
        responses = responses * keep * np.float32(1.0 / (1.0 - neuron_dropout))
    return np.asarray(responses, np.float32)


def _device_batch(dataset, rows: np.ndarray, responses: np.ndarray | None = None):
    """Images and responses of ``rows`` split over the local devices: (n_dev, b, ...).

    ``responses`` (B, N), when given, replaces ``dataset.responses[rows]`` (the global batch; this
    process keeps its share).
    """
    local = _process_rows(rows)
    n_dev = jax.local_device_count()
    if responses is None:
        responses = dataset.responses[local]
    else:
        responses = _process_rows(responses)
    return pipeline.shard(dataset.images[local], n_dev), pipeline.shard(responses, n_dev)


def evaluation_batches(
    rows: np.ndarray, batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Consecutive batches of ``rows``, the last one padded, as ``(rows, mask)`` pairs (B,).

    Every row is scored once; the padded tail (copies of the batch's first row, mask 0) is
    neither a query nor a negative, so the last batch has fewer negatives than B - 1.
    """
    for start in range(0, len(rows), batch_size):
        chunk = np.asarray(rows[start : start + batch_size])
        mask = np.zeros(batch_size, np.float32)
        mask[: len(chunk)] = 1.0
        padded = np.concatenate([chunk, np.full(batch_size - len(chunk), chunk[0])])
        yield padded.astype(np.int64), mask


def evaluate_loss(p_eval_step, replicated_params, dataset, rows, batch_size: int) -> dict:
    """Mean InfoNCE metrics over ``rows`` (every example weighted once), as Python floats.

    ``p_eval_step`` from :func:`pmapped_eval_step`, ``replicated_params`` from :func:`replicate`;
    batches of the global ``batch_size`` (the training batch: InfoNCE depends on the number of
    negatives), the last one padded and masked.
    """
    totals: dict[str, float] = {}
    count = 0.0
    n_dev = jax.local_device_count()
    for batch_rows, mask in evaluation_batches(rows, batch_size):
        images, responses = _device_batch(dataset, batch_rows)
        local_mask = pipeline.shard(_process_rows(mask), n_dev)
        metrics = unreplicate_to_host(p_eval_step(replicated_params, images, responses, local_mask))
        weight = float(metrics.pop("count"))
        count += weight
        for key, value in metrics.items():
            totals[key] = totals.get(key, 0.0) + weight * float(value)
    return {key: value / max(count, 1.0) for key, value in totals.items()}


class MetricWriter:
    """Appends one JSON object per line to ``metrics.jsonl`` (+ TensorBoard when installed)."""

    def __init__(self, workdir: str, enabled: bool = True):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.enabled = enabled
        self._tensorboard = (
            _tensorboard_writer(os.path.join(workdir, "tensorboard")) if enabled else None
        )

    def truncate_after(self, step: int) -> None:
        """Drops records of steps after ``step`` (written by a run killed before its checkpoint)."""
        if not self.enabled or not os.path.exists(self.path):
            return
        with open(self.path) as f:
            records = [json.loads(line) for line in f if line.strip()]
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            for record in records:
                if record.get("step", 0) <= step:
                    f.write(json.dumps(record) + "\n")
        os.replace(tmp, self.path)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
        if self._tensorboard is not None:
            for key, value in record.items():
                if key not in ("step", "kind") and isinstance(value, (int, float)):
                    self._tensorboard.scalar(f"{record['kind']}/{key}", value, record["step"])
            self._tensorboard.flush()

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()


def _tensorboard_writer(logdir: str):
    """A scalar summary writer if flax's TensorBoard writer or tensorboardX is installed."""
    try:
        from flax.metrics import tensorboard  # needs tensorflow

        return tensorboard.SummaryWriter(logdir)
    except ImportError:
        pass
    try:
        import tensorboardX

        class _Adapter:
            def __init__(self):
                self._writer = tensorboardX.SummaryWriter(logdir)

            def scalar(self, tag, value, step):
                self._writer.add_scalar(tag, value, step)

            def flush(self):
                self._writer.flush()

            def close(self):
                self._writer.close()

        return _Adapter()
    except ImportError:
        return None


# --------------------------------------------------------------------------------- checkpoints


def _manager(workdir: str, which: str, *, create: bool) -> ocp.CheckpointManager:
    if which not in CHECKPOINT_KINDS:
        raise ValueError(f"checkpoint kind must be one of {CHECKPOINT_KINDS}, got {which!r}")
    # Synchronous saves; orbax writes each step into a temporary folder and renames it only once
    # complete, so a kill during a save leaves the previous finalized step as the restore point.
    options = ocp.CheckpointManagerOptions(
        max_to_keep=1, create=create, enable_async_checkpointing=False
    )
    return ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), "checkpoints", which),
        options=options,
        item_names=("params", "train", "meta"),
    )


def _state_dict(state: TrainState) -> dict:
    """The arrays of a state that a checkpoint stores.

    ``params`` (the checkpoint's ``params`` item, what :func:`restore` returns) are the
    parameters to evaluate: the EMA when one is kept. The optimizer's own parameters then travel
    in the ``train`` item as ``train_params``, next to the optimizer state.
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


def _host_state(replicated_state: TrainState) -> dict:
    """The first replica's checkpointed arrays as numpy (saved exactly, bit for bit)."""
    return unreplicate_to_host(_state_dict(replicated_state))


def _save(manager: ocp.CheckpointManager, host_state: dict, meta: dict) -> None:
    train_item = {k: v for k, v in host_state.items() if k != "params"}
    manager.save(
        int(host_state["step"]),
        args=ocp.args.Composite(
            params=ocp.args.StandardSave(host_state["params"]),
            train=ocp.args.StandardSave(train_item),
            meta=ocp.args.JsonSave(meta),
        ),
        force=True,
    )
    manager.wait_until_finished()


def _restore_into(manager: ocp.CheckpointManager, state: TrainState) -> tuple[TrainState, dict]:
    """Restores the newest finalized step of ``manager`` into the structure of ``state``.

    The metadata is read first: a checkpoint saved with an EMA has another ``train`` item than a
    state without one (and the reverse), which is refused with a clear message.
    """
    step = manager.latest_step()
    meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    saved_decay = meta["config"]["train"].get("ema_decay", 0.0)
    if (float(saved_decay) > 0) != (state.ema_params is not None):
        raise ValueError(
            f"{manager.directory}: its checkpoint was trained with train.ema_decay={saved_decay}, "
            f"this config has {state.ema_decay}; use a new workdir"
        )
    abstract = functools.partial(jax.tree.map, ocp.utils.to_shape_dtype_struct)
    template = _state_dict(state)
    template_train = {k: v for k, v in template.items() if k != "params"}
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract(template["params"])),
            train=ocp.args.StandardRestore(abstract(template_train)),
        ),
    )
    train = restored["train"]
    if state.ema_params is None:
        params, ema_params = restored["params"], None
    else:
        params, ema_params = train["train_params"], restored["params"]
    state = state.replace(
        params=params,
        ema_params=ema_params,
        opt_state=train["opt_state"],
        step=jnp.asarray(train["step"], jnp.int32),
        rng=jnp.asarray(train["rng"]),
    )
    return state, meta


def config_from_json(data: dict | str) -> ml_collections.ConfigDict:
    """Rebuilds a ConfigDict from its JSON form; JSON lists become tuples again."""
    if isinstance(data, str):
        data = json.loads(data)

    def convert(value):
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, list):
            return tuple(convert(v) for v in value)
        return value

    return ml_collections.ConfigDict(convert(data))


def restore(workdir: str, which: str = "best") -> tuple[Any, ml_collections.ConfigDict, dict]:
    """Loads a checkpoint of ``workdir`` without the data: ``(params, config, stats)``.

    ``params`` are numpy arrays in the model's tree, ``config`` the run's ConfigDict and
    ``stats`` holds ``image_mean``, ``image_std`` (training-split pixel statistics) and
    ``n_neurons``, everything ``build_model`` needs::

        params, config, stats = restore(workdir)
        model = build_model(config, stats["n_neurons"], image_mean=stats["image_mean"],
                            image_std=stats["image_std"])
    """
    manager = _manager(workdir, which, create=False)
    step = manager.latest_step()
    if step is None:
        raise FileNotFoundError(
            2, "no finalized checkpoint", os.path.join(workdir, "checkpoints", which)
        )
    restored = manager.restore(
        step,
        args=ocp.args.Composite(params=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()),
    )
    params = jax.tree.map(np.asarray, restored["params"])
    meta = restored["meta"]
    return params, config_from_json(meta["config"]), dict(meta["stats"])


def checkpoint_loss(workdir: str, which: str = "best", split: str = "val") -> dict:
    """InfoNCE metrics of a saved checkpoint on one split of its data, recomputed from disk.

    Runs the same compiled evaluation step on the same batches as the training loop, so on the
    same devices it reproduces the logged validation numbers of that checkpoint exactly.

    Args:
      workdir: a training workdir.
      which: "best" or "latest".
      split: "train", "val" or "test" (rows from the run's ``split.json``).
    """
    params, config, stats = restore(workdir, which)
    dataset = pipeline.load_dataset(config, workdir=workdir)
    split_path = os.path.join(workdir, "split.json")
    splits = pipeline.load_split(split_path) if os.path.exists(split_path) else dataset.split
    model = build_model(
        config, stats["n_neurons"], image_mean=stats["image_mean"], image_std=stats["image_std"]
    )
    p_eval = pmapped_eval_step(model.apply, float(config.loss.temperature))
    rows = np.asarray(getattr(splits, split))
    return evaluate_loss(p_eval, replicate(params), dataset, rows, int(config.train.batch_size))


# ------------------------------------------------------------------------------------ the loop


def _write_json_once(path: str, payload: dict) -> None:
    if os.path.exists(path):
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def _fresh_progress() -> dict:
    """The loop's position and early-stopping state; stored in every checkpoint's metadata."""
    return {
        "step": 0,
        "epoch": 0,  # 0-based epoch in progress (== epochs completed when batches_done == 0)
        "batches_done": 0,  # batches of `epoch` already applied
        "epoch_sums": {},  # sums of per-step train metrics over those batches
        "epoch_seconds": 0.0,  # training time of those batches
        "best_val_loss": None,
        "best_epoch": None,
        "best_step": None,
        "bad_epochs": 0,
        "finished": False,
        "stopped_early": False,
    }


def _mean_records(host_metrics: list[dict]) -> dict:
    """Mean of each metric over the steps of one log record."""
    return {
        k: float(np.mean([m[k] for m in host_metrics])) for k in host_metrics[0] if k != "count"
    }


class _Loop:
    """The state of one ``train_and_evaluate`` call: data, compiled steps, checkpoints, logs."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        self.config = config
        self.workdir = workdir
        self.primary = jax.process_index() == 0
        # Checked before anything is loaded or written.
        check_train_options(config)
        self.dataset = dataset = pipeline.load_dataset(config, workdir=workdir)
        if self.primary:
            _write_json_once(
                os.path.join(workdir, "config.json"),
                json.loads(config.to_json_best_effort(sort_keys=True)),
            )
            pipeline.save_split(os.path.join(workdir, "split.json"), dataset.split)

        self.batch_size = int(config.train.batch_size)
        if self.batch_size % jax.device_count():
            raise ValueError(
                f"config.train.batch_size={self.batch_size} does not divide over "
                f"{jax.device_count()} devices"
            )
        self.train_rows = np.asarray(dataset.split.train)
        self.steps_per_epoch = len(self.train_rows) // self.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"the training split ({len(self.train_rows)} images) is smaller than one batch "
                f"({self.batch_size})"
            )
        self.num_epochs = int(config.train.num_epochs)
        self.log_every = max(int(config.train.log_every), 1)
        self.checkpoint_every = max(int(config.train.checkpoint_every_steps), 1)

        model = build_model(
            config, dataset.n_neurons, image_mean=dataset.image_mean, image_std=dataset.image_std
        )
        state = create_train_state(
            config,
            model,
            jax.random.PRNGKey(config.seed),
            self.steps_per_epoch,
            dataset.images[:1],
            dataset.responses[:1],
        )
        self.schedules = make_schedules(config, self.steps_per_epoch)
        self.latest = _manager(workdir, "latest", create=True)
        self.best = _manager(workdir, "best", create=True)
        self.writer = MetricWriter(workdir, enabled=self.primary)
        self.static_meta = {
            "config": json.loads(config.to_json_best_effort(sort_keys=True)),
            "stats": {
                "image_mean": float(dataset.image_mean),
                "image_std": float(dataset.image_std),
                "n_neurons": int(dataset.n_neurons),
            },
            "split": {k: getattr(dataset.split, k).tolist() for k in ("train", "val", "test")},
        }
        self.progress = _fresh_progress()
        if self.latest.latest_step() is not None:
            state = self._resume(state)
        temperature = float(config.loss.temperature)
        self.p_train = pmapped_train_step(temperature)
        self.p_eval = pmapped_eval_step(model.apply, temperature)
        self.rstate = replicate(state)
        self.last_saved_step = self.latest.latest_step()

    def _resume(self, state: TrainState) -> TrainState:
        state, meta = _restore_into(self.latest, state)
        if meta["split"] != self.static_meta["split"]:
            raise ValueError(
                f"{self.workdir}: its checkpoint was trained on another train/val/test split "
                "(different data or seed); use a new workdir"
            )
        self.progress = progress = meta["progress"]
        self.writer.truncate_after(progress["step"])
        # A kill between the epoch-end saves of `latest` and `best` leaves `best` one improvement
        # behind; the restored state *is* that best state, so save it now.
        if progress["best_step"] == progress["step"] != self.best.latest_step():
            _save(self.best, jax.device_get(_state_dict(state)), self._meta())
        return state

    def _meta(self) -> dict:
        return {**self.static_meta, "progress": self.progress}

    def _save(self, manager: ocp.CheckpointManager) -> None:
        _save(manager, _host_state(self.rstate), self._meta())
        if manager is self.latest:
            self.last_saved_step = self.progress["step"]

    def _lr(self, step: int) -> dict:
        """Learning rates step ``step`` (1-based) used, computed on the host."""
        return {
            f"lr_{tower}": float(schedule(step - 1, np))
            for tower, schedule in self.schedules.items()
        }

    def _fetch(self, pending: list, window: list) -> None:
        """Moves per-step device metrics to the host, raising on the first non-finite loss."""
        sums = self.progress["epoch_sums"]
        for step, device_metrics in pending:
            host = unreplicate_to_host(device_metrics)
            loss = float(host["loss"])
            if not math.isfinite(loss):
                raise NonFiniteLossError(
                    f"training loss is {loss} at step {step} (epoch {self.progress['epoch'] + 1}); "
                    f"stopped. The last good checkpoint (step {self.last_saved_step}) in "
                    f"{os.path.join(self.workdir, 'checkpoints')} is left intact."
                )
            window.append(host)
            for key, value in host.items():
                sums[key] = sums.get(key, 0.0) + float(value)
        pending.clear()

    def train_epoch(self) -> None:
        """Runs the remaining batches of the current epoch (all of them unless resumed)."""
        progress, epoch = self.progress, int(self.progress["epoch"])
        bar = tqdm(
            total=self.steps_per_epoch,
            initial=progress["batches_done"],
            desc=f"epoch {epoch + 1}/{self.num_epochs}",
            disable=not self.primary,
            leave=False,
        )
        pending: list = []  # (step, device metrics) not yet fetched: keeps dispatch asynchronous
        window: list[dict] = []  # host metrics since the last record
        record_time, record_step = time.time(), progress["step"]
        epoch_start = time.time()
        batches = pipeline.iterate_batches(
            self.train_rows, self.batch_size, seed=int(self.config.seed), epoch=epoch
        )
        try:
            for batch_index, rows in enumerate(batches):
                if batch_index < progress["batches_done"]:
                    continue  # applied before the restart
                responses = training_responses(
                    self.dataset,
                    rows,
                    source=self.config.train.responses,
                    neuron_dropout=float(self.config.train.neuron_dropout),
                    seed=int(self.config.seed),
                    epoch=epoch,
                    batch_index=batch_index,
                )
                images, responses = _device_batch(self.dataset, rows, responses)
                self.rstate, metrics = self.p_train(self.rstate, images, responses)
                step = progress["step"] + 1
                pending.append((step, metrics))
                is_last = batch_index + 1 == self.steps_per_epoch
                is_log = (step - 1) % self.log_every == 0
                # The epoch-end save follows the last batch; a save here would repeat the step.
                is_checkpoint = step % self.checkpoint_every == 0 and not is_last
                if is_log or is_checkpoint or is_last:
                    self._fetch(pending, window)  # never log or save past a non-finite loss
                progress.update(step=step, batches_done=batch_index + 1)
                bar.update(1)
                if is_log:
                    now = time.time()
                    mean = _mean_records(window)
                    record = {
                        "kind": "train",
                        "step": step,
                        "epoch": epoch + 1,
                        "train_loss": mean.pop("loss"),
                        **{f"train_{k}": v for k, v in mean.items()},
                        **self._lr(step),
                        "examples_per_sec": (step - record_step)
                        * self.batch_size
                        / (now - record_time),
                    }
                    self.writer.write(record)
                    bar.set_postfix(loss=f"{record['train_loss']:.3f}")
                    window.clear()
                    record_time, record_step = now, step
                if is_checkpoint:
                    progress["epoch_seconds"] += time.time() - epoch_start
                    self._save(self.latest)
                    epoch_start = time.time()
        finally:
            bar.close()
        progress["epoch_seconds"] += time.time() - epoch_start

    def end_epoch(self) -> None:
        """Validation loss, early stopping, the epoch record and the epoch-end checkpoints."""
        progress, epoch, step = self.progress, int(self.progress["epoch"]), self.progress["step"]
        val = evaluate_loss(
            self.p_eval,
            self.rstate.eval_params,
            self.dataset,
            self.dataset.split.val,
            self.batch_size,
        )
        val_loss = val.pop("loss")
        improved = math.isfinite(val_loss) and (
            progress["best_val_loss"] is None or val_loss < progress["best_val_loss"]
        )
        if improved:
            progress.update(best_val_loss=val_loss, best_epoch=epoch + 1, best_step=step)
            progress["bad_epochs"] = 0
        else:
            progress["bad_epochs"] += 1
        record = {
            "kind": "epoch",
            "step": step,
            "epoch": epoch + 1,
            "train_loss": progress["epoch_sums"].get("loss", math.nan) / self.steps_per_epoch,
            "val_loss": val_loss,
            **{f"val_{k}": v for k, v in val.items()},
            "best_val_loss": progress["best_val_loss"],
            **self._lr(step),
            "examples_per_sec": self.steps_per_epoch
            * self.batch_size
            / max(progress["epoch_seconds"], 1e-9),
        }
        self.writer.write(record)
        stop = progress["bad_epochs"] >= int(self.config.train.patience)
        progress.update(
            epoch=epoch + 1,
            batches_done=0,
            epoch_sums={},
            epoch_seconds=0.0,
            stopped_early=bool(stop and epoch + 1 < self.num_epochs),
            finished=bool(stop or epoch + 1 >= self.num_epochs),
        )
        # `latest` first: if killed before `best` is written, the restart repairs `best` from
        # `latest` (see _resume); the reverse order could not be repaired.
        self._save(self.latest)
        if improved:
            self._save(self.best)
        if self.primary:
            print(
                f"epoch {epoch + 1}: train_loss {record['train_loss']:.4f} val_loss "
                f"{val_loss:.4f} (best {progress['best_val_loss']:.4f} at epoch "
                f"{progress['best_epoch']})",
                flush=True,
            )

    def run(self) -> dict:
        start = time.time()
        try:
            with warnings.catch_warnings():
                # XLA:CPU does not implement buffer donation and warns on every call.
                warnings.filterwarnings("ignore", message=".*[Dd]onat.*")
                while not self.progress["finished"] and self.progress["epoch"] < self.num_epochs:
                    self.train_epoch()
                    self.end_epoch()
        finally:
            self.writer.close()
        progress = self.progress
        return {
            "best_val_loss": progress["best_val_loss"],
            "best_epoch": progress["best_epoch"],
            "best_step": progress["best_step"],
            "final_step": progress["step"],
            "epochs_completed": progress["epoch"],
            "stopped_early": progress["stopped_early"],
            "train_seconds": time.time() - start,
        }


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains (resuming from ``workdir`` when it holds a checkpoint), then evaluates ``best``.

    A workdir whose run finished (epoch budget or early stopping) is not trained further; only
    the evaluation runs again.

    Returns a dict of final numbers: ``best_val_loss``, ``best_epoch``, ``best_step``,
    ``final_step``, ``epochs_completed``, ``stopped_early``, ``train_seconds`` (this call) and,
    when ``config.train.evaluate_at_end``, ``eval`` (``dina_jax.evaluation.evaluate``'s result).

    Raises:
      NonFiniteLossError: a training loss was NaN/inf; the message names the step; the
        checkpoints saved before it are left as they were.
      ValueError: the batch does not divide over the devices, the training split is smaller
        than one batch, or the workdir's checkpoint was trained on another split.
    """
    maybe_initialize_distributed(config)
    workdir = os.path.abspath(os.fspath(workdir))
    os.makedirs(workdir, exist_ok=True)
    result = _Loop(config, workdir).run()
    if config.train.evaluate_at_end:
        # Imported when needed: training alone does not load the evaluation and its figures.
        from dina_jax.evaluation import evaluate

        result["eval"] = evaluate(config, workdir)
    return result
