"""experiments/ablations.py: the plan names real config fields, and the report's aggregation
equals a hand computation on made-up run summaries."""

import operator
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "experiments"))

import ablations  # noqa: E402

from dina_jax.config import load_config  # noqa: E402


def test_every_variant_and_mouse_overrides_existing_fields(tiny_config):
    for variant, mouse, seeds in (plan for plans in ablations.PLANS.values() for plan in plans):
        for seed in seeds:
            config = ablations.run_config(tiny_config, variant, mouse, seed, "/tmp/cache")
            assert config.seed == seed
    literal = ablations.run_config(load_config("synthetic"), "literal", "B", 0, "/tmp/cache")
    assert not literal.model.neural.residual and literal.train.ema_decay == 0.0
    assert literal.optim.neural.weight_decay == 0.0 and literal.train.responses == "mean"
    assert literal.data.synthetic.frac_complex == 0.5 and literal.data.synthetic.seed == 1
    assert literal.model.image.block == "dsnet"  # as the runs before the block field had it
    full = ablations.run_config(load_config("synthetic"), "literal_paper_block", "A", 0, "/c")
    assert full.model.image.block == "paper" and not full.model.neural.residual


def test_demo_variant_is_the_shipped_demo():
    """The "demo_e96" rows measure configs/synthetic.py itself, on its own simulated mouse."""
    shipped = load_config("synthetic")
    demo = ablations.run_config(shipped, "demo_e96", "A", shipped.seed, shipped.data.cache_dir)
    assert (
        ablations.MICE_VARIANTS[0] == "demo_e96"
        and "**demo**" in ablations.DESCRIPTIONS["demo_e96"]
    )
    assert demo.to_dict() == shipped.to_dict()
    earlier = ablations.run_config(shipped, "demo", "A", 0, shipped.data.cache_dir)
    assert earlier.train.num_epochs == 24 and earlier.model.neural.residual is False
    skip = ablations.run_config(shipped, "skip", "A", 0, "/tmp/cache")
    assert skip.model.neural.residual and skip.optim.neural.weight_decay_on == "all"


def _run(variant, seed, top1, ridge, removed=None):
    controls = {"uniform": {"top1": top1 / 2}}
    if removed is not None:
        controls["removed"] = {"top1": removed}
    metrics = {"top1": top1, "top5": 2 * top1, "top10": 3 * top1, "mean_rank": 10.0 * seed}
    return {
        "variant": variant,
        "mouse": "A",
        "seed": seed,
        "epochs_budget": 8,
        "dina": metrics,
        "ridge": {"top1": ridge, "top5": ridge, "top10": ridge, "mean_rank": 1.0},
        "best_val_loss": 1.0 + seed,
        "attention": {"sd_log_p": 0.5 * seed, "relative_entropy": 0.9},
        "controls": controls,
    }


def test_report_aggregates_mean_and_sample_sd_per_group():
    runs = [
        _run("demo", 0, 0.2, 0.1, removed=0.1),
        _run("demo", 1, 0.4, 0.3, removed=0.3),
        _run("literal", 0, 0.05, 0.1),
    ]
    table = {row["variant"]: row for row in ablations.aggregate(runs)}
    demo, literal = table["demo"], table["literal"]
    assert demo["seeds"] == [0, 1]
    assert demo["dina_top1"]["mean"] == pytest.approx(0.3)
    assert demo["dina_top1"]["sd"] == pytest.approx(0.1414213562)  # |0.4 - 0.2| / sqrt(2)
    assert demo["dina_mean_rank"]["mean"] == pytest.approx(5.0)
    assert demo["best_val_loss"]["mean"] == pytest.approx(1.5)
    assert demo["uniform_top1"]["mean"] == pytest.approx(0.15)
    assert demo["removed_top1"]["mean"] == pytest.approx(0.2)
    assert (
        literal["dina_top1"]["n"] == 1 and literal["dina_top1"]["sd"] != literal["dina_top1"]["sd"]
    )
    assert literal["removed_top1"]["n"] == 0  # no residual, no "removed" control


def test_shards_split_the_whole_plan_once_whatever_has_finished():
    plan = ablations.PLANS["main"]
    runs = [(v, m, s) for v, m, seeds in plan for s in seeds]
    shards = [ablations.shard_runs(plan, f"{i}/3") for i in range(3)]
    assert sorted(sum(shards, [])) == sorted(runs) and len(set(runs)) == len(runs)
    assert ablations.shard_runs(plan, "0/1") == runs
    for bad in ("2/2", "a/2", "1"):
        with pytest.raises(ValueError, match="--shard"):
            ablations.shard_runs(plan, bad)


def test_markdown_table_formats_mean_and_sd_and_replaces_only_its_block():
    runs = [
        _run("demo", 0, 0.2, 0.1, removed=0.1),
        _run("demo", 1, 0.4, 0.3, removed=0.3),
        _run("literal", 0, 0.05, 0.1),
    ]
    table_md = ablations.markdown_table(ablations.aggregate(runs))
    demo, literal = table_md.splitlines()[2:4]  # VARIANTS order: demo before literal
    assert "(`demo`) | A | 8 | 0,1 | 30.0 ± 14.1 / 60.0 ± 28.3 / 90.0 ± 42.4 | 5.0 ± 7.1 |" in demo
    assert "(`literal`) | A | 8 | 0 | 5.0 / 10.0 / 15.0 | 0.0 | 10.0 | 1.00 |" in literal
    text = f"before\n{ablations.TABLE_BEGIN}\nold rows\n{ablations.TABLE_END}\nafter\n"
    new = ablations.replace_generated_table(text, table_md)
    assert new.startswith("before\n") and new.endswith(f"{ablations.TABLE_END}\nafter\n")
    assert "old rows" not in new and table_md in new
    with pytest.raises(ValueError, match="block"):
        ablations.replace_generated_table("no markers", table_md)


