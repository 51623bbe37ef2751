"""The analysis driver (``analyze``, ``--mode analyze``) on the tiny model: outputs, resume and
the stage registry (``dina_jax.analysis.stages``)."""

import json
import os

import h5py
import jax
import matplotlib.image
import ml_collections
import numpy as np
import pytest

from dina_jax import checkpoint
from dina_jax.analysis import blobs, occlusion, run, stages
from dina_jax.config import LEGACY_ANALYSIS_FIELDS, get_base_config, with_defaults
from dina_jax.data import pipeline
from dina_jax.models import build_model, init_params


@pytest.fixture(scope="module")
def tiny_run(tiny_config, tiny_dataset, tmp_path_factory):
    """A 'trained' tiny run: initial parameters stand in for a checkpoint (no training needed)."""
    config = tiny_config.copy_and_resolve_references()
    config.analysis.n_images = 2
    config.analysis.occlusion.stride = 17  # 4 x 16 centres: a smoke test, not the paper's grid.
    config.analysis.ablation.fractions = (0.1, 0.5, 1.0)
    model = build_model(
        config,
        tiny_dataset.n_neurons,
        image_mean=tiny_dataset.image_mean,
        image_std=tiny_dataset.image_std,
    )
    params = init_params(model, jax.random.key(0))
    stats = dict(
        n_neurons=tiny_dataset.n_neurons,
        image_mean=tiny_dataset.image_mean,
        image_std=tiny_dataset.image_std,
    )
    workdir = str(tmp_path_factory.mktemp("analysis_run"))
    _write_run(workdir, config, params, stats, tiny_dataset.split)
    return config, workdir, (params, config, stats)


def _write_run(workdir, config, params, stats, split):
    """A `best` checkpoint of ``params`` and the split, as training leaves them."""
    meta = {
        "config": checkpoint.config_json(config),
        "stats": stats,
        "split": split.as_lists(),
        "progress": {},
    }
    manager = checkpoint.manager(workdir, "best", create=True)
    checkpoint.save(manager, {"params": params, "step": np.int32(1)}, meta)
    pipeline.save_split(os.path.join(workdir, "split.json"), split)


def test_analyze_writes_results_and_figures_then_resumes(
    tiny_run, tiny_dataset, monkeypatch, capsys
):
    config, workdir, _ = tiny_run
    summary = run.analyze(config, workdir)
    # One line per stage with its time, and the occlusion maps' ETA (a log file has no bars).
    printed = capsys.readouterr().out
    stages_run = [line for line in printed.splitlines() if line.startswith("analysis ")]
    assert stages_run[0].startswith("analysis 1/") and "(elapsed " in stages_run[0]
    assert len(stages_run) == int(stages_run[0].split("/")[1].split()[0])
    assert "occlusion maps 1/2:" in printed and "ETA" in printed
    with h5py.File(os.path.join(workdir, "analysis.h5")) as h5:
        # Traceable to the files: stimuli as rows of the images file, neurons as its columns.
        recording, rows = tiny_dataset.recording, tiny_dataset.split.test[:2]
        np.testing.assert_array_equal(h5["rows"][...], rows)
        np.testing.assert_array_equal(h5["image_index"][...], recording.image_index[rows])
        np.testing.assert_array_equal(h5["neuron_index"][...], recording.neuron_index)
        np.testing.assert_array_equal(h5["neuron_xyz"][...], recording.neuron_xyz)
        # Every dataset says what it holds (a new one needs its entry in Stage.datasets), and
        # every stage group what it computed; neither is taken for a scalar result.
        undocumented = []
        h5.visititems(
            lambda name, obj: (
                undocumented.append(name)
                if isinstance(obj, h5py.Dataset)
                and not (obj.attrs.get("units") and obj.attrs.get("description"))
                else None
            )
        )
        assert not undocumented, f"datasets without units/description: {undocumented}"
        for name, group in h5.items():
            if isinstance(group, h5py.Group):
                assert group.attrs.get("description"), name
                assert "description" not in summary[name], name
        assert {"pathways", "occlusion", "blobs", "ablation", "attention", "validation"} <= set(h5)
        assert h5["occlusion/maps"].shape == (2, 68, 270) and h5["occlusion/done"][...].all()
        assert h5["ablation/ranked_ssim"].shape == (3, 2)
        assert all(h5[g].attrs["complete"] for g in h5 if isinstance(h5[g], h5py.Group))
        settings = json.loads(h5["occlusion"].attrs["settings"])
        assert settings["config"]["repeats"] == 5  # App. A.1's N is part of the key ...
        assert "batch" not in settings["config"]  # ... the memory knob is not.
    names = sorted(os.listdir(os.path.join(workdir, "figures")))
    for prefix in ("fig5a", "fig5b", "fig5c", "fig5d", "fig5e", "fig5f", "fig5h", "fig6a", "fig6b"):
        assert any(n.startswith(prefix) for n in names), prefix
    with open(os.path.join(workdir, "analysis.json")) as f:
        assert json.load(f)["ablation"]["ranked_fraction"] == summary["ablation"]["ranked_fraction"]

    # A second call finds every stage done: it recomputes no occlusion map and extracts no blob
    # (the figures relabel the stored maps).
    def fail(*_args, **_kw):
        raise AssertionError("recomputed")

    monkeypatch.setattr(occlusion, "occlusion_map", fail)
    monkeypatch.setattr(blobs, "extract_blobs", fail)
    again = run.analyze(config, workdir)
    assert again["blobs"] == summary["blobs"]


