"""experiments/reproduce.py: the command line, the plan of runs, and a tiny end-to-end
reproduction (two simulated mice) that reuses a finished run and resumes without training."""

import json
import pathlib
import shutil
import subprocess
import sys

import pytest
from absl import flags

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import reproduce  # noqa: E402

from dina_jax.config import load_config  # noqa: E402


@pytest.mark.parametrize(
    "command", [["experiments/reproduce.py"], ["-m", "experiments.reproduce"]], ids=str
)
def test_help_works_without_data(command):
    result = subprocess.run(
        [sys.executable, *command, "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "--synthetic" in result.stdout and "--data_dir" in result.stdout


def test_command_line_errors_are_one_line(tmp_path):
    def run(*args):
        command = [sys.executable, "experiments/reproduce.py", "--root", str(tmp_path), *args]
        return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=60)

    for args in (
        (),  # neither real nor simulated data
        ("--synthetic", "2", "--data-dir", str(tmp_path)),
        ("--synthetic", "2", "--config", "configs/tiny.py", "--config.train.num_epochz=1"),
    ):
        result = run(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, args
    assert not (tmp_path / "report.md").exists()


def test_flags_make_options_with_the_config_and_its_overrides(tmp_path, monkeypatch):
    argv = [
        "reproduce.py",
        "--synthetic=3",
        f"--root={tmp_path}",
        f"--config={ROOT / 'configs' / 'tiny.py'}",
        "--config.analysis.n_images=4",
        "--epochs=2",
        "--models=dina",
        "--conditions=natural",
    ]
    monkeypatch.setattr(sys, "argv", argv)  # config_flags finds the overrides in sys.argv.
    fv = flags.FlagValues()  # Not absl's global FLAGS: dina_jax.main defines --config there.
    holders = reproduce.define_flags(fv)
    fv(argv)
    options = reproduce.options_from_flags(holders, fv)
    assert options.synthetic == 3 and options.epochs == 2
    assert options.base_config.analysis.n_images == 4
    assert options.overrides == {"analysis.n_images": 4}
    assert options.models == ("dina",) and options.conditions == ("natural",)


def test_real_data_plan_is_the_papers(tmp_path):
    options = reproduce.Options(
        root=tmp_path, data_dir="/data/stringer", overrides={"train.num_epochs": 7}
    )
    runs = reproduce.plan_runs(options)
    names = [r.name for r in runs]
    natural = [f"natural/m{i}/{m}" for i in (1, 2, 3, 4) for m in reproduce.MODELS]
    controls = [f"whitened/white_m{i}/dina" for i in (1, 2)]
    controls += [f"8D/eight_d_m{i}/dina" for i in (1, 2)]
    assert names == natural + controls
    for run in runs:
        assert run.config.data.dir == "/data/stringer"
        assert run.config.train.num_epochs == 7
        assert run.config.model.name == run.model
        assert run.analyse == (run.name.startswith("natural/") and run.model == "dina")
        assert run.workdir == tmp_path / run.condition / run.mouse / run.model
    assert runs[0].config.data.recording == load_config("m1").data.recording


def test_missing_real_files_stop_the_run_before_any_training(tmp_path):
    from dina_jax.data.stringer import DataError

    data = tmp_path / "stringer"
    data.mkdir()
    options = reproduce.Options(root=tmp_path / "root", data_dir=str(data))
    with pytest.raises(DataError, match="natimg2800_M160825_MP027_2016-12-14.mat: file not found"):
        reproduce.reproduce(options)
    assert not (tmp_path / "root" / "natural").exists()


def test_synthetic_plan_simulates_each_mouse(tmp_path):
    runs = reproduce.plan_runs(reproduce.Options(root=tmp_path, synthetic=3, epochs=2))
    assert len(runs) == 3 * 3 + 2 + 2  # Three models on natural images; two control mice.
    for run in runs:
        syn = run.config.data.synthetic
        assert syn.stimset == reproduce.STIMSETS[run.condition]
        assert f"sim{syn.mouse}" == run.mouse and syn.mouse < syn.n_mice
        assert syn.n_mice == (3 if run.condition == "natural" else 2)
        assert run.config.train.num_epochs == 2
        assert run.config.data.cache_dir == str(tmp_path / "dina_cache")
        cpu = run.config.model.vit.dim == reproduce.CPU_BASELINE["model.vit.dim"]
        assert cpu == (run.model != "dina")


def test_tiny_reproduction_end_to_end(tiny_config, trained_workdir, tmp_path, monkeypatch):
    base = tiny_config.copy_and_resolve_references()
    base.analysis.ablation.fractions = (0.1, 0.5, 1.0)
    base.analysis.occlusion.stride = 17
    options = reproduce.Options(
        root=tmp_path,
        synthetic=2,
        base_config=base,
        epochs=1,
        models=("dina", "vgg16_mlp"),
        conditions=("natural",),  # The control conditions plan alike (test above).
        cpu_baselines=False,
    )
    # A finished run is reused: the session's tiny run is simulated mouse 0 (the simulator
    # draws mouse 0 alike whatever the number of mice).
    shutil.copytree(trained_workdir, tmp_path / "natural" / "sim0" / "dina")
    result = reproduce.reproduce(options)

    timings = json.loads((tmp_path / "timings.json").read_text())
    assert timings["natural/sim0/dina"]["reused"] is True
    assert "train_s" not in timings["natural/sim0/dina"]
    assert timings["natural/sim1/vgg16_mlp"]["reused"] is False
    assert set(timings) == {
        "natural/sim0/dina",
        "natural/sim0/vgg16_mlp",
        "natural/sim1/dina",
        "natural/sim1/vgg16_mlp",
    }
    saved = json.loads((tmp_path / "report.json").read_text())
    agg = saved["aggregate"]
    assert agg["retrieval"]["natural"]["dina"]["top1"]["n"] == 2
    assert agg["blobs"]["count"]["n"] == 2 and agg["ablation"]["ranked_fraction_pct"]["n"] == 2
    assert agg["attention"]["mu"]["n"] == 2
    assert agg["attention_contribution"]["intact_top1"]["n"] == 2
    assert agg["semantic"]["dina"]["top5_others"]["n"] == 2  # the simulator's class file
    assert agg["semantic"]["dina"]["class_names"][0] == "astronaut"
    assert len(agg["comparison"]) == len(result["aggregate"]["comparison"]) >= 15
    for name in ("fig5e_blob_count_mice", "fig5h_sti_mice", "fig6a_ablation_mice"):
        assert f"figures/{name}.png" in saved["figures"]
    assert "figures/fig6b_attention_mice.png" in saved["figures"]
    assert "figures/semantic_confusion.png" in saved["figures"]
    for figure in saved["figures"]:
        assert (tmp_path / figure).stat().st_size > 0
    text = (tmp_path / "report.md").read_text()
    assert "| Table 1 mean, DINA (top-1/5/10 %) | 36.79 / 60.45 / 68.75 |" in text

    # Every run finished: a second call trains, evaluates and analyses nothing, and reports the
    # same numbers.
    def fail(*_args, **_kwargs):
        raise AssertionError("trained, evaluated or analysed again")

    monkeypatch.setattr("dina_jax.training.train_and_evaluate", fail)
    monkeypatch.setattr("dina_jax.evaluation.evaluate", fail)
    monkeypatch.setattr("dina_jax.analysis.run.analyze", fail)
    again = reproduce.reproduce(options)
    assert again["aggregate"]["retrieval"] == result["aggregate"]["retrieval"]
    assert again["aggregate"]["blobs"] == result["aggregate"]["blobs"]
    assert json.loads((tmp_path / "timings.json").read_text())["natural/sim1/dina"] == {
        **timings["natural/sim1/dina"],
        "reused": True,
        "analysis_reused": True,
    }
    # Other analysis settings analyse the reused runs again (analyze resumes stage by stage).
    analysed = []
    monkeypatch.setattr("dina_jax.analysis.run.analyze", lambda c, w: analysed.append(w))
    options.base_config.analysis.blobs.threshold = 0.5
    reproduce.reproduce(options)
    assert sorted(pathlib.Path(w).parent.name for w in analysed) == ["sim0", "sim1"]
