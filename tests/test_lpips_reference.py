"""The JAX LPIPS equals the ``lpips`` package on the same weights (skipped where torch, torchvision
or lpips is missing). The AlexNet trunk is randomly initialized (``pnet_rand``: nothing is
downloaded) and the layer weights are the package's own v0.1 file; experiments/lpips_weights.py
exports both, as it does for the ImageNet trunk."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
lpips_package = pytest.importorskip("lpips")


def test_jax_lpips_matches_the_lpips_package(tmp_path):
    import jax.numpy as jnp

    from dina_jax.evaluation import lpips
    from experiments.lpips_weights import export_weights

    torch.manual_seed(0)
    model = lpips_package.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False).eval()
    path = tmp_path / "lpips.npz"
    np.savez(path, **export_weights(model))
    weights = lpips.load_lpips_weights(path)

    rng = np.random.default_rng(0)
    maps0, maps1 = rng.normal(size=(2, 4, 16, 64)).astype(np.float32)
    resize_hw = (64, 256)
    ours = np.asarray(lpips.lpips_distance(weights, maps0, maps1, resize_hw=resize_hw))
    inputs = [np.array(lpips.lpips_inputs(jnp.asarray(m), resize_hw)) for m in (maps0, maps1)]
    with torch.no_grad():
        theirs = model(*(torch.from_numpy(x) for x in inputs)).numpy().reshape(-1)
    assert ours.shape == theirs.shape == (4,)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)
    assert np.all(theirs > 0)