def test_mice_table_compares_with_ridge_per_mouse_and_per_cell_mix():
    runs = []
    for mouse, top1, ridge in (("B", 0.5, 0.6), ("D", 0.3, 0.2), ("C", 0.7, 0.3), ("A", 0.1, 0)):
        run = _run("demo_e48", 0, top1, ridge)
        run["mouse"] = mouse
        runs.append(run)
    runs.append(_run("literal", 0, 0.9, 0.1))  # another variant: not in the table
    lines = ablations.mice_table(ablations.aggregate(runs), "demo_e48").splitlines()
    # Header, A B C D, then the 50% and 80% mixes of the mice other than the demo's own A.
    assert len(lines) == 2 + 4 + 2
    a, b, c, d, half, most = lines[2:]
    assert a.startswith("| A | 0 | 80% | 0 | 10.0 / 20.0 / 30.0 |")
    assert b.startswith("| B | 1 | 50% | 0 | 50.0 / 100.0 / 150.0 | 60.0 / 60.0 / 60.0 | -10.0 |")
    assert c.startswith("| C | 1 | 80% | 0 | 70.0 / 140.0 / 210.0 | 30.0 / 30.0 / 30.0 | +40.0 |")
    assert d.startswith("| D | 2 | 50% |")
    # 50%: B and D, mean and sample sd of their top-1 (0.5, 0.3) and of the gaps (-0.1, +0.1).
    assert half.startswith("| **50% complex, mean ± sd over 2 mice (B, D)** | | | | 40.0 ± 14.1 /")
    assert "| 0.0 ± 14.1 |" in half
    assert most.startswith("| **80% complex, mean ± sd over 1 mouse (C)** | | | | 70.0 /")


def test_mice_tables_show_each_measured_budget_under_its_description(monkeypatch):
    runs = [_run("demo_e48", 0, 0.5, 0.2), _run("demo", 0, 0.4, 0.2), _run("literal", 0, 0.1, 0)]
    table = ablations.aggregate(runs)
    monkeypatch.setattr(ablations, "MICE_VARIANTS", ("demo_e96", "demo_e48", "demo"))
    blocks = ablations.mice_tables(table).split("\n\n")
    # demo_e96 has no runs: left out; the others in MICE_VARIANTS order, each under its name.
    assert blocks[0] == f"{ablations.DESCRIPTIONS['demo_e48']} (`demo_e48`):"
    assert blocks[1] == ablations.mice_table(table, "demo_e48").rstrip("\n")
    assert blocks[2] == f"{ablations.DESCRIPTIONS['demo']} (`demo`):"
    assert blocks[3] == ablations.mice_table(table, "demo")  # the block ends with its newline
    assert len(blocks) == 4


def test_decisions_tables_are_generated_from_the_committed_summaries():
    """docs/decisions.md shows exactly what the summaries in experiments/results hold."""
    import json

    runs = [json.loads(p.read_text()) for p in sorted(ablations.RESULTS.glob("*.json"))]
    table = ablations.aggregate([r for r in runs if "variant" in r])
    text = ablations.DECISIONS.read_text()
    regenerated = ablations.replace_generated_table(text, ablations.markdown_table(table))
    regenerated = ablations.replace_generated_table(
        regenerated, ablations.mice_tables(table), ablations.MICE_BEGIN, ablations.MICE_END
    )
    assert regenerated == text, (
        "run `python experiments/ablations.py --report` after adding summaries"
    )


def test_learning_curve_figure_draws_the_demo_budgets_on_mouse_a(tmp_path):
    runs = []
    for variant, seed in (("demo_e48", 1), ("demo", 0), ("literal", 0)):
        run = _run(variant, seed, 0.3, 0.2)
        run["name"] = f"{variant}-A-seed{seed}"
        run["curve"] = {"val_loss": [3.0, 2.0, 1.5], "val_retrieval_top1": [0.01, None, 0.2]}
        runs.append(run)
    runs.append({**runs[0], "mouse": "B", "name": "demo_e48-B-seed1"})
    path = tmp_path / "figures" / "curves.png"
    drawn = ablations.plot_learning_curves(runs, path)
    assert drawn == ["demo-A-seed0", "demo_e48-A-seed1"]  # budget order; other mice, variants out
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_real_configs_variant_is_the_real_configs_training():
    """The "literal_paper_b128" rows measure the real configs' training at the demo's width.

    It holds the rates that configs/m1.py (and every real-data config) trains with, so a change
    of the base config's optimizers has to come with new measurements (docs/decisions.md).
    """
    shipped = load_config("synthetic")
    measured = ablations.run_config(shipped, "literal_paper_b128", "A", 0, "/tmp/cache")
    real = load_config("m1")
    assert measured.optim.to_dict() == real.optim.to_dict()
    for key in (
        "model.image.block",
        "model.neural.residual",
        "train.neuron_dropout",
        "train.batch_size",
        "train.patience",
        "train.responses",
        "train.ema_decay",
        "loss.temperature",
    ):
        field = operator.attrgetter(key)
        assert field(measured) == field(real), key
