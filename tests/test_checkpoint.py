"""``dina_jax.checkpoint``: load_run against the training run it reads, the split check, and
workdirs written in checkpoint format 1 (read after an upgrade, refused for resuming)."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from dina_jax import checkpoint
from dina_jax.data import pipeline
from dina_jax.data.stringer import DataError
from dina_jax.models import feature_fns
from dina_jax.training import train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_load_run_returns_the_run_with_its_split_statistics_and_architecture(
    tiny_config, trained_workdir
):
    caller = tiny_config.copy_and_resolve_references()
    caller.model.neural.d_model = 3  # Not the run's: the architecture comes from the checkpoint.
    caller.eval.ssim_win_size = 5  # Evaluation settings come from the caller.
    model, params, config, dataset = checkpoint.load_run(trained_workdir, config=caller)
    assert config.model.neural.d_model == tiny_config.model.neural.d_model
    assert params["neural_tower"]["embedding"].shape[1] == tiny_config.model.neural.d_model
    assert config.eval.ssim_win_size == 5
    saved = pipeline.load_split(str(trained_workdir / "split.json"))
    for name in pipeline.SPLITS:
        np.testing.assert_array_equal(getattr(dataset.split, name), getattr(saved, name))
    recorded = json.loads((trained_workdir / "results.json").read_text())["checkpoint"]
    assert recorded == {
        "image_mean": dataset.image_mean,
        "image_std": dataset.image_std,
        "n_neurons": dataset.n_neurons,
    }
    # The parameters are those the evaluation at the end of training encoded with.
    maps = np.load(trained_workdir / "test_maps.npz")
    z_img = feature_fns.encode_images(model, params, dataset.images[maps["test_rows"]])
    np.testing.assert_allclose(z_img, maps["z_img"], atol=1e-5)
    # Without a caller's config, everything is the run's.
    assert checkpoint.load_run(trained_workdir).config.eval.ssim_win_size == 7


def test_load_run_refuses_data_or_a_split_that_are_not_the_runs(
    tiny_config, trained_workdir, tmp_path, monkeypatch
):
    workdir = tmp_path / "copy"
    shutil.copytree(trained_workdir, workdir)
    split = pipeline.load_split(str(workdir / "split.json"))
    moved = pipeline.Split(train=split.train, val=split.val, test=np.roll(split.test, 1) + 1)
    pipeline.save_split(str(workdir / "split.json"), moved)
    with pytest.raises(DataError, match="differs from the split recorded in the checkpoint"):
        checkpoint.load_run(workdir)
    pipeline.save_split(str(workdir / "split.json"), split)

    dataset = pipeline.load_dataset(tiny_config)
    fewer_neurons = dataclasses.replace(dataset, responses=dataset.responses[:, :-1])
    monkeypatch.setattr(pipeline, "load_dataset", lambda *_a, **_k: fewer_neurons)
    with pytest.raises(DataError, match="neurons but the data"):
        checkpoint.load_run(workdir)
    fewer_rows = dataclasses.replace(dataset, responses=dataset.responses[:10])
    monkeypatch.setattr(pipeline, "load_dataset", lambda *_a, **_k: fewer_rows)
    with pytest.raises(DataError, match="rows beyond"):
        checkpoint.load_run(workdir)


def _as_format_1(workdir):
    """Rewrites both checkpoints of ``workdir`` as dina_jax 0.1.0 wrote them (format 1)."""
    for which in checkpoint.CHECKPOINT_KINDS:
        manager = checkpoint.manager(workdir, which, create=False)
        step = manager.latest_step()
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardRestore(),
                train=ocp.args.StandardRestore(),
                meta=ocp.args.JsonRestore(),
            ),
        )
        params, meta = restored["params"], restored["meta"]
        neural = dict(params["neural_tower"])
        neural.update(neural.pop("population_attention"))  # q/k/v at the tower's top level
        params = {**params, "neural_tower": neural}
        del meta["format"]
        model = meta["config"]["model"]
        image = model["image"]
        image["input_hw"], image["resize_hw"] = model.pop("input_hw"), model.pop("resize_hw")
        del image["block_size"]
        vgg, vit, readout = model.pop("vgg16"), model.pop("vit"), model.pop("readout")
        model["baseline"] = {
            "mlp_hidden": readout["mlp_hidden"],
            "vgg_widths": vgg["widths"],
            "vgg_depths": vgg["depths"],
            "vgg_pooled_blocks": vgg["pooled_blocks"],
            "head_hidden": vgg["head_hidden"],
            "vit_patch": vit["patch"],
            "vit_dim": vit["dim"],
            "vit_depth": vit["depth"],
            "vit_heads": vit["num_heads"],
            "vit_mlp_ratio": vit["mlp_ratio"],
            "vit_attention": vit["attention"],
        }
        del model["neural"]["mixer"]
        shutil.rmtree(workdir / "checkpoints" / which)
        manager = ocp.CheckpointManager(
            workdir / "checkpoints" / which,
            options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True),
            item_names=("params", "train", "meta"),
        )
        manager.save(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(params),
                train=ocp.args.StandardSave(restored["train"]),
                meta=ocp.args.JsonSave(meta),
            ),
        )
        manager.wait_until_finished()


def test_format_1_workdirs_are_read_after_an_upgrade_and_not_resumed(
    tiny_config, trained_workdir, tmp_path
):
    workdir = tmp_path / "old"
    shutil.copytree(trained_workdir, workdir)
    _as_format_1(workdir)
    old = checkpoint.load_run(workdir)
    new = checkpoint.load_run(trained_workdir)
    assert old.config.model.to_dict() == new.config.model.to_dict()
    same = jax.tree.map(np.array_equal, old.params, new.params)
    assert all(jax.tree.leaves(same))
    config = tiny_config.copy_and_resolve_references()
    config.train.num_epochs = 2  # More epochs: the loop would resume from `latest`.
    with pytest.raises(checkpoint.FormatError, match="checkpoint format 1"):
        train_and_evaluate(config, workdir)
    # The command line says so in one line, exit code 2.
    args = [
        sys.executable,
        "-m",
        "dina_jax.main",
        "--config=configs/tiny.py",
        f"--workdir={workdir}",
        "--mode=train",
        f"--config.data.cache_dir={tiny_config.data.cache_dir}",
        "--config.train.num_epochs=2",
    ]
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        f"error: {workdir}/checkpoints/latest: checkpoint format 1, this dina_jax resumes format 2 "
        "only; evaluate and analyse it, or train in a new workdir"
    ]


def test_a_damaged_checkpoint_is_one_line_naming_it(trained_workdir, tmp_path):
    workdir = tmp_path / "damaged"
    shutil.copytree(trained_workdir, workdir)
    (step,) = [p for p in (workdir / "checkpoints" / "best").iterdir() if p.name.isdigit()]
    shutil.rmtree(step / "meta")
    with pytest.raises(checkpoint.CheckpointError, match="damaged or incomplete") as error:
        checkpoint.load_run(workdir)
    assert str(step) in str(error.value) and "\n" not in str(error.value)


def test_how_the_function_is_computed_may_change_on_resume_what_it_computes_may_not(tiny_config):
    """Attention kernels, micro-batches and remat are free across a resume; widths are not."""
    from dina_jax.checkpoint import config_differences, config_json

    saved = config_json(tiny_config)
    changed = tiny_config.copy_and_resolve_references()
    changed.model.image.micro_batch = 7
    changed.model.image.remat = False
    changed.model.neural.attention = "materialized"
    assert config_differences(saved, config_json(changed)) == []
    changed.model.image.head_hidden = 3
    assert [d.split("=")[0] for d in config_differences(saved, config_json(changed))] == [
        "model.image.head_hidden"
    ]