def test_the_readme_lists_every_documented_dataset():
    """The README's "Outputs" table is ``stages.datasets_table()``, regenerated on changes."""
    readme = os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")
    with open(readme) as f:
        text = f.read()
    table = stages.datasets_table()
    regenerate = "python -c 'from dina_jax.analysis import stages; print(stages.datasets_table())'"
    assert table in text, f"README.md's Outputs section: paste the output of {regenerate}"
    for stage in stages.STAGES:
        assert stage.description, stage.name
        for name, (units, description) in stage.datasets.items():
            assert units and description and "|" not in units + description, (stage.name, name)


def test_stages_come_after_their_dependencies_and_read_existing_blocks():
    analysis = get_base_config().analysis
    seen = set()
    for stage in stages.STAGES:
        assert stage.name not in seen, stage.name
        assert set(stage.depends_on) <= seen, stage.name
        assert stage.config_block in analysis, stage.name
        assert set(stage.memory_fields) <= set(analysis[stage.config_block].keys()), stage.name
        seen.add(stage.name)


def _mean_image(ctx):
    """A toy stage: the mean analysed stimulus times ``analysis.mean_image.scale``, (68, 270)."""
    mean = ctx.block.scale * ctx.inputs.images.mean(axis=0)
    return {"mean": mean}, {"peak": float(mean.max())}


def _mean_image_figure(ctx):
    os.makedirs(ctx.figure_dir, exist_ok=True)
    path = ctx.figure("mean_image.png")
    matplotlib.image.imsave(path, ctx.group["mean"][...], cmap="gray")
    return [path]


def _mean_row(ctx):
    """A toy stage that reads the stored result of another: the row means of the mean image."""
    rows = ctx.h5["mean_image/mean"][...].mean(axis=1)
    return {"rows": rows}, {"top": float(rows.max())}


