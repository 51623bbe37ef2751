"""experiments/colab_tpu.ipynb: committed clean, and executed end to end on the tiny config.

The execution injects parameters the way papermill does (a cell after the one tagged
``parameters``) and runs the notebook in a fresh ``python3`` kernel of this interpreter, with two
fake CPU devices so that the pmapped training step really splits its batches. The package is
importable there, so the clone-and-install cell does nothing, as on a machine that installed it.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import sys

import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "experiments", "colab_tpu.ipynb")
PARAMETERS = (
    "repo_url",
    "repo_ref",
    "use_drive",
    "drive_workdir",
    "accelerator",
    "config_name",
    "data_dir",
    "num_epochs",
    "n_analysis_images",
    "workdir",
    "repo_dir",
    "cache_dir",
    "overrides",
)


def _read():
    return nbformat.read(NOTEBOOK, as_version=4)


def _parameters_cell(notebook) -> int:
    tagged = [
        i
        for i, cell in enumerate(notebook.cells)
        if "parameters" in cell.get("metadata", {}).get("tags", [])
    ]
    assert len(tagged) == 1, f"expected one cell tagged 'parameters', found {len(tagged)}"
    return tagged[0]


def test_committed_notebook_is_valid_clean_and_parameterized():
    notebook = _read()
    nbformat.validate(notebook)
    assert notebook.nbformat == 4
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "outputs not cleared"
    source = notebook.cells[_parameters_cell(notebook)].source
    namespace: dict = {}
    exec(source, namespace)  # The parameters cell is plain assignments.
    assert set(PARAMETERS) <= set(namespace)


def test_links_work_outside_the_repository():
    # Colab opens the notebook alone: links are absolute, to the project's own repository.
    parser = configparser.ConfigParser()
    parser.read(os.path.join(ROOT, "setup.cfg"))
    repository = parser["metadata"]["url"]
    notebook = _read()
    text = "\n".join(cell.source for cell in notebook.cells)
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert links and all(link.startswith("https://") for link in links), links
    github = [link for link in links if "github" in link]
    colab = repository.replace("https://github.com", "https://colab.research.google.com/github")
    assert all(link.startswith((repository, colab)) for link in github), github
    assert f'repo_url = "{repository}"' in notebook.cells[_parameters_cell(notebook)].source
    with open(os.path.join(ROOT, "README.md")) as f:
        assert f"{colab}/blob/main/experiments/colab_tpu.ipynb" in f.read()  # the badge


def _kernel_spec_dir(root) -> str:
    """A kernelspec ``python3`` that runs this interpreter, whatever the machine has installed."""
    folder = root / "kernels" / "python3"
    folder.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (dina_jax tests)",
        "language": "python",
    }
    (folder / "kernel.json").write_text(json.dumps(spec))
    return str(root)


def test_notebook_runs_end_to_end_on_the_tiny_config(
    tiny_config, tiny_dataset, tmp_path, monkeypatch
):
    nbclient = pytest.importorskip("nbclient")

    del tiny_dataset  # Generated into tiny_config.data.cache_dir; the notebook reuses it.
    workdir = tmp_path / "run"
    parameters = {
        "config_name": "tiny",
        "data_dir": "",
        "num_epochs": 1,
        "n_analysis_images": 2,
        "workdir": str(workdir),
        "repo_dir": str(tmp_path / "clone"),  # never cloned: dina_jax is importable
        # A TPU runtime whose JAX sees only the CPU (as after pip replaced Colab's JAX).
        "accelerator": "tpu",
        "cache_dir": tiny_config.data.cache_dir,
        # A coarse occlusion grid (4 x 16 centres) and 3 subset sizes: a smoke test, not Fig. 5-6.
        "overrides": {
            "analysis.occlusion.stride": 17,
            "analysis.ablation.fractions": (0.1, 0.5, 1.0),
        },
    }
    notebook = _read()
    injected = nbformat.v4.new_code_cell(
        "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
    )
    injected.metadata["tags"] = ["injected-parameters"]
    notebook.cells.insert(_parameters_cell(notebook) + 1, injected)

    # The kernel inherits this environment: our kernelspec first (a user-level "python3" may run
    # another interpreter), two fake CPU devices, no GUI backend.
    monkeypatch.setenv("JUPYTER_PATH", _kernel_spec_dir(tmp_path / "jupyter"))
    flags = os.environ.get("XLA_FLAGS", "")
    monkeypatch.setenv("XLA_FLAGS", f"{flags} --xla_force_host_platform_device_count=2".strip())
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    client = nbclient.NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # Raises CellExecutionError with the cell's traceback on any failure.

    figures = sorted(os.listdir(workdir / "figures"))
    for name in ("similarity_matrix", "fig5c", "fig5h", "fig6a", "fig6b"):
        assert any(f.startswith(name) for f in figures), (name, figures)
    assert (workdir / "results.json").exists() and (workdir / "analysis.h5").exists()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "".join(o.get("text", "") for o in outputs)
    assert "2 devices" in text, "the kernel did not see the two fake devices"
    assert "2 device(s) x 8 examples" in text
    assert "WARNING: this is a TPU runtime but JAX sees only the CPU" in text
    assert 'pip install -U "jax[tpu]"' in text
    assert not (tmp_path / "clone").exists()
    assert f"TensorBoard: tensorboard --logdir {workdir / 'tensorboard'}" in text
    # Every figure the library wrote is displayed, plus the notebook's own three.
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= len(figures) + 3
