"""The training loop on the tiny config: metrics file, checkpoints, resume after SIGKILL,
fresh-process restore, the NaN guard, and the optimizer's two towers.

Every training run happens in a subprocess (the real CLI or a short script). The subprocesses
share a persistent XLA compilation cache, so only the first one compiles the train step; the
same compiled program also makes the bitwise comparisons meaningful.
"""

import functools
import json
import math
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from dina_jax import checkpoint
from dina_jax.data import pipeline
from dina_jax.models import build_model, init_params
from dina_jax.training import optim, train_and_evaluate
from dina_jax.training import state as state_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 900  # seconds for one subprocess; generous for a loaded 2-core machine
REQUIRED_KEYS = {"step", "epoch", "train_loss", "lr_image", "lr_neural", "examples_per_sec"}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Environment of the subprocesses: one device, a shared compilation cache."""
    cache = tmp_path_factory.mktemp("xla_cache")
    environ = dict(os.environ)
    environ.pop("XLA_FLAGS", None)
    environ.update(
        JAX_COMPILATION_CACHE_DIR=str(cache),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        JAX_PLATFORMS="cpu",
    )
    return environ


def _cli(workdir, config, *overrides):
    return [
        sys.executable,
        "-m",
        "dina_jax.main",
        "--config",
        "configs/tiny.py",
        "--workdir",
        str(workdir),
        "--mode=train",
        f"--config.data.cache_dir={config.data.cache_dir}",
        # Augmented training responses, so that the resume test covers their random draws, and
        # a parameter EMA, so that it covers the EMA's checkpointing (and the fresh-process test
        # that validation and `best` use the EMA).
        "--config.train.neuron_dropout=0.1",
        "--config.train.ema_decay=0.9",
        *overrides,
    ]


def _run(args, env, **kwargs):
    result = subprocess.run(
        args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT, **kwargs
    )
    return result


def _records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def _latest_meta(workdir):
    """The JSON metadata item of the single finalized `latest` checkpoint (orbax layout)."""
    folder = os.path.join(workdir, "checkpoints", "latest")
    steps = [name for name in os.listdir(folder) if name.isdigit()]
    assert len(steps) == 1, os.listdir(folder)
    with open(os.path.join(folder, steps[0], "meta", "metadata")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def full_run(tiny_config, env, tmp_path_factory):
    """An uninterrupted tiny run (2 epochs of 8 steps), evaluated at the end."""
    workdir = tmp_path_factory.mktemp("full") / "run"
    result = _run(_cli(workdir, tiny_config), env)
    assert result.returncode == 0, result.stderr[-4000:]
    # What a person reading the job's log sees (stdout and stderr are files here, not a terminal).
    (workdir.parent / "stdout.txt").write_text(result.stdout)
    (workdir.parent / "stderr.txt").write_text(result.stderr)
    return workdir


def _events(folder) -> list:
    """Every Event proto of the TensorBoard event files in ``folder`` (TFRecord framing: length,
    its CRC, the record, its CRC)."""
    import struct

    from tensorboardX.proto import event_pb2

    events = []
    for path in sorted(pathlib.Path(folder).glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[offset + 12 : offset + 12 + length])
            events.append(event)
            offset += 12 + length + 4
    return events


def test_log_is_readable_and_tensorboard_gets_scalars_config_and_figures(full_run, tiny_config):
    stdout = (full_run.parent / "stdout.txt").read_text()
    stderr = (full_run.parent / "stderr.txt").read_text()
    # No progress bar in a file: tqdm draws only on a terminal.
    assert "\r" not in stdout and "\r" not in stderr and "it/s" not in stderr
    epochs = tiny_config.train.num_epochs
    lines = [line for line in stdout.splitlines() if line.startswith("epoch ")]
    assert len(lines) == epochs, stdout
    assert "/epoch, ETA" in lines[0] and f"({epochs - 1} more)" in lines[0]
    assert lines[-1].endswith("/epoch, done")
    assert f"TensorBoard logs: tensorboard --logdir {full_run / 'tensorboard'}" in stdout
    # The job ends with its numbers and what it wrote.
    summary = stdout[stdout.index("== summary") :]
    assert "best val_loss" in summary and "test retrieval" in summary
    assert "results.json" in summary and "tensorboard" in summary and "figures/" in summary

    events = _events(full_run / "tensorboard")
    tags = {value.tag for event in events for value in event.summary.value}
    assert {"train/train_loss", "epoch/val_loss", "epoch/val_retrieval_top1"} <= tags
    assert {"test/retrieval/top1", "evaluation/similarity_matrix"} <= tags
    images = [
        value.image
        for event in events
        for value in event.summary.value
        if value.tag == "evaluation/feature_maps"
    ]
    assert images and images[0].encoded_image_string[:4] == b"\x89PNG"
    # The config as hyperparameters (the HPARAMS plugin's session start info).
    hparams = [v for e in events for v in e.summary.value if v.metadata.plugin_data.plugin_name]
    content = b"".join(v.metadata.plugin_data.content for v in hparams)
    assert b"train.batch_size" in content and b"model.neural.d_model" in content


def test_run_writes_metrics_from_step_one_and_checkpoints(full_run, tiny_config, tiny_dataset):
    records = _records(full_run)
    first = records[0]
    assert first["step"] == 1 and first["epoch"] == 1
    assert REQUIRED_KEYS <= set(first)
    assert math.isfinite(first["train_loss"])

    batch = tiny_config.train.batch_size
    steps_per_epoch = len(tiny_dataset.split.train) // batch
    epochs = tiny_config.train.num_epochs
    train_steps = [r["step"] for r in records if r["kind"] == "train"]
    assert train_steps == list(range(1, epochs * steps_per_epoch + 1))  # log_every = 1
    epoch_records = [r for r in records if r["kind"] == "epoch"]
    assert [r["step"] for r in epoch_records] == [steps_per_epoch * (e + 1) for e in range(epochs)]
    assert all(REQUIRED_KEYS | {"val_loss"} <= set(r) for r in epoch_records)
    assert all(
        0.0 <= r["val_retrieval_top1"] <= r["val_retrieval_top5"] <= 1.0 for r in epoch_records
    )

    # The logged learning rates follow warmup + cosine (numpy oracle of the first update).
    warmup = round(tiny_config.optim.image.warmup_epochs * steps_per_epoch)
    assert first["lr_image"] == pytest.approx(tiny_config.optim.image.learning_rate / warmup)
    assert first["lr_neural"] == pytest.approx(tiny_config.optim.neural.learning_rate / warmup)

    # `best` holds the epoch with the lowest validation loss; the split is the data's split.
    best = min(epoch_records, key=lambda r: r["val_loss"])
    meta = _latest_meta(full_run)
    assert meta["progress"]["best_step"] == best["step"]
    assert meta["progress"]["best_val_loss"] == best["val_loss"]
    assert os.listdir(full_run / "checkpoints" / "best") == [str(best["step"])]
    assert meta["stats"]["n_neurons"] == tiny_dataset.n_neurons
    assert meta["stats"]["image_mean"] == tiny_dataset.image_mean
    with open(full_run / "split.json") as f:
        split = json.load(f)
    assert split["val"] == tiny_dataset.split.val.tolist()
    assert (full_run / "config.json").exists()
    # The CLI stored its compiled programs in the persistent cache beside the data cache.
    assert os.listdir(os.path.join(tiny_config.data.cache_dir, "xla"))


def test_sigkill_mid_epoch_then_resume_gives_bitwise_identical_parameters(
    full_run, tiny_config, env, tmp_path
):
    workdir = tmp_path / "run"
    args = _cli(workdir, tiny_config, "--config.train.evaluate_at_end=False")
    kill_after = 13  # epoch 2, one step after the mid-epoch checkpoint of step 12
    with open(tmp_path / "stderr.txt", "w") as stderr:
        process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=stderr, stderr=stderr)
        deadline = time.time() + TIMEOUT
        seen = 0
        while seen < kill_after:
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline
            if (workdir / "metrics.jsonl").exists():
                seen = max((r["step"] for r in _records(workdir)), default=0)
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL

    # Killed mid-epoch: the newest finalized checkpoint is the one inside epoch 2.
    progress = _latest_meta(workdir)["progress"]
    assert (progress["epoch"], progress["batches_done"], progress["step"]) == (1, 4, 12)
    assert not progress["finished"]
    # Leftovers of a save cut short by a kill must not be mistaken for a checkpoint.
    partial = workdir / "checkpoints" / "latest" / "16.orbax-checkpoint-tmp-1700000000"
    partial.mkdir()
    (partial / "garbage").write_text("half-written")

    result = _run(args, env)
    assert result.returncode == 0, result.stderr[-4000:]

    for which in ("latest", "best"):
        expected, _, _ = checkpoint.restore(str(full_run), which)
        resumed, _, _ = checkpoint.restore(str(workdir), which)
        same = jax.tree.map(np.array_equal, expected, resumed)
        assert all(jax.tree.leaves(same)), (which, same)
    # The records of the steps redone after the restart replace the killed run's ones.
    train_steps = [r["step"] for r in _records(workdir) if r["kind"] == "train"]
    assert train_steps == sorted(set(train_steps)) == list(range(1, train_steps[-1] + 1))
    full_losses = [r["train_loss"] for r in _records(full_run) if r["kind"] == "train"]
    resumed_losses = [r["train_loss"] for r in _records(workdir) if r["kind"] == "train"]
    assert resumed_losses == full_losses


FRESH_PROCESS = """
import json, sys
from dina_jax import checkpoint
from dina_jax.evaluation import evaluate, retrieval_metrics
from dina_jax.models import feature_fns
from dina_jax.training import loop
workdir = sys.argv[1]
val = loop.checkpoint_loss(workdir, "best", "val")
model, params, config, data = checkpoint.load_run(workdir)
rows = data.split.val
z_img, z_neu = feature_fns.encode(
    model, params, data.images[rows], data.responses[rows], batch_size=config.eval.batch_size)
