"""Pathway masking SSIM (Fig. 5a) against model.apply + scikit-image SSIM on the tiny model."""

import jax
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from dina_jax.analysis import pathways
from dina_jax.models import build_model, init_params


@pytest.fixture(scope="module")
def tiny_model(tiny_config):
    model = build_model(tiny_config, 12, image_mean=0.5, image_std=0.25)
    params = init_params(model, jax.random.key(0))
    return model, params


def test_pathway_ssim_matches_apply_and_skimage(tiny_model):
    model, params = tiny_model
    images = np.random.default_rng(0).random((3, 68, 270)).astype(np.float32)
    result = pathways.pathway_ssim(model, params, images, win_size=7, batch_size=2)
    assert set(result) == {"local", "global"} and result["local"].shape == (3,)
    encode = jax.jit(
        lambda v, x, kept: model.apply(v, x, pathways=kept, method="encode_images"),
        static_argnums=2,
    )
    variables = {"params": params}
    full = np.asarray(encode(variables, images, ("local", "global")))
    for name in ("local", "global"):
        alone = np.asarray(encode(variables, images, (name,)))
        assert not np.allclose(alone, full)  # Masking a pathway changes the map.
        for s in range(len(images)):
            span = full[s].max() - full[s].min()
            expected = structural_similarity(full[s], alone[s], win_size=7, data_range=span)
            assert result[name][s] == pytest.approx(expected, abs=1e-4)


def test_both_pathways_reproduce_the_full_map():
    full = np.random.default_rng(1).normal(size=(3, 16, 64)).astype(np.float32)
    result = pathways.pathway_maps_ssim(full, {"both": full, "noise": full[::-1]})
    np.testing.assert_allclose(np.asarray(result["both"]), 1.0, atol=1e-6)
    assert np.all(np.asarray(result["noise"])[[0, 2]] < 0.5)