def test_a_new_stage_is_run_stored_and_resumed_without_touching_run_py(
    tiny_run, tiny_dataset, tmp_path, monkeypatch
):
    config, _, restored = tiny_run
    config = config.copy_and_resolve_references()
    config.analysis.mean_image = ml_collections.ConfigDict({"scale": 2.0})
    config.analysis.mean_row = ml_collections.ConfigDict()
    workdir = str(tmp_path)
    _write_run(workdir, config, *restored[::2], tiny_dataset.split)
    calls = []

    def counted(compute):
        return lambda ctx: calls.append(compute.__name__) or compute(ctx)

    registry = (
        stages.Stage("mean_image", 1, "mean_image", counted(_mean_image), _mean_image_figure),
        stages.Stage("mean_row", 1, "mean_row", counted(_mean_row), depends_on=("mean_image",)),
        stages.Stage("never", 1, "mean_row", counted(_mean_row), applies=lambda _inputs: False),
    )
    monkeypatch.setattr(stages, "STAGES", registry)

    summary = run.analyze(config, workdir)
    images = tiny_dataset.images[tiny_dataset.split.test[:2]]
    assert calls == ["_mean_image", "_mean_row"]
    assert summary["mean_image"]["peak"] == pytest.approx(2.0 * images.mean(axis=0).max())
    assert summary["figures"] == [os.path.join(workdir, "figures", "mean_image.png")]
    assert os.path.exists(summary["figures"][0])
    with h5py.File(os.path.join(workdir, "analysis.h5")) as h5:
        index = {"rows", "image_index", "neuron_index", "neuron_xyz"}
        assert set(h5) == {"mean_image", "mean_row"} | index
        assert h5["mean_image"].attrs["complete"] and h5["mean_row"].attrs["complete"]
        assert h5["mean_image/mean"][...] == pytest.approx(2.0 * images.mean(axis=0), rel=1e-5)
    with open(os.path.join(workdir, "analysis.json")) as f:
        assert json.load(f)["mean_row"]["top"] == summary["mean_row"]["top"]

    assert run.analyze(config, workdir) == summary  # Both stored: nothing recomputed.
    assert calls == ["_mean_image", "_mean_row"]
    config.analysis.mean_image.scale = 3.0  # A new setting recomputes the stage and its users.
    run.analyze(config, workdir)
    assert calls == ["_mean_image", "_mean_row"] * 2


def test_with_defaults_moves_the_flat_analysis_fields_of_older_runs():
    base = get_base_config()
    for new in LEGACY_ANALYSIS_FIELDS.values():
        block, field = new.split(".")
        assert field in base.analysis[block], new
    old = get_base_config()
    old.analysis = ml_collections.ConfigDict(
        dict(n_images=16, occlusion_stride=4, attention_samples=8, ablation_gain_quantile=0.8)
    )
    merged = with_defaults(old)
    assert merged.analysis.n_images == 16
    assert (merged.analysis.occlusion.stride, merged.analysis.occlusion.sigma) == (4, 4.0)
    assert merged.analysis.attention.samples == 8
    assert merged.analysis.validation.gain_quantile == 0.8
    assert set(merged.analysis.keys()) == set(base.analysis.keys())


def test_a_resumable_stage_continues_where_it_stopped(
    tiny_run, tiny_dataset, tmp_path, monkeypatch
):
    config, _, restored = tiny_run
    config = config.copy_and_resolve_references()
    config.analysis.image_means = ml_collections.ConfigDict({"batch": 1})
    workdir = str(tmp_path)
    _write_run(workdir, config, *restored[::2], tiny_dataset.split)
    computed = []

    def image_means(ctx):
        """Per-image means, stored one by one like the occlusion maps; dies after the first."""
        images = ctx.inputs.images
        if "means" not in ctx.group:
            ctx.group.create_dataset("means", data=np.full(len(images), np.nan))
        for i in np.nonzero(np.isnan(ctx.group["means"][...]))[0]:
            if computed:
                raise KeyboardInterrupt  # The first call is interrupted after one image.
            ctx.group["means"][i] = images[i].mean()
            computed.append(i)
        return {}, {}

    stage = stages.Stage(
        "image_means", 1, "image_means", image_means, memory_fields=("batch",), resumable=True
    )
    monkeypatch.setattr(stages, "STAGES", (stage,))
    with pytest.raises(KeyboardInterrupt):
        run.analyze(config, workdir)
    computed.clear()
    config.analysis.image_means.batch = 2  # A memory knob: not a reason to start again.
    run.analyze(config, workdir)
    assert computed == [1]
    with h5py.File(os.path.join(workdir, "analysis.h5")) as h5:
        assert h5["image_means"].attrs["complete"]
        expected = tiny_dataset.images[tiny_dataset.split.test[:2]].mean(axis=(1, 2))
        assert h5["image_means/means"][...] == pytest.approx(expected, rel=1e-5)
