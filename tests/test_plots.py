"""Figures behave in notebooks: no backend change at import, Figure objects, ``ax=``, formats."""

import subprocess
import sys

import numpy as np
import pytest
from matplotlib.figure import Figure

from dina_jax import plots


def test_import_leaves_the_backend_and_pyplot_alone():
    code = (
        "import matplotlib; matplotlib.use('svg'); import dina_jax.plots as p, numpy as np; "
        "import matplotlib.pyplot as plt; p.plot_blob_counts(np.arange(5)); "
        "print(matplotlib.get_backend(), len(plt.get_fignums()))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["svg", "0"]


def test_single_panel_plots_draw_into_a_given_axes():
    fig = Figure(figsize=(8, 3))
    left, right = fig.subplots(1, 2)
    assert plots.plot_blob_sizes(np.arange(1.0, 20.0), ax=left) is fig
    returned = plots.plot_similarity_matrix(np.eye(4), ax=right)
    assert returned is fig and right.images and left.patches


@pytest.mark.parametrize(
    ("fmt", "magic"), [("png", b"\x89PNG"), ("pdf", b"%PDF"), ("svg", b"<?xm")]
)
def test_save_writes_the_configured_format(tmp_path, fmt, magic):
    fig = plots.plot_sti_distribution(np.linspace(-1, 1, 30))
    assert isinstance(fig, Figure)
    path = plots.save(fig, tmp_path / "sub" / "fig5h_sti.png", format=fmt, dpi=50)
    assert path == str(tmp_path / "sub" / f"fig5h_sti.{fmt}")
    with open(path, "rb") as f:
        assert f.read(4) == magic


def test_dpi_sets_the_raster_size(tmp_path):
    import matplotlib.image

    fig = plots.plot_blob_counts(np.arange(5))
    small = matplotlib.image.imread(plots.save(fig, tmp_path / "a", dpi=50))
    large = matplotlib.image.imread(plots.save(fig, tmp_path / "b", dpi=100))
    assert 1.8 * small.shape[0] < large.shape[0] < 2.2 * small.shape[0]


def test_unknown_format_is_refused(tmp_path):
    with pytest.raises(ValueError, match="png"):
        plots.save(plots.plot_blob_counts(np.arange(3)), tmp_path / "x", format="jpg")


def test_analysis_figures_follow_the_config(tmp_path):
    import ml_collections

    from dina_jax.analysis.stages import StageContext

    figures = ml_collections.ConfigDict({"format": "svg", "dpi": 50})
    ctx = StageContext(None, None, None, None, None, str(tmp_path), figures)
    path = ctx.save(plots.plot_blob_counts(np.arange(4)), "fig5e_blob_count.png")
    assert path == str(tmp_path / "fig5e_blob_count.svg") and (tmp_path / path).exists()
