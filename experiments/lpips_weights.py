"""Writes the LPIPS weights file that dina_jax reads (``config.eval.lpips_weights``).

LPIPS (Zhang et al. 2018, "alex", v0.1) is the AlexNet trunk of torchvision with the per-channel
layer weights of the ``lpips`` package. Neither ships with dina_jax; on a machine that has them
(``pip install torch torchvision lpips``; torchvision fetches its ImageNet AlexNet weights on first
use, or finds them in its cache ``~/.cache/torch/hub/checkpoints``)::

  python -m experiments.lpips_weights --out lpips_alex_v0.1.npz
  python -m dina_jax.main --config configs/m1.py ... --config.eval.lpips_weights=lpips_alex_v0.1.npz

The file holds the arrays of ``dina_jax.evaluation.lpips.lpips_expected_shapes()`` in PyTorch
layout. ``tests/test_lpips_reference.py`` checks the JAX LPIPS against the ``lpips`` package
with weights exported by :func:`export_weights`.
"""

from __future__ import annotations

import numpy as np
from absl import app, flags


def export_weights(model) -> dict[str, np.ndarray]:
    """The weights of an ``lpips.LPIPS(net="alex")`` module as dina_jax's LPIPS arrays."""
    import torch

    convs = [m for m in model.net.modules() if isinstance(m, torch.nn.Conv2d)]
    if len(convs) != 5:
        raise ValueError(f"expected the 5 AlexNet convolutions, found {len(convs)}")
    arrays = {}
    for i, conv in enumerate(convs, start=1):
        arrays[f"conv{i}_weight"] = conv.weight.detach().cpu().numpy()
        arrays[f"conv{i}_bias"] = conv.bias.detach().cpu().numpy()
    for j in range(5):
        (linear,) = [
            m for m in getattr(model, f"lin{j}").modules() if isinstance(m, torch.nn.Conv2d)
        ]
        arrays[f"lin{j}_weight"] = linear.weight.detach().cpu().numpy()
    return {key: value.astype(np.float32) for key, value in arrays.items()}


def define_flags() -> None:
    """The command line (defined only when run as a script: absl flags are global)."""
    flags.DEFINE_string("out", None, "The .npz file to write.", required=True)


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        import lpips
    except ImportError:
        raise SystemExit("error: needs torch, torchvision and lpips (pip install lpips)") from None
    from dina_jax.evaluation.lpips import load_lpips_weights

    model = lpips.LPIPS(net="alex", version="0.1", verbose=False)  # ImageNet AlexNet + v0.1 lins
    np.savez(flags.FLAGS.out, **export_weights(model))
    load_lpips_weights(flags.FLAGS.out)  # The file dina_jax will read is valid.
    print(f"wrote {flags.FLAGS.out}; use --config.eval.lpips_weights={flags.FLAGS.out}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
