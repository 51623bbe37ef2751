"""The cross-mouse report (``dina_jax.evaluation.report``) against hand computations on made-up
per-mouse results: mean ± SEM over mice, ranges, the paper-vs-run table."""

import json
import math

import numpy as np
import pytest

from dina_jax.evaluation import report

MICE = ("a", "b", "c")
DINA_TOP1 = {"a": 0.30, "b": 0.40, "c": 0.20}  # fractions, as results.json holds them


def _results(top1, ssim=(0.5, 0.1), lpips=None):
    return {
        "retrieval": {"top1": top1, "top5": 2 * top1, "top10": min(1.0, 3 * top1)},
        "linear_baseline": {"top1": top1 / 2},
        "noise_ceiling": {"top1": 0.9},
        "ssim": {"mean": ssim[0], "std": ssim[1]},
        "lpips": (
            {"status": "computed", "mean": lpips[0], "std": lpips[1]}
            if lpips
            else {"status": "weights not provided"}
        ),
    }


def _analysis(i):
    """Mouse i's analysis.json: every value a simple function of i."""
    return {
        "blobs": {
            "count_mean": 5.0 + i,
            "count_std": 1.0,
            "area_mean": 100.0 + 10 * i,
            "area_std": 20.0,
            "sti_mean": 0.1 * i,
            "sti_median": -0.1 + 0.1 * i,
            "sti_fraction_negative": 0.5 - 0.1 * i,
            "n_blobs": 10,
        },
        "ablation": {"ranked_fraction": 0.10 + 0.02 * i, "random_fraction": 0.5},
        "attention": {
            "mu": -8.0 + i,
            "sigma": 1.0,
            "ks": 0.05,
            "ks_normal": 0.02 if i == 2 else 0.3,  # the log-normal fits better in 2 of 3
            "r2_density": 0.9,
        },
        "attention_contribution": {
            "intact_top1": 0.3,
            "uniform_top1": 0.3 - 0.01 * i,
            "uniform_top1_cost": 0.01 * i,
            "sd_log_p": 0.5,
            "relative_entropy": 0.9,
        },
        "pathways": {"mean_local": 0.4, "mean_global": 0.6 if i < 2 else 0.3},
    }


def _records():
    records = []
    for i, mouse in enumerate(MICE):
        sti = np.array([-0.5, 0.0, 0.5, np.nan]) + 0.1 * i
        records.append(
            dict(
                mouse=mouse,
                condition="natural",
                model="dina",
                results=_results(DINA_TOP1[mouse], ssim=(0.6 + 0.05 * i, 0.07), lpips=None),
                analysis=_analysis(i),
                panels={"sti": sti},
                semantic={
                    "top1_others": 0.1 * (i + 1),
                    "top1_others_chance": 0.1,
                    "top5_others": 0.1,
                    "top5_others_chance": 0.1,
                    "top5_others_p": 0.5,
                    "n_queries": 280,
                },
            )
        )
        records.append(
            dict(
                mouse=mouse,
                condition="natural",
                model="vgg16_mlp",
                results=_results(0.1, ssim=(0.2, 0.1), lpips=(0.3 - 0.05 * i, 0.02)),
                analysis=None,
                semantic=None,
            )
        )
    for mouse, top1 in (("a", 0.04), ("b", 0.06)):
        records.append(
            dict(mouse=mouse, condition="whitened", model="dina", results=_results(top1))
        )
    return records


def test_spread_is_mean_sd_and_sem_over_mice():
    stat = report.spread({"a": 1.0, "b": 2.0, "c": 6.0, "d": None, "e": float("nan")})
    assert stat["mean"] == pytest.approx(3.0)
    assert stat["sd"] == pytest.approx(math.sqrt(7.0))  # ((4 + 1 + 9) / 2) ** 0.5
    assert stat["sem"] == pytest.approx(math.sqrt(7.0 / 3))
    assert (stat["n"], stat["min"], stat["max"]) == (3, 1.0, 6.0)
    one = report.spread({"a": 2.0})
    assert one["mean"] == 2.0 and math.isnan(one["sd"]) and math.isnan(one["sem"])