val["retrieval_top1"] = retrieval_metrics(z_neu, z_img)["top1"]
results = evaluate(None, workdir)
print("RESULT " + json.dumps({"val": val, "eval": results}))
"""


def test_checkpoint_restored_in_a_fresh_process_reproduces_the_numbers(full_run, env):
    with open(full_run / "results.json") as f:
        at_training_end = json.load(f)
    result = _run([sys.executable, "-c", FRESH_PROCESS, str(full_run)], env)
    assert result.returncode == 0, result.stderr[-4000:]
    line = [x for x in result.stdout.splitlines() if x.startswith("RESULT ")][-1]
    fresh = json.loads(line[len("RESULT ") :])

    # The validation loss logged from the in-memory state == the one from the restored one.
    best_record = min(
        (r for r in _records(full_run) if r["kind"] == "epoch"), key=lambda r: r["val_loss"]
    )
    assert fresh["val"]["loss"] == best_record["val_loss"]
    assert fresh["val"]["top1_img_to_neu"] == best_record["val_top1_img_to_neu"]
    # The loop's whole-split validation retrieval == retrieval of the restored `best`.
    assert fresh["val"]["retrieval_top1"] == best_record["val_retrieval_top1"]
    # Evaluation at the end of training == evaluation in a new process, exactly.
    for key in ("retrieval", "ssim", "spectra", "linear_baseline"):
        assert fresh["eval"][key] == at_training_end[key], key


NAN_RUN = """
import dataclasses, sys
import numpy as np
import dina_jax
from dina_jax.data import pipeline
from dina_jax.training import train_and_evaluate
workdir, cache_dir, bad_step = sys.argv[1], sys.argv[2], int(sys.argv[3])
config = dina_jax.load_config("tiny")
config.data.cache_dir = cache_dir
config.train.evaluate_at_end = False
config.train.neuron_dropout = 0.1  # as the clean run (_cli)
config.train.ema_decay = 0.9
load_dataset = pipeline.load_dataset

