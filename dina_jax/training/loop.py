"""The training loop (paper Sec. 3.3): epochs, validation, early stopping, checkpoints, metrics.

``train_and_evaluate(config, workdir)`` is what the CLI and notebooks call: it trains (resuming
from ``workdir`` when it holds a checkpoint) and then evaluates the best checkpoint.

The loop checkpoints ``latest`` at every epoch end and inside an epoch every
``config.train.checkpoint_every_minutes`` (checked at the logging steps; in a multi-process run
process 0's clock decides for all) and every ``config.train.checkpoint_every_steps`` steps, and
``best`` whenever the validation loss improves (``dina_jax.checkpoint``). Its position is the
step alone: epoch ``step // steps_per_epoch``, batch ``step % steps_per_epoch`` (a checkpoint at
an epoch's last step is written only after that epoch's validation). Batch
order is a pure function of (seed, epoch), so a run killed at any point and restarted with the
same workdir skips the batches it already did and ends with bitwise the same parameters.

With ``config.train.ema_decay`` > 0 validation, early stopping and ``best`` use the parameter
EMA. Multi-host (TPU pods, several GPU hosts): set ``config.train.distributed`` and every process
calls ``jax.distributed.initialize()`` first; every process draws the same global batch order and
feeds its own contiguous share of each batch to its local devices; process 0 writes the files.

Workdir layout::

    config.json, split.json, metrics.jsonl, tensorboard/ (scalars, the config as hparams)
    checkpoints/latest/<step>/{params,train,meta}
    checkpoints/best/<step>/{params,train,meta}
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from dina_jax import checkpoint, files
from dina_jax import progress as progress_lib
from dina_jax.config import ConfigError, check_config
from dina_jax.data import pipeline
from dina_jax.evaluation import evaluate
from dina_jax.evaluation.retrieval import retrieval_metrics
from dina_jax.models import build_model, feature_fns
from dina_jax.training import optim
from dina_jax.training import state as state_lib
from dina_jax.training import step as step_lib
from dina_jax.training.writer import MetricWriter


class NonFiniteLossError(FloatingPointError):
    """The loss, a gradient or an updated parameter became NaN or infinite; training stopped
    before logging or saving that state."""


@dataclasses.dataclass
class Progress:
    """The loop's position and early-stopping state; stored in every checkpoint's metadata.

    Attributes:
      step: optimizer steps applied; the epoch and the batch inside it follow from it.
      epoch_sums: sums of the per-step training metrics over the current epoch's batches.
      epoch_seconds: training time of those batches.
      best_val_loss, best_epoch, best_step: the best validation loss so far and where.
      bad_epochs: epochs since the validation loss last improved (early stopping).
      finished: the epoch budget is spent or early stopping fired.
      stopped_early: early stopping fired before the budget.
    """

    step: int = 0
    epoch_sums: dict = dataclasses.field(default_factory=dict)
    epoch_seconds: float = 0.0
    best_val_loss: float | None = None
    best_epoch: int | None = None
    best_step: int | None = None
    bad_epochs: int = 0
    finished: bool = False
    stopped_early: bool = False

    def to_json(self, steps_per_epoch: int) -> dict:
        """The stored form; ``epoch`` (0-based, in progress) and ``batches_done`` are derived."""
        epoch, batches = divmod(self.step, steps_per_epoch)
        return {**dataclasses.asdict(self), "epoch": epoch, "batches_done": batches}

    @classmethod
    def from_json(cls, data: dict) -> Progress:
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


# ------------------------------------------------------------------------------ options


def check_train_options(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError (a one-line message) unless ``config`` can be trained as it stands.

    :func:`dina_jax.config.check_config`, then what needs the models, the optimizers or the
    devices: the model name, the response options, the EMA decay, each tower's optimizer, and a
    global batch that divides over the devices.
    """
    from dina_jax.models import MODEL_BUILDERS

    check_config(config)
    if config.model.name not in MODEL_BUILDERS:
        raise ConfigError(
            f"model.name={config.model.name!r} is not one of {sorted(MODEL_BUILDERS)} "
            "(DINA is 'dina'; the Table 1 baselines are 'vgg16_mlp' and 'vit_mlp')"
        )
    train = config.train
    pipeline.check_response_options(train.responses, float(train.neuron_dropout))
    if not 0.0 <= float(train.ema_decay) < 1.0:
        raise ValueError(f"train.ema_decay must be in [0, 1), got {train.ema_decay}")
    optim.check_optimizer_options(config)
    devices = jax.device_count()
    if int(train.batch_size) % devices:
        multiple = devices * max(1, int(train.batch_size) // devices)
        raise ConfigError(
            f"train.batch_size={train.batch_size} does not divide over the {devices} devices "
            f"(use a multiple of {devices}, e.g. {multiple})"
        )


def steps_per_epoch(config: ml_collections.ConfigDict, dataset: pipeline.Dataset) -> int:
    """Full global batches in the training split; ConfigError if not even one fits."""
    batch, n_train = int(config.train.batch_size), len(dataset.split.train)
    if n_train < batch:
        raise ConfigError(
            f"train.batch_size={batch} is larger than the training split ({n_train} images) "
            f"of {dataset.name} (use a batch of at most {n_train})"
        )
    return n_train // batch


def maybe_initialize_distributed(config: ml_collections.ConfigDict) -> None:
    """Calls ``jax.distributed.initialize()`` once when ``config.train.distributed`` is set.

    It must run before anything touches a JAX backend (even ``jax.devices()``); the cluster
    (coordinator, process ids) comes from the environment (TPU pods, SLURM, Open MPI).
    """
    if config.train.distributed and not jax.distributed.is_initialized():
        jax.distributed.initialize()


# ------------------------------------------------------------------------------ validation


def evaluate_loss(p_eval_step, replicated_params, dataset, rows, batch_size: int) -> dict:
    """Mean InfoNCE metrics over ``rows`` (every example weighted once), as Python floats.

    ``p_eval_step`` from ``step.pmapped_eval_step``, ``replicated_params`` from
    ``step.replicate``; batches of the global ``batch_size`` (the training batch: InfoNCE depends
    on the number of negatives), the last one padded and masked.
    """
    totals: dict[str, float] = {}
    count = 0.0
    n_dev = jax.local_device_count()
    for batch_rows, mask in pipeline.evaluation_batches(rows, batch_size):
        images, responses = pipeline.device_batch(dataset, batch_rows)
        local_mask = pipeline.shard(pipeline.process_rows(mask), n_dev)
        metrics = step_lib.unreplicate_to_host(
            p_eval_step(replicated_params, images, responses, local_mask)
        )
        weight = float(metrics.pop("count"))
        count += weight
        for key, value in metrics.items():
            totals[key] = totals.get(key, 0.0) + weight * float(value)
    return {key: value / max(count, 1.0) for key, value in totals.items()}


def checkpoint_loss(workdir: str, which: str = "best", split: str = "val") -> dict:
    """InfoNCE metrics of a saved checkpoint on one split of its data, recomputed from disk.

    Runs the same compiled evaluation step on the same batches as the training loop, so on the
    same devices it reproduces the logged validation numbers of that checkpoint exactly.

    Args:
      workdir: a training workdir.
      which: "best" or "latest".
      split: "train", "val" or "test" (the run's recorded split).
    """
    run = checkpoint.load_run(workdir, which)
    p_eval = step_lib.pmapped_eval_step(
        run.model.apply,
        float(run.config.loss.temperature),
        centre_neural=bool(run.config.loss.centre_neural),
    )
    rows = np.asarray(getattr(run.dataset.split, split))
    return evaluate_loss(
        p_eval, step_lib.replicate(run.params), run.dataset, rows, int(run.config.train.batch_size)
    )


# ------------------------------------------------------------------------------ the loop


def _mean_records(host_metrics: list[dict]) -> dict:
    """Mean of each metric over the steps of one log record; learning rates of the last step."""
    mean = {
        k: float(np.mean([m[k] for m in host_metrics]))
        for k in host_metrics[0]
        if k != "count" and not k.startswith("lr_")
    }
    mean.update({k: float(v) for k, v in host_metrics[-1].items() if k.startswith("lr_")})
    return mean


class Trainer:
    """One training run in a workdir: data, compiled steps, checkpoints, metrics."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str, dataset=None):
        """Validates everything (config, data, resume compatibility), then prepares the workdir.

        Nothing is written to ``workdir`` before every check has passed, so a refused run leaves
        the workdir as it found it. The caller holds the workdir lock (``train_and_evaluate``).

        Args:
          config: the full ConfigDict.
          workdir: the run's folder.
          dataset: the config's data when already loaded (else loaded here).
        """
        self.config = config
        self.workdir = workdir
        self.primary = jax.process_index() == 0
        check_train_options(config)  # Before anything is loaded or written.
        if dataset is None:
            dataset = pipeline.load_dataset(config, workdir=workdir)
        self.dataset = dataset
        self.batch_size = int(config.train.batch_size)
        self.train_rows = np.asarray(dataset.split.train)
        self.steps_per_epoch = steps_per_epoch(config, dataset)
        self.num_epochs = int(config.train.num_epochs)
        self.log_every = max(int(config.train.log_every), 1)
        self.checkpoint_every = int(config.train.checkpoint_every_steps)  # 0: off
        self.checkpoint_seconds = 60.0 * float(config.train.checkpoint_every_minutes)  # 0: off
        self.last_save_time = time.time()

        self.static_meta = {
            "config": checkpoint.config_json(config),
            "stats": {
                "image_mean": float(dataset.image_mean),
                "image_std": float(dataset.image_std),
                "n_neurons": int(dataset.n_neurons),
            },
            "split": dataset.split.as_lists(),
        }
        # Resume compatibility, read-only: the metadata first (format, config, data, split),
        # then the arrays into this model's tree (shapes, a damaged step).
        resume_meta = checkpoint.check_resumable(workdir, self.static_meta)
        self.model = model = build_model(
            config, dataset.n_neurons, image_mean=dataset.image_mean, image_std=dataset.image_std
        )
        state = state_lib.create_train_state(
            config, model, jax.random.PRNGKey(config.seed), self.steps_per_epoch
        )
        self.progress = Progress()
        restored = None
        if resume_meta is not None:
            latest = checkpoint.manager(workdir, "latest", create=False)
            restored = checkpoint.restore_arrays(latest, state_lib.state_arrays(state))

        # Every check passed: from here on the workdir is written.
        if self.primary:
            checkpoint.write_config(config, workdir)
            pipeline.save_split(os.path.join(workdir, "split.json"), dataset.split)
        self.latest = checkpoint.manager(workdir, "latest", create=True)
        self.best = checkpoint.manager(workdir, "best", create=True)
        self.writer = MetricWriter(workdir, enabled=self.primary)
        if restored is not None:
            state = self._resume(state, *restored)
        else:  # Records of a run killed before its first checkpoint would be written twice.
            self.writer.truncate_after(0)
        temperature = float(config.loss.temperature)
        schedules = optim.make_schedules(config, self.steps_per_epoch)
        centre = bool(config.loss.centre_neural)
        self.p_train = step_lib.pmapped_train_step(temperature, schedules, centre_neural=centre)
        self.p_eval = step_lib.pmapped_eval_step(model.apply, temperature, centre_neural=centre)
        self.rstate = step_lib.replicate(state)
        self.last_saved_step = self.latest.latest_step()
        self.last_learning_rates: dict[str, float] = {}  # of the newest fetched step
        self.epoch_walls: list[float] = []  # wall seconds of each epoch of this call (ETA)
        self._epoch_started = time.time()
        if self.primary:
            if self.progress.step == 0:
                self.writer.tensorboard.hparams(
                    checkpoint.config_json(config), ("epoch/val_loss", "epoch/val_retrieval_top1")
                )
            self._print_start()

    def _print_start(self) -> None:
        """What will run, where it resumes, and where TensorBoard reads the logs."""
        resumed = f", resuming at epoch {self.epoch + 1}" if self.progress.step else ""
        print(
            f"training {self.config.model.name} on {self.dataset.n_neurons} neurons: "
            f"{self.num_epochs} epochs x {self.steps_per_epoch} steps of batch {self.batch_size} "
            f"on {jax.device_count()} device(s){resumed}",
            flush=True,
        )
        if self.writer.tensorboard.active:
            print(f"TensorBoard logs: tensorboard --logdir {self.writer.tensorboard.logdir}")

    @property
    def epoch(self) -> int:
        """The 0-based epoch in progress (== epochs completed at an epoch boundary)."""
        return self.progress.step // self.steps_per_epoch

    def _resume(
        self, state: state_lib.TrainState, arrays: dict, meta: dict
    ) -> state_lib.TrainState:
        """The state and progress of the checked ``latest`` checkpoint (``check_resumable``)."""
        state = state_lib.with_arrays(state, arrays)
        self.progress = progress = Progress.from_json(meta["progress"])
        self.writer.truncate_after(progress.step)
        # A kill between the epoch-end saves of `latest` and `best` leaves `best` one improvement
        # behind; the restored state *is* that best state, so save it now.
        if progress.best_step == progress.step != self.best.latest_step():
            checkpoint.save(self.best, jax.device_get(arrays), self._meta())
        return state

    def _meta(self) -> dict:
        return {**self.static_meta, "progress": self.progress.to_json(self.steps_per_epoch)}

    def _save(self, checkpoints) -> None:
        arrays = step_lib.unreplicate_to_host(state_lib.state_arrays(self.rstate))
        checkpoint.save(checkpoints, arrays, self._meta())
        if checkpoints is self.latest:
            self.last_saved_step = self.progress.step
            self.last_save_time = time.time()

    def _checkpoint_due(self, step: int, is_log: bool) -> bool:
        """Whether to save ``latest`` after ``step`` (inside an epoch): by steps, or by time at
        the logging steps. Every process reaches the same answer: process 0's clock decides."""
        if self.checkpoint_every and step % self.checkpoint_every == 0:
            return True
        if not (self.checkpoint_seconds and is_log):
            return False
        due = time.time() - self.last_save_time >= self.checkpoint_seconds
        if jax.process_count() > 1:
            due = bool(multihost_utils.broadcast_one_to_all(np.int32(due)))
        return due

    def _fetch(self, pending: list, window: list) -> None:
        """Moves per-step device metrics to the host, raising on the first non-finite loss."""
        sums = self.progress.epoch_sums
        for step, device_metrics in pending:
            host = step_lib.unreplicate_to_host(device_metrics)
            loss = float(host["loss"])
            finite = float(host.pop("finite", 1.0))
            if not (math.isfinite(loss) and finite == 1.0):
                what = (
                    f"training loss is {loss}"
                    if not math.isfinite(loss)
                    else ("a gradient or an updated parameter is NaN or infinite")
                )
                raise NonFiniteLossError(
                    f"{what} at step {step} (epoch {self.epoch + 1}); stopped. The last good "
                    f"checkpoint (step {self.last_saved_step}) in "
                    f"{os.path.join(self.workdir, 'checkpoints')} is left intact (lower the "
                    "learning rates or raise loss.temperature)"
                )
            window.append(host)
            for key, value in host.items():
                if key.startswith("lr_"):
                    self.last_learning_rates[key] = float(value)
                else:
                    sums[key] = sums.get(key, 0.0) + float(value)
        pending.clear()

    def train_epoch(self) -> None:
        """Runs the remaining batches of the current epoch (all of them unless resumed)."""
        progress, epoch = self.progress, self.epoch
        done = progress.step % self.steps_per_epoch
        self._epoch_started = time.time()
        bar = progress_lib.bar(
            total=self.steps_per_epoch,
            initial=done,
            desc=f"epoch {epoch + 1}/{self.num_epochs}",
            enabled=self.primary,
            leave=False,
        )
        pending: list = []  # (step, device metrics) not yet fetched: keeps dispatch asynchronous
        window: list[dict] = []  # host metrics since the last record
        record_time, record_step = time.time(), progress.step
        epoch_start = time.time()
        batches = pipeline.iterate_batches(
            self.train_rows, self.batch_size, seed=int(self.config.seed), epoch=epoch
        )
        try:
            for batch_index, rows in enumerate(batches):
                if batch_index < done:
                    continue  # applied before the restart
                responses = pipeline.training_responses(
                    self.dataset,
                    rows,
                    source=self.config.train.responses,
                    neuron_dropout=float(self.config.train.neuron_dropout),
                    seed=int(self.config.seed),
                    epoch=epoch,
                    batch_index=batch_index,
                )
                images, responses = pipeline.device_batch(self.dataset, rows, responses)
                self.rstate, metrics = self.p_train(self.rstate, images, responses)
                step = progress.step + 1
                pending.append((step, metrics))
                is_last = batch_index + 1 == self.steps_per_epoch
                is_log = (step - 1) % self.log_every == 0
                # The epoch-end save follows the last batch; a save here would repeat the step.
                is_checkpoint = not is_last and self._checkpoint_due(step, is_log)
                if is_log or is_checkpoint or is_last:
                    self._fetch(pending, window)  # never log or save past a non-finite loss
                progress.step = step
                bar.update(1)
                if is_log:
                    now = time.time()
                    mean = _mean_records(window)
                    record = {
                        "kind": "train",
                        "step": step,
                        "epoch": epoch + 1,
                        "train_loss": mean.pop("loss"),
                        **{k if k.startswith("lr_") else f"train_{k}": v for k, v in mean.items()},
                        "examples_per_sec": (step - record_step)
                        * self.batch_size
                        / (now - record_time),
                    }
                    self.writer.write(record)
                    bar.set_postfix(loss=f"{record['train_loss']:.3f}")
                    window.clear()
                    record_time, record_step = now, step
                if is_checkpoint:
                    progress.epoch_seconds += time.time() - epoch_start
                    self._save(self.latest)
                    epoch_start = time.time()
        finally:
            bar.close()
        progress.epoch_seconds += time.time() - epoch_start

    def _validation_retrieval(self) -> dict:
        """Retrieval among all validation stimuli, scored as the test set is (Sec. 4.2): the
        learning curve in the units of the paper's table, not of a training batch."""
        params = step_lib.unreplicate_to_host(self.rstate.eval_params)
        rows = self.dataset.split.val
        z_img, z_neu = feature_fns.encode(
            self.model,
            params,
            self.dataset.images[rows],
            self.dataset.responses[rows],
            batch_size=int(self.config.eval.batch_size),
        )
        metrics = retrieval_metrics(z_neu, z_img, (1, 5))
        return {"retrieval_top1": metrics["top1"], "retrieval_top5": metrics["top5"]}

    def end_epoch(self) -> None:
        """Validation loss, early stopping, the epoch record and the epoch-end checkpoints."""
        progress = self.progress
        epoch = progress.step // self.steps_per_epoch - 1  # the epoch just completed, 0-based
        val = evaluate_loss(
            self.p_eval,
            self.rstate.eval_params,
            self.dataset,
            self.dataset.split.val,
            self.batch_size,
        )
        val_loss = val.pop("loss")
        val.update(self._validation_retrieval())
        improved = math.isfinite(val_loss) and (
            progress.best_val_loss is None or val_loss < progress.best_val_loss
        )
        if improved:
            progress.best_val_loss, progress.best_epoch = val_loss, epoch + 1
            progress.best_step, progress.bad_epochs = progress.step, 0
        else:
            progress.bad_epochs += 1
        record = {
            "kind": "epoch",
            "step": progress.step,
            "epoch": epoch + 1,
            "train_loss": progress.epoch_sums.get("loss", math.nan) / self.steps_per_epoch,
            "val_loss": val_loss,
            **{f"val_{k}": v for k, v in val.items()},
            "best_val_loss": progress.best_val_loss,
            **self.last_learning_rates,
            "examples_per_sec": self.steps_per_epoch
            * self.batch_size
            / max(progress.epoch_seconds, 1e-9),
        }
        self.writer.write(record)
        stop = progress.bad_epochs >= int(self.config.train.patience)
        progress.epoch_sums, progress.epoch_seconds = {}, 0.0
        progress.stopped_early = bool(stop and epoch + 1 < self.num_epochs)
        progress.finished = bool(stop or epoch + 1 >= self.num_epochs)
        # `latest` first: if killed before `best` is written, the restart repairs `best` from
        # `latest` (see _resume); the reverse order could not be repaired.
        self._save(self.latest)
        if improved:
            self._save(self.best)
        self.epoch_walls.append(time.time() - self._epoch_started)
        if self.primary:
            print(self._epoch_line(record, epoch), flush=True)

    def _epoch_line(self, record: dict, epoch: int) -> str:
        """One line per epoch: losses, validation top-1, epoch time and the run's ETA."""
        progress = self.progress
        left = 0 if progress.finished else self.num_epochs - (epoch + 1)
        seconds = self.epoch_walls[-1]
        remaining = progress_lib.eta(float(np.mean(self.epoch_walls)), left)
        timing = f"{progress_lib.format_duration(seconds)}/epoch, " + (
            f"ETA {progress_lib.format_duration(remaining)} ({left} more)" if left else "done"
        )
        if progress.stopped_early:
            timing = f"{progress_lib.format_duration(seconds)}/epoch, early stop"
        return (
            f"epoch {epoch + 1}/{self.num_epochs}: train_loss {record['train_loss']:.4f} "
            f"val_loss {record['val_loss']:.4f} (best {progress.best_val_loss:.4f} at epoch "
            f"{progress.best_epoch}), val top-1 {100 * record['val_retrieval_top1']:.1f}% | "
            + timing
        )

    def run(self) -> dict:
        start = time.time()
        try:
            with warnings.catch_warnings():
                # XLA:CPU does not implement buffer donation and warns on every call.
                warnings.filterwarnings("ignore", message=".*[Dd]onat.*")
                while not self.progress.finished and self.epoch < self.num_epochs:
                    self.train_epoch()
                    self.end_epoch()
        finally:
            self.writer.close()
        progress = self.progress
        return {
            "best_val_loss": progress.best_val_loss,
            "best_epoch": progress.best_epoch,
            "best_step": progress.best_step,
            "final_step": progress.step,
            "epochs_completed": self.epoch,
            "stopped_early": progress.stopped_early,
            "train_seconds": time.time() - start,
        }


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
    """Trains (resuming from ``workdir`` when it holds a checkpoint), then evaluates ``best``.

    Paper Sec. 3.3: symmetric InfoNCE (T = 0.01) over the global batch, AdamW on the image
    tower and RMSprop on the neural tower, early stopping on the validation loss. A workdir whose
    run finished (epoch budget or early stopping) is not trained further; only the evaluation
    runs again.

    Returns:
      A dict of final numbers: ``best_val_loss``, ``best_epoch``, ``best_step``, ``final_step``,
      ``epochs_completed``, ``stopped_early``, ``train_seconds`` (this call) and, when
      ``config.train.evaluate_at_end``, ``eval`` (the result of ``dina_jax.evaluate``).

    Nothing is written to ``workdir`` before the config, the data and (when resuming) the
    checkpoint's compatibility have been checked; the workdir is locked for the whole call.

    Raises:
      NonFiniteLossError: the loss, a gradient or an updated parameter was NaN/inf; the message
        names the step; the checkpoints saved before it are left as they were.
      ValueError (ConfigError): a config value no run can use, e.g. a batch that does not
        divide over the devices or is larger than the training split.
      CheckpointError: the workdir's checkpoint is damaged, or was trained with another
        config, data or split (nothing is written then).
      WorkdirBusy: another process holds the workdir's lock.

    Example::

        config = dina_jax.load_config("synthetic", {"train.num_epochs": 5})
        result = dina_jax.train_and_evaluate(config, "workdirs/synthetic")
        result["best_val_loss"], result["eval"]["retrieval"]["top1"]
    """
    maybe_initialize_distributed(config)
    workdir = os.path.abspath(os.fspath(workdir))
    check_train_options(config)
    dataset = pipeline.load_dataset(config, workdir=workdir)  # Writes only to the data cache.
    steps_per_epoch(config, dataset)
    with files.workdir_lock(workdir, enabled=jax.process_index() == 0):
        result = Trainer(config, workdir, dataset=dataset).run()
        if config.train.evaluate_at_end:
            result["eval"] = evaluate(config, workdir)
    return result
