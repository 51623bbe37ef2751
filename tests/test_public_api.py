"""The notebook-facing surface: ``dina_jax.__all__`` (the library's own objects), their
docstrings and examples, the encoders and feature functions, and ``load_run``."""

from __future__ import annotations

import importlib
import inspect
import pathlib
import re
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import dina_jax
from dina_jax.config import CONFIGS_DIR

PACKAGE_DIR = pathlib.Path(dina_jax.__file__).parent
# Names of __all__ that take or return arrays: their library docstring must state shapes.
ARRAY_NAMES = {
    "attention_bin_edges",
    "attention_histogram_stream",
    "attention_qk_fn",
    "blob_table",
    "cosine_similarity_matrix",
    "encode_images",
    "encode_neurons",
    "extract_blobs",
    "image_feature_fn",
    "infonce",
    "load_images",
    "masked_map_ssim",
    "neural_feature_fn",
    "neuron_ablation",
    "occlusion_map",
    "occlusion_maps",
    "pathway_ssim",
    "retrieval_metrics",
    "ssim",
    "variance_spectrum",
}
# A shape in the project's docstring style: "(B, 16, 64)", "(N,)", "(n_bins + 1,)", "(H, W)".
SHAPE = re.compile(r"\((?:[\w+\-* ]+,)+[\w+\-* .]*\)")


def test_import_is_light_and_names_are_discoverable():
    code = "import sys, dina_jax; print(sorted(m for m in ('jax', 'flax') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert set(dina_jax.__all__) <= set(dir(dina_jax))
    assert len(set(dina_jax.__all__)) == len(dina_jax.__all__)
    assert set(dina_jax.__all__) == set(dina_jax._EXPORTS)
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        dina_jax.no_such_name  # noqa: B018


def test_no_exported_name_shadows_a_submodule():
    submodules = {p.stem for p in PACKAGE_DIR.glob("*.py")} | {
        p.parent.name for p in PACKAGE_DIR.glob("*/__init__.py")
    }
    assert not submodules & set(dina_jax.__all__)
    assert set(dina_jax.SUBMODULES) == submodules - {"__init__"}
    from dina_jax import evaluation

    assert inspect.ismodule(evaluation) and inspect.ismodule(dina_jax.evaluation)
    assert inspect.isfunction(evaluation.evaluate)  # The package's entry point, not its module.
    assert dina_jax.evaluate is evaluation.evaluate


def _example(doc: str) -> str:
    """The indented block after ``Example::`` in a docstring."""
    block = doc.split("Example::", 1)[1]
    lines = []
    for line in block.splitlines()[1:]:
        if line.strip() and not line.startswith(" "):
            break
        lines.append(line)
    return textwrap.dedent("\n".join(lines)).strip()


@pytest.mark.parametrize("name", dina_jax.__all__)
def test_every_name_is_the_library_object_with_documentation(name):
    obj = getattr(dina_jax, name)
    # The object itself, from the module the map names (not a wrapper): a jitted function
    # keeps .lower, a class is the class.
    assert obj is getattr(importlib.import_module(dina_jax._EXPORTS[name]), name)
    doc = inspect.getdoc(obj)
    assert doc, f"dina_jax.{name} has no docstring"
    if name in ARRAY_NAMES:
        assert SHAPE.search(doc), f"dina_jax.{name}: docstring states no array shape"
    if inspect.isclass(obj) or name == "available_configs":
        return
    assert "Example::" in doc, f"dina_jax.{name}: no example in the docstring"
    compile(_example(doc), f"<example of dina_jax.{name}>", "exec")
    assert re.search(r"(Sec\.|Eq\.|Fig\.|App\.|Table)", doc), f"dina_jax.{name}: no paper reference"


def test_load_config_by_name_path_and_overrides(tmp_path):
    assert {"base", "tiny", "synthetic", "m1"} <= set(dina_jax.available_configs())
    config = dina_jax.load_config(
        "tiny", {"train.num_epochs": 7, "analysis.ablation.fractions": [0.5, 1.0]}
    )
    assert config.train.num_epochs == 7 and config.analysis.ablation.fractions == (0.5, 1.0)
    assert config.data.source == "synthetic"
    by_path = dina_jax.load_config(str(CONFIGS_DIR / "tiny.py"))
    assert by_path.to_dict() == dina_jax.load_config("tiny").to_dict()
    base = dina_jax.load_config("base")
    assert base.loss.temperature == 0.01 and base.train.batch_size == 128
    with pytest.raises(KeyError, match="no field 'num_epoch'"):
        dina_jax.load_config("tiny", {"train.num_epoch": 1})
    with pytest.raises(KeyError, match="no section 'trian'"):
        dina_jax.load_config("tiny", {"trian.num_epochs": 1})
    with pytest.raises(TypeError, match="'num_epochs'.* many .*cannot be casted"):
        dina_jax.load_config("tiny", {"train.num_epochs": "many"})
    with pytest.raises(FileNotFoundError, match="no_such_config.py: no such config file"):
        dina_jax.load_config("no_such_config")