def poisoned(config, *, workdir=None):
    # A NaN response in one example of the batch of `bad_step` (epoch 1).
    dataset = load_dataset(config, workdir=workdir)
    batches = list(pipeline.iterate_batches(
        dataset.split.train, config.train.batch_size, seed=config.seed, epoch=0))
    responses = dataset.responses.copy()
    responses[batches[bad_step - 1][3], 5] = np.nan
    return dataclasses.replace(dataset, responses=responses)

pipeline.load_dataset = poisoned
train_and_evaluate(config, workdir)
"""


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(
    full_run, tiny_config, env, tmp_path
):
    workdir = tmp_path / "run"
    bad_step = 7  # checkpoints every 4 steps: `latest` holds step 4
    args = [sys.executable, "-c", NAN_RUN, str(workdir), tiny_config.data.cache_dir, str(bad_step)]
    result = _run(args, env)
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("dina_jax.training.loop.NonFiniteLossError")
    assert f"at step {bad_step} " in message
    assert "step 4" in message  # the checkpoint it leaves

    progress = _latest_meta(workdir)["progress"]
    assert progress["step"] == 4
    params, _, _ = checkpoint.restore(str(workdir), "latest")
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(params))
    # Up to the bad step the run equals the clean run (same data, same order).
    expected, _, _ = checkpoint.restore(str(full_run), "latest")
    assert [r["step"] for r in _records(workdir)] == list(range(1, bad_step))
    clean = {r["step"]: r["train_loss"] for r in _records(full_run) if r["kind"] == "train"}
    assert all(r["train_loss"] == clean[r["step"]] for r in _records(workdir))


# ------------------------------------------------------------------------ optimizer and schedule


def test_every_parameter_of_every_model_belongs_to_a_tower(tiny_config):
    for name in ("dina", "vgg16_mlp", "vit_mlp"):
        config = tiny_config.copy_and_resolve_references()
        config.model.name = name
        model = build_model(config, 12)
        shapes = jax.eval_shape(
            model.init,
            jax.random.PRNGKey(0),
            jnp.zeros((1, *config.model.input_hw)),
            jnp.zeros((1, 12)),
        )["params"]
        labels = optim.tower_labels(shapes)
        assert set(jax.tree.leaves(labels["image_tower"])) == {"image"}, name
        assert set(jax.tree.leaves(labels["neural_tower"])) == {"neural"}, name
    with pytest.raises(ValueError, match="belong to no tower"):
        optim.tower_labels({"image_tower": {}, "neural_tower": {}, "head": {"w": 0}})


def test_schedule_warms_up_linearly_and_decays_by_cosine():
    tower = ml_collections.ConfigDict(
        {"learning_rate": 2e-3, "warmup_epochs": 1.5, "end_factor": 0.1}
    )
    schedule = optim.learning_rate_schedule(tower, steps_per_epoch=4, num_epochs=5)
    warmup, total, peak, end = 6, 20, 2e-3, 2e-4
    for count in range(total):
        step = count + 1
        if step <= warmup:
            expected = peak * step / warmup
        else:
            expected = end + (peak - end) * 0.5 * (1 + np.cos(np.pi * (step - warmup) / 14))
        assert float(schedule(count)) == pytest.approx(expected, rel=1e-6)
    assert float(schedule(total - 1)) == pytest.approx(end)


def _numpy_two_towers(config, params, grads_seq, steps_per_epoch):
    """AdamW (image), RMSprop + decoupled weight decay (neural), per-tower clipping, in numpy.

    The neural tower follows PyTorch's RMSprop: nu = a nu + (1 - a) g^2, the normalized step
    g / (sqrt(nu) + eps) (or g / sqrt(nu + eps) with eps_in_sqrt), a momentum buffer
    b = m b + step before the learning rate, then the decoupled weight decay:
    p -= lr (b + wd p). Returns the update of every step: [{tower: (n,) float64}].
    """
    schedules = optim.make_schedules(config, steps_per_epoch)
    im, ne = config.optim.image, config.optim.neural
    p = {k: v.astype(np.float64) for k, v in params.items()}
    m = {k: 0.0 for k in p}
    v = {k: 0.0 for k in p}
    buffer = 0.0
    steps = []
    for t, grads in enumerate(grads_seq, start=1):
        g = {}
        for k, clip in (("image_tower", im.clip_norm), ("neural_tower", ne.clip_norm)):
            norm = np.linalg.norm(grads[k])
            g[k] = grads[k] * (clip / norm if norm > clip else 1.0)
        lr = float(schedules["image"](t - 1))
        m["image_tower"] = im.b1 * m["image_tower"] + (1 - im.b1) * g["image_tower"]
        v["image_tower"] = im.b2 * v["image_tower"] + (1 - im.b2) * g["image_tower"] ** 2
        m_hat = m["image_tower"] / (1 - im.b1**t)
        v_hat = v["image_tower"] / (1 - im.b2**t)
        update = {}
        update["image_tower"] = -lr * (
            m_hat / (np.sqrt(v_hat) + im.eps) + im.weight_decay * p["image_tower"]
        )
        lr = float(schedules["neural"](t - 1))
        v["neural_tower"] = ne.decay * v["neural_tower"] + (1 - ne.decay) * g["neural_tower"] ** 2
        if ne.eps_in_sqrt:
            step = g["neural_tower"] / np.sqrt(v["neural_tower"] + ne.eps)
        else:
            step = g["neural_tower"] / (np.sqrt(v["neural_tower"]) + ne.eps)
        buffer = ne.momentum * buffer + step
        update["neural_tower"] = -lr * (buffer + ne.weight_decay * p["neural_tower"])
        p = {k: p[k] + update[k] for k in p}
        steps.append(update)
    return steps


@pytest.mark.parametrize("eps_in_sqrt", [False, True], ids=["eps_outside", "eps_in_sqrt"])
@pytest.mark.parametrize("momentum", [0.0, 0.7], ids=["plain", "momentum"])
def test_optimizer_is_adamw_on_images_and_rmsprop_on_neurons(tiny_config, eps_in_sqrt, momentum):
    config = tiny_config.copy_and_resolve_references()
    config.optim.image.weight_decay = 0.3
    config.optim.neural.weight_decay = 0.2
    config.optim.neural.weight_decay_on = "all"  # the flat test arrays are not named "kernel"
    config.optim.image.clip_norm = 1.0
    config.optim.neural.clip_norm = 0.5
    # Large epsilons: with nu = 0.1 g^2 after the first step, eps = 0.1 inside or outside the
    # square root (or AdamW's eps inside) gives clearly different updates.
    config.optim.image.eps = 0.1
    config.optim.neural.eps = 0.1
    config.optim.neural.eps_in_sqrt = eps_in_sqrt
    config.optim.neural.momentum = momentum
    config.optim.neural.decay = 0.9
    # Learning rates large enough that the updates are not lost in the parameters' rounding;
    # the updates themselves are compared, step by step.
    config.optim.image.learning_rate = 0.05
    config.optim.neural.learning_rate = 0.05
    rng = np.random.default_rng(0)
    params = {
        "image_tower": rng.normal(size=5).astype(np.float32),
        "neural_tower": rng.normal(size=7).astype(np.float32),
    }
    # Gradients large enough that clipping acts on some steps and not on others; five steps
    # span the warmup and the cosine (and its end), so the learning rate changes from step to step
    # (momentum accumulated before or after the learning rate differ).
    scales = [3.0, 0.05, 1.0, 0.2, 2.0]
    grads_seq = [
        {k: (s * rng.normal(size=v.shape)).astype(np.float32) for k, v in params.items()}
        for s in scales
    ]
    tx = optim.make_optimizer(config, params, steps_per_epoch=2)
    state = tx.init(params)
    current = params
    expected = _numpy_two_towers(config, params, grads_seq, steps_per_epoch=2)
    for t, grads in enumerate(grads_seq):
        updates, state = tx.update(grads, state, current)
        current = optax.apply_updates(current, updates)
        for key in params:
            np.testing.assert_allclose(
                updates[key], expected[t][key], rtol=1e-4, atol=1e-8, err_msg=f"{key}, step {t}"
            )


def test_parameter_ema_follows_its_recursion_and_is_what_best_stores():
    rng = np.random.default_rng(1)
    params = {
        "image_tower": rng.normal(size=4).astype(np.float32),
        "neural_tower": rng.normal(size=3).astype(np.float32),
    }
    tx = optax.sgd(0.5)  # large steps, so that the average and the parameters differ
    # A small decay, so that both branches of min(decay, (1 + t) / (10 + t)) act within the
    # steps run: the warmup term (2/11, 3/12) for t = 1, 2, then the decay itself from t = 3
    # (4/13 > 0.3). An EMA that ignored `ema_decay` would reach 9/18 = 0.5 by t = 8.
    decay = 0.3
    state = state_lib.TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=jax.random.PRNGKey(0),
        apply_fn=None,
        tx=tx,
        ema_params=jax.tree.map(jnp.copy, params),
        ema_decay=decay,
    )
    ema = {k: v.astype(np.float64) for k, v in params.items()}
    weights = []
    for t in range(1, 9):
        grads = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()}
        state = state.apply_gradients(grads)
        weight = min(decay, (1 + t) / (10 + t))
        weights.append(weight)
        for k in ema:
            ema[k] = weight * ema[k] + (1 - weight) * np.asarray(state.params[k], np.float64)
        # Step by step: a wrong weight at any single step shows here.
        for k in ema:
            np.testing.assert_allclose(state.ema_params[k], ema[k], rtol=1e-6, err_msg=f"t={t}")
    assert weights[:2] == [2 / 11, 3 / 12] and weights[2:] == [decay] * 6  # both branches ran
    assert int(state.step) == 8
    for k in ema:
        assert not np.allclose(state.ema_params[k], state.params[k])
    # A checkpoint's `params` are the EMA; the optimizer's own parameters ride in `train`.
    saved = state_lib.state_arrays(state)
    assert saved["params"] is state.ema_params and saved["train_params"] is state.params
    plain = state.replace(ema_params=None)
    assert plain.eval_params is plain.params and "train_params" not in state_lib.state_arrays(plain)


def test_ema_update_weight_is_capped_by_the_decay():
    """ema_update alone: w = min(decay, (1 + step) / (10 + step)), step 1-based."""
    ema, params = {"a": np.float32(2.0)}, {"a": np.float32(-1.0)}
    for step, decay in [(1, 0.1), (1, 0.9), (5, 0.2), (5, 0.99), (40, 0.5), (40, 0.95)]:
        weight = min(decay, (1 + step) / (10 + step))
        out = state_lib.ema_update(ema, params, jnp.int32(step), decay)
        assert float(out["a"]) == pytest.approx(2.0 * weight - (1.0 - weight), rel=1e-6), (
            step,
            decay,
        )
    # Decay 0: the EMA is the parameters.
    assert float(state_lib.ema_update(ema, params, jnp.int32(3), 0.0)["a"]) == -1.0


def test_neural_weight_decay_on_kernels_spares_embeddings_and_biases(tiny_config):
    config = tiny_config.copy_and_resolve_references()
    config.optim.neural.weight_decay = 5.0
    n_neurons = 12
    model = build_model(config, n_neurons)
    params = init_params(model, jax.random.PRNGKey(0))
    zero = jax.tree.map(jnp.zeros_like, params)
    lr = float(optim.make_schedules(config, 4)["neural"](0))
    values = jax.tree_util.tree_flatten_with_path(params["neural_tower"])[0]
    paths = {jax.tree_util.keystr(path) for path, _ in values}
    assert any("population_attention" in p and "kernel" in p for p in paths), paths
    for target in ("kernels", "readout"):
        config.optim.neural.weight_decay_on = target
        tx = optim.make_optimizer(config, params, steps_per_epoch=4)
        updates, _ = tx.update(zero, tx.init(params), params)  # zero gradients: decay alone
        leaves = jax.tree_util.tree_flatten_with_path(updates["neural_tower"])[0]
        names = set()
        for (path, update), (_, value) in zip(leaves, values, strict=True):
            name = path[-1].key
            names.add(name)
            in_attention = path[0].key == "population_attention"
            decayed = name == "kernel" and not (target == "readout" and in_attention)
            expected = -lr * 5.0 * np.asarray(value) if decayed else np.zeros(value.shape)
            np.testing.assert_allclose(update, expected, rtol=1e-6, atol=0, err_msg=str(path))
        assert {"kernel", "bias", "embedding", "aggregation"} <= names, target
    config.optim.neural.weight_decay_on = "everything"
    with pytest.raises(ValueError, match="weight_decay_on must be one of .* got 'everything'"):
        optim.make_optimizer(config, params, steps_per_epoch=4)


def test_latest_is_saved_by_steps_or_by_time_at_the_logging_steps(monkeypatch):
    from dina_jax.training.loop import Trainer

    clock = [1000.0]
    monkeypatch.setattr("dina_jax.training.loop.time.time", lambda: clock[0])

    def due(every_steps, minutes, step, is_log, since_save):
        loop = types.SimpleNamespace(
            checkpoint_every=every_steps,
            checkpoint_seconds=60.0 * minutes,
            last_save_time=clock[0] - since_save,
        )
        return Trainer._checkpoint_due(loop, step, is_log)

    assert due(4, 0.0, 8, False, 0.0) and not due(4, 0.0, 9, True, 1e9)  # steps alone
    assert due(0, 10.0, 9, True, 600.0) and not due(0, 10.0, 9, True, 599.0)  # time alone
    assert not due(0, 10.0, 9, False, 1e9)  # time is read at the logging steps only
    assert not due(0, 0.0, 8, True, 1e9)  # both off: epoch ends only
    assert due(4, 10.0, 8, False, 0.0) and due(4, 10.0, 9, True, 601.0)  # either


def test_evaluation_batches_score_every_row_once():
    rows = np.arange(100, 137)
    batches = list(pipeline.evaluation_batches(rows, 16))
    assert [len(b) for b, _ in batches] == [16, 16, 16]
    masks = np.concatenate([m for _, m in batches])
    picked = np.concatenate([b for b, _ in batches])[masks > 0]
    np.testing.assert_array_equal(picked, rows)


def test_training_split_smaller_than_a_batch_is_rejected(
    tiny_config, tiny_dataset, monkeypatch, tmp_path
):
    config = tiny_config.copy_and_resolve_references()
    config.train.batch_size = 8 * len(tiny_dataset.split.train)
    monkeypatch.setattr(pipeline, "load_dataset", lambda *a, **k: tiny_dataset)
    with pytest.raises(ValueError, match="larger than the training split .* at most 130"):
        train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_resuming_with_the_ema_switched_off_is_refused(full_run, tiny_config, tmp_path):
    workdir = tmp_path / "copy"
    shutil.copytree(full_run, workdir)
    config = tiny_config.copy_and_resolve_references()
    config.train.neuron_dropout = 0.1  # as the clean run (_cli), which kept an EMA
    with pytest.raises(ValueError, match="ema_decay=0.9"):
        train_and_evaluate(config, workdir)


def test_training_responses_halves_and_neuron_dropout(tiny_dataset):
    rows = np.asarray(tiny_dataset.split.train[:16])
    draw = functools.partial(pipeline.training_responses, tiny_dataset, rows, seed=3, batch_index=1)
    plain = draw(source="mean", neuron_dropout=0.0, epoch=0)
    np.testing.assert_array_equal(plain, tiny_dataset.responses[rows])
    # "halves": every example is exactly one of its two half-means, and both halves occur.
    halves = draw(source="halves", neuron_dropout=0.0, epoch=0)
    first = np.all(halves == tiny_dataset.halves[0, rows], axis=1)
    second = np.all(halves == tiny_dataset.halves[1, rows], axis=1)
    assert np.all(first | second) and first.any() and second.any()
    # The draw is a pure function of (seed, epoch, batch index): a resumed run sees the same.
    np.testing.assert_array_equal(halves, draw(source="halves", neuron_dropout=0.0, epoch=0))
    assert not np.array_equal(halves, draw(source="halves", neuron_dropout=0.0, epoch=1))
    # Dropout zeroes about p of the entries and rescales the kept ones by 1 / (1 - p).
    dropped = draw(source="mean", neuron_dropout=0.25, epoch=0)
    kept = dropped != 0
    assert 0.65 < kept[plain != 0].mean() < 0.85
    np.testing.assert_allclose(dropped[kept], plain[kept] / 0.75, rtol=1e-6)
    with pytest.raises(ValueError, match="train.responses must be one of .* got 'single'"):
        draw(source="single", neuron_dropout=0.0, epoch=0)
    with pytest.raises(ValueError, match=r"neuron_dropout must be in \[0, 1\), got 1.0"):
        draw(source="mean", neuron_dropout=1.0, epoch=0)


def test_a_torn_metrics_line_is_dropped_on_resume(tmp_path, caplog):
    from dina_jax.training.writer import MetricWriter

    path = tmp_path / "metrics.jsonl"
    good = [{"kind": "train", "step": s, "train_loss": 1.0} for s in (1, 2, 3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in good) + '{"kind": "train", "st')
    writer = MetricWriter(str(tmp_path))
    writer.truncate_after(2)
    writer.close()
    assert [json.loads(line) for line in path.read_text().splitlines()] == good[:2]
    assert "line 4 is not JSON" in caplog.text


def test_records_of_a_run_killed_before_its_first_checkpoint_are_not_kept(tiny_config, tmp_path):
    from dina_jax.training import Trainer

    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "metrics.jsonl").write_text(json.dumps({"kind": "train", "step": 1}) + "\n")
    trainer = Trainer(tiny_config, str(workdir))  # no checkpoint: a fresh start
    trainer.writer.close()
    assert (workdir / "metrics.jsonl").read_text() == ""