def test_aggregate_matches_a_hand_computation():
    agg = report.aggregate(_records())
    dina = agg["retrieval"]["natural"]["dina"]
    # Top-1 30, 40, 20 %: mean 30, sd 10, SEM 10 / sqrt(3).
    assert dina["top1"]["mean"] == pytest.approx(30.0)
    assert dina["top1"]["sd"] == pytest.approx(10.0)
    assert dina["top1"]["sem"] == pytest.approx(10.0 / math.sqrt(3))
    assert dina["top10"]["mean"] == pytest.approx(100 * (0.9 + 1.0 + 0.6) / 3)
    assert dina["linear_top1"]["mean"] == pytest.approx(15.0)
    assert agg["retrieval"]["whitened"]["dina"]["top1"]["mean"] == pytest.approx(5.0)
    assert agg["retrieval"]["whitened"]["dina"]["top1"]["n"] == 2
    # Map SSIM: per-mouse means 0.60, 0.65, 0.70; the range is the lowest and highest mouse.
    ssim = agg["map_ssim"]["dina"]["range"]
    assert (ssim["low"]["mouse"], ssim["high"]["mouse"]) == ("a", "c")
    assert ssim["low"]["mean"] == pytest.approx(0.60) and ssim["high"]["mean"] == pytest.approx(0.7)
    assert agg["map_lpips"]["dina"]["status"] == "not computed"
    lpips = agg["map_lpips"]["vgg16_mlp"]["range"]
    assert (lpips["low"]["mouse"], lpips["high"]["mouse"]) == ("c", "a")
    # Blobs: counts 5, 6, 7 -> 6 ± 1 sd; sizes 100, 110, 120 -> 110 ± 10.
    assert agg["blobs"]["count"]["mean"] == pytest.approx(6.0)
    assert agg["blobs"]["count"]["sd"] == pytest.approx(1.0)
    assert agg["blobs"]["count"]["sem"] == pytest.approx(1 / math.sqrt(3))
    assert agg["blobs"]["area"]["mean"] == pytest.approx(110.0)
    # Ablation: 10, 12, 14 % -> 12 ± 2 / sqrt(3) SEM.
    ranked = agg["ablation"]["ranked_fraction_pct"]
    assert ranked["mean"] == pytest.approx(12.0)
    assert ranked["sem"] == pytest.approx(2.0 / math.sqrt(3))
    # STI pooled over mice: the finite values -0.5, 0, 0.5 shifted by 0, 0.1, 0.2.
    pooled = np.array([-0.5, 0.0, 0.5, -0.4, 0.1, 0.6, -0.3, 0.2, 0.7])
    assert agg["sti"]["pooled"]["n"] == 9
    assert agg["sti"]["pooled"]["q50"] == pytest.approx(np.median(pooled))
    assert agg["sti"]["sti_median"]["mean"] == pytest.approx(0.0)
    # Attention: mu -8, -7, -6; the log-normal beats the normal (smaller KS) in mice a and b.
    assert agg["attention"]["mu"]["mean"] == pytest.approx(-7.0)
    assert agg["attention"]["lognormal_better"] == 2
    assert agg["attention_contribution"]["uniform_top1_cost"]["mean"] == pytest.approx(1.0)
    assert agg["pathways"]["global_higher"] == 2
    assert agg["semantic"]["dina"]["top1_others"]["mean"] == pytest.approx(0.2)
    assert "vgg16_mlp" not in agg["semantic"]


def test_paper_vs_run_table_rows():
    rows = {r["quantity"]: r for r in report.aggregate(_records())["comparison"]}
    table1 = rows["Table 1 mean, DINA (top-1/5/10 %)"]
    assert table1["paper"] == "36.79 / 60.45 / 68.75"
    # top-5: 60, 80, 40 -> 60 ± 11.55; top-10: 90, 100, 60 -> 83.33 ± 12.02.
    assert table1["run"] == "30.00 / 60.00 / 83.33 (SEM 5.77 / 11.55 / 12.02; n=3)"
    assert rows["Table 1 mean, ViT-MLP (top-1/5/10 %)"]["run"] == "–"  # no ViT runs
    assert rows["DINA on whitened images (top-1/5/10 %)"]["run"].startswith("5.00 / 10.00 / 15.00")
    assert rows["DINA on 8D images (top-1/5/10 %)"]["run"] == "–"
    ssim = rows["Paired-map SSIM, DINA: range over mice of mean ± sd over stimuli"]
    assert ssim["paper"] == "0.655 ± 0.065 to 0.757 ± 0.068"
    assert ssim["run"] == "0.600 ± 0.070 (a) to 0.700 ± 0.070 (c)"
    lpips = rows["Paired-map LPIPS, DINA: range over mice of mean ± sd over stimuli"]
    assert lpips["run"].startswith("not computed")
    blobs = rows["Blobs per image (mean over mice)"]
    assert blobs["paper"].startswith("6.21 ± 0.23")
    assert blobs["run"] == "6.00 ± 1.00 sd (n=3); SEM 0.58"
    ablation = rows["Neurons for SSIM >= 0.9, response-ranked (%)"]
    assert ablation["paper"].startswith("12.00 ± 2.31")
    assert ablation["run"] == "12.00 ± 1.15 SEM (n=3)"
    attention = rows["Attention scores: log-normal fit"]["run"]
    assert "log-normal fits better in 2 of 3 mice" in attention
    semantic = rows["Same-class retrievals, DINA: top-1 / top-5 others vs chance"]["run"]
    assert semantic == "top-1 20.0% vs 10.0%; top-5 10.0% vs 10.0% (n=3)"


def test_paper_table1_means_are_the_means_of_its_rows_but_two():
    """Guards the transcription: every mean of Table 1 is the mean of its four rows, except the
    two the paper gets wrong (listed in PAPER["notes"])."""
    table = report.PAPER["table1"]
    wrong = []
    for model, mice in table["per_mouse"].items():
        rows = np.array(list(mice.values()))
        for k, (computed, printed) in enumerate(
            zip(rows.mean(0), table["mean"][model], strict=True)
        ):
            if abs(computed - printed) > 0.01:
                wrong.append((model, report.TOPK[k]))
    assert wrong == [("dina", 10), ("vgg16_mlp", 5)]
    assert len(report.PAPER["notes"]) == 2


def test_report_files_hold_no_nan_and_render(tmp_path):
    records = _records()
    agg = report.aggregate(records)
    path = report.write_json(tmp_path / "report.json", {"aggregate": agg, "runs": records})
    loaded = json.loads(open(path).read())  # allow_nan=False when writing: strict JSON
    assert loaded["aggregate"]["retrieval"]["whitened"]["dina"]["top1"]["sem"] is not None
    assert loaded["aggregate"]["map_lpips"]["dina"]["status"] == "not computed"
    text = report.to_markdown({"aggregate": agg, "meta": {"data": "made up"}})
    assert "| Table 1 mean, DINA (top-1/5/10 %) | 36.79 / 60.45 / 68.75 | 30.00" in text
    assert "- data: made up" in text and "## Semantic category" in text