@pytest.fixture(scope="module")
def tiny_model(tiny_config, tiny_dataset):
    model = dina_jax.build_model(
        tiny_config,
        tiny_dataset.n_neurons,
        image_mean=tiny_dataset.image_mean,
        image_std=tiny_dataset.image_std,
    )
    return model, dina_jax.init_params(model, jax.random.key(0))


def test_encoders_match_the_model(tiny_model, tiny_dataset):
    model, params = tiny_model
    images = tiny_dataset.images[:3]
    responses = tiny_dataset.responses[:3]
    n = tiny_dataset.n_neurons
    mask = np.arange(n) < n // 2
    # The oracle: the module applied to the whole batch at once.
    apply = jax.jit(model.apply, static_argnames=("pathways", "method"))
    variables = {"params": params}
    z_img, z_neu, _ = apply(variables, images, responses)

    # batch_size 2 over 3 rows: the last call is zero-padded, which must change no real row.
    got = dina_jax.encode_images(model, params, images, batch_size=2)
    assert got.shape == (3, 16, 64) and got.dtype == np.float32
    np.testing.assert_allclose(got, z_img, rtol=1e-5, atol=1e-5)
    got = dina_jax.encode_neurons(model, params, responses, batch_size=2)
    assert got.shape == (3, 16, 64) and got.dtype == np.float32
    np.testing.assert_allclose(got, z_neu, rtol=1e-5, atol=1e-5)

    local = dina_jax.encode_images(model, params, images, pathways=("local",))
    expected = apply(variables, images, pathways=("local",), method="encode_images")
    np.testing.assert_allclose(local, expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(local, z_img)

    full = dina_jax.encode_neurons(model, params, responses, neuron_mask=np.ones(n, bool))
    np.testing.assert_allclose(full, z_neu, rtol=1e-5, atol=1e-5)
    half = dina_jax.encode_neurons(model, params, responses, neuron_mask=mask)
    expected = apply(variables, images, responses, neuron_mask=mask)[1]
    np.testing.assert_allclose(half, expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(half, z_neu)
    with pytest.raises(ValueError, match="S, H, W"):
        dina_jax.encode_images(model, params, images[0])


def test_feature_fns_feed_the_analyses_and_compile_once(tiny_model, tiny_dataset):
    model, params = tiny_model
    images, responses = tiny_dataset.images[:2], tiny_dataset.responses[:2]
    # The analyses pass these callables through jit as pytrees, as here.
    call = jax.jit(lambda fn, *args: fn(*args))
    feature_fn = dina_jax.image_feature_fn(model, params)
    np.testing.assert_allclose(
        call(feature_fn, images),
        dina_jax.encode_images(model, params, images),
        rtol=1e-5,
        atol=1e-5,
    )
    other = dina_jax.image_feature_fn(model, jax.tree.map(lambda p: p + 1.0, params))
    # Same pytree structure: jitted analyses reuse their compilation for new parameters.
    assert jax.tree.structure(feature_fn) == jax.tree.structure(other)

    mask = np.ones(tiny_dataset.n_neurons, np.float32)
    neural_fn = dina_jax.neural_feature_fn(model, params)
    np.testing.assert_allclose(
        call(neural_fn, responses, mask),
        dina_jax.encode_neurons(model, params, responses),
        rtol=1e-5,
        atol=1e-5,
    )
    ssim = dina_jax.masked_map_ssim(neural_fn, responses, mask[None])
    np.testing.assert_allclose(ssim, 1.0, atol=1e-5)  # The full population reproduces itself.

    q, k, key_mask = call(dina_jax.attention_qk_fn(model, params), responses)
    assert q.shape[:2] == k.shape[:2] == (2, tiny_dataset.n_neurons)


def test_load_trained_is_load_run(trained_workdir):
    run = dina_jax.load_trained(trained_workdir)
    assert dina_jax.load_trained is dina_jax.load_run
    assert isinstance(run, dina_jax.TrainedRun)
    model, params, config, dataset = run
    test = dataset.split.test
    maps = np.load(trained_workdir / "test_maps.npz")
    np.testing.assert_array_equal(maps["test_rows"], test)
    z_neu = dina_jax.encode_neurons(model, params, dataset.responses[test])
    np.testing.assert_allclose(z_neu, maps["z_neu"], rtol=1e-5, atol=1e-5)


def test_readme_api_section_names_exist():
    """Every ``dina_jax.<name>`` the README shows is part of the public surface."""
    readme = pathlib.Path(__file__).resolve().parents[1] / "README.md"
    if not readme.exists():
        pytest.skip("no README.md")
    used = set(re.findall(r"dina_jax\.([a-z_]+)\(", readme.read_text()))
    missing = {name for name in used if not hasattr(dina_jax, name)}
    assert not missing, missing
