"""The analysis driver (``analyze``, ``--mode analyze``) on the tiny model: outputs and resume."""

import json
import os

import h5py
import jax
import ml_collections
import pytest

from dina_jax import train
from dina_jax.analysis import occlusion, run
from dina_jax.config import LEGACY_ANALYSIS_FIELDS, get_base_config
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
    pipeline.save_split(os.path.join(workdir, "split.json"), tiny_dataset.split)
    return config, workdir, (params, config, stats)


def test_analyze_writes_results_and_figures_then_resumes(tiny_run, monkeypatch):
    config, workdir, restored = tiny_run
    monkeypatch.setattr(train, "restore", lambda *_args, **_kw: restored)
    summary = run.analyze(config, workdir)
    with h5py.File(os.path.join(workdir, "analysis.h5")) as h5:
        assert {"pathways", "occlusion", "blobs", "ablation", "attention", "validation"} <= set(h5)
        assert h5["occlusion/maps"].shape == (2, 68, 270) and h5["occlusion/done"][...].all()
        assert h5["ablation/ranked_ssim"].shape == (3, 2)
        assert all(h5[g].attrs["complete"] for g in h5 if isinstance(h5[g], h5py.Group))
    names = sorted(os.listdir(os.path.join(workdir, "figures")))
    for prefix in ("fig5a", "fig5b", "fig5c", "fig5d", "fig5e", "fig5f", "fig5h", "fig6a", "fig6b"):
        assert any(n.startswith(prefix) for n in names), prefix
    with open(os.path.join(workdir, "analysis.json")) as f:
        assert json.load(f)["ablation"]["ranked_fraction"] == summary["ablation"]["ranked_fraction"]

    # A second call finds every part done and recomputes no occlusion map.
    def fail(*_args, **_kw):
        raise AssertionError("occlusion recomputed")

    monkeypatch.setattr(occlusion, "occlusion_map", fail)
    again = run.analyze(config, workdir)
    assert again["blobs"] == summary["blobs"]


def test_with_defaults_moves_the_flat_analysis_fields_of_older_runs():
    base = get_base_config()
    for new in LEGACY_ANALYSIS_FIELDS.values():
        block, field = new.split(".")
        assert field in base.analysis[block], new
    old = get_base_config()
    old.analysis = ml_collections.ConfigDict(
        dict(n_images=16, occlusion_stride=4, attention_samples=8, ablation_gain_quantile=0.8)
    )
    merged = run.with_defaults(old)
    assert merged.analysis.n_images == 16
    assert (merged.analysis.occlusion.stride, merged.analysis.occlusion.sigma) == (4, 4.0)
    assert merged.analysis.attention.samples == 8
    assert merged.analysis.validation.gain_quantile == 0.8
    assert set(merged.analysis.keys()) == set(base.analysis.keys())
