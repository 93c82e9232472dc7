"""The experiment report: summary statistics, RelaImpr, markdown tables, files, PNGs.

Expected values are re-derived independently: means and standard deviations with
`statistics` and numpy, RelaImpr with the paper's formula written out here.
"""

from __future__ import annotations

import copy
import json
import statistics

import numpy as np
import pytest
from matplotlib.image import imread

from daian_tf.core.errors import DaianInputError
from daian_tf.experiments.report import markdown_table, write_report
from daian_tf.experiments.summary import summarize

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SEEDS = (0, 1, 2)
# Hand-picked metrics per (variant, seed): distinct values, all AUC/GAUC above 0.5.
METRICS = {
    ("din", 0): (0.610, 0.580, 0.412),
    ("din", 1): (0.620, 0.590, 0.405),
    ("din", 2): (0.605, 0.575, 0.418),
    ("daian", 0): (0.640, 0.605, 0.401),
    ("daian", 1): (0.652, 0.611, 0.399),
    ("daian", 2): (0.631, 0.598, 0.404),
}
GROUPS = {"din": {"0": 0.60, "1": 0.57, "2+": 0.55},
          "daian": {"0": 0.61, "1": 0.59, "2+": 0.58}}


def _intent(num_levels: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    pred, true = rng.dirichlet(np.ones(num_levels), size=2)
    return {"js_specific": 0.07 + 0.01 * seed, "js_broad": 0.15 - 0.01 * seed,
            "js_all": 0.11, "mean_pred_specific": pred.tolist(),
            "mean_true_specific": true.tolist(), "mean_pred_broad": true.tolist(),
            "mean_true_broad": pred.tolist()}


def _run(variant: str, seed: int, num_levels: int = 6, **metrics) -> dict:
    auc, gauc, logloss = metrics.get("values", METRICS[(variant, seed)])
    run = {"variant": variant, "seed": seed, "num_levels": num_levels,
           "metrics": {"auc": auc, "gauc": gauc, "logloss": logloss},
           "gauc_by_diversity": dict(GROUPS[variant]), "train_seconds": 3.0,
           "samples_per_second": 500.0}
    if variant == "daian":
        run["intent"] = _intent(num_levels, seed)
    return run


@pytest.fixture
def results() -> dict:
    return {
        "config": {"epochs": 1},
        "dataset": {"train_samples": 1000, "eval_samples": 200, "raw_dir": "/raw"},
        "runs": [_run(v, s) for v in ("daian", "din") for s in SEEDS],
        "reference_rows": [
            {"name": "oracle", "metrics": {"auc": 0.75, "gauc": 0.70, "logloss": 0.35}},
            {"name": "popularity",
             "metrics": {"auc": 0.55, "gauc": 0.52, "logloss": 0.45}}],
        "base_variant": "din",
        "n_sweep_variant": "daian",
    }


def _column(variant: str, index: int) -> list:
    return [METRICS[(variant, s)][index] for s in SEEDS]


def _hand_rela_impr(model: float, base: float) -> float:
    return ((model - 0.5) / (base - 0.5) - 1.0) * 100.0


def _section(text: str, heading: str) -> str:
    """The text of the `## heading` section of a report."""
    return text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


def _table_line(text: str, first_cells: str) -> str:
    """The one table line starting with `| first_cells |`."""
    lines = [ln for ln in text.splitlines() if ln.startswith(f"| {first_cells} |")]
    assert len(lines) == 1, (first_cells, text)
    return lines[0]


def _ranking(text: str) -> str:
    return _section(text, "Ranking metrics")


def test_summary_means_and_stds_match_numpy(results):
    rows = summarize(results)
    assert [(r.variant, r.num_levels) for r in rows] == [("din", 6), ("daian", 6)]
    for row in rows:
        assert row.seeds == SEEDS and row.is_base == (row.variant == "din")
        for index, metric in enumerate(("auc", "gauc", "logloss")):
            values = _column(row.variant, index)
            stat = row.metrics[metric]
            assert stat.count == 3
            assert stat.mean == pytest.approx(np.mean(values), abs=1e-12)
            assert stat.std == pytest.approx(np.std(values, ddof=1), abs=1e-12)
            assert stat.std == pytest.approx(statistics.stdev(values), abs=1e-12)
    daian = rows[1]
    js = [_intent(6, s)["js_specific"] for s in SEEDS]
    assert daian.intent["js_specific"].mean == pytest.approx(statistics.mean(js))
    assert daian.intent["js_specific"].std == pytest.approx(statistics.stdev(js))
    assert rows[0].intent == {}  # DIN predicts no intent distribution
    assert daian.gauc_by_diversity["2+"].mean == pytest.approx(0.58)


def test_rela_impr_of_means_and_paired_match_the_formula(results):
    base, daian = summarize(results)
    assert daian.base_num_levels == 6 and base.base_num_levels is None
    for index, metric in ((0, "auc"), (1, "gauc")):
        model_values, base_values = _column("daian", index), _column("din", index)
        expected = _hand_rela_impr(statistics.mean(model_values),
                                   statistics.mean(base_values))
        assert daian.rela_impr[metric] == pytest.approx(expected, abs=1e-9)
        per_seed = [_hand_rela_impr(m, b) for m, b in zip(model_values, base_values)]
        paired = daian.paired_rela_impr[metric]
        assert paired.count == 3
        assert paired.mean == pytest.approx(statistics.mean(per_seed), abs=1e-9)
        assert paired.std == pytest.approx(statistics.stdev(per_seed), abs=1e-9)
        # The mean of ratios is not the ratio of means: the two must differ here.
        assert paired.mean != pytest.approx(expected, abs=1e-6)


def test_paired_rela_impr_uses_only_seeds_the_base_has(results):
    results["runs"] = [r for r in results["runs"]
                       if not (r["variant"] == "din" and r["seed"] == 2)]
    _, daian = summarize(results)
    expected = [_hand_rela_impr(METRICS[("daian", s)][1], METRICS[("din", s)][1])
                for s in (0, 1)]
    assert daian.paired_rela_impr["gauc"].count == 2
    assert daian.paired_rela_impr["gauc"].mean == pytest.approx(np.mean(expected))


def test_markdown_table_holds_the_formatted_numbers(results):
    text = markdown_table(results)
    ranking = _ranking(text)
    header = _table_line(ranking, "model")
    assert header.split(" | ")[:3] == ["| model", "n", "seeds"]
    line = _table_line(ranking, "daian")
    auc = _column("daian", 0)
    assert f"{np.mean(auc):.4f} ± {np.std(auc, ddof=1):.4f}" in line
    logloss = _column("daian", 2)
    assert f"{np.mean(logloss):.4f} ± {np.std(logloss, ddof=1):.4f}" in line
    gauc_impr = _hand_rela_impr(np.mean(_column("daian", 1)),
                                np.mean(_column("din", 1)))
    assert f"{gauc_impr:+.2f}%" in line
    assert _table_line(ranking, "din").split(" | ")[-2:] == ["base", "base |"]
    # Reference rows: single values, RelaImpr against DIN's mean.
    oracle = _table_line(ranking, "oracle (reference)")
    assert "0.7500" in oracle and "0.3500" in oracle
    oracle_impr = _hand_rela_impr(0.70, np.mean(_column("din", 1)))
    assert f"{oracle_impr:+.2f}%" in oracle
    assert "popularity (reference)" in ranking
    # Intent table, natural log stated, and the JS numbers of DAIAN only.
    intent = _section(text, "Intent precision (JS divergence)")
    assert "natural log" in intent
    js_broad = [_intent(6, s)["js_broad"] for s in SEEDS]
    assert (f"{np.mean(js_broad):.4f} ± {np.std(js_broad, ddof=1):.4f}"
            in _table_line(intent, "daian | 6 | 3"))
    assert "| din |" not in intent
    # Group table: a column per diversity group, DAIAN's difference from DIN.
    groups = _section(text, "GAUC by intent-diversity group")
    assert "| model | n | diversity 0 | diversity 1 | diversity 2+ |" in groups
    assert _table_line(groups, "din") == "| din | 6 | 0.6000 | 0.5700 | 0.5500 |"
    assert _table_line(groups, "daian") == ("| daian | 6 | 0.6100 (+0.0100) | "
                                            "0.5900 (+0.0200) | 0.5800 (+0.0300) |")


def test_write_report_writes_json_markdown_and_valid_pngs(results, tmp_path):
    sweep = [_run("daian", s, num_levels=n, values=(0.62 + 0.01 * n, 0.6, 0.4))
             for n in (2, 10) for s in SEEDS]
    results["runs"] += sweep
    paths = write_report(results, tmp_path / "report")
    assert set(paths) == {"results", "report", "figure5_intent_distribution",
                          "figure6_gauc_by_diversity", "figure7_levels"}
    assert json.loads(paths["results"].read_text()) == results
    report = paths["report"].read_text()
    for key in ("figure5_intent_distribution", "figure6_gauc_by_diversity",
                "figure7_levels"):
        path = paths[key]
        assert path.read_bytes()[:8] == PNG_MAGIC
        image = imread(path)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400
        assert f"]({path.name})" in report
    assert "skipped" not in report.lower()
    # The n = 2 sweep rows are compared with DIN at its only n, 6.
    line = _table_line(_ranking(report), "daian | 2 | 3")
    expected = _hand_rela_impr(0.64, np.mean(_column("din", 0)))
    assert line.split(" | ")[6].startswith(f"{expected:+.2f}%")
    assert "| daian | 10 | 3 |" in _ranking(report)


def test_partial_results_do_not_crash_and_say_what_is_skipped(results, tmp_path):
    for run in results["runs"]:
        run.pop("intent", None)
        run.pop("gauc_by_diversity")
    del results["reference_rows"]
    paths = write_report(results, tmp_path)
    assert set(paths) == {"results", "report"}
    report = paths["report"].read_text()
    assert "Skipped: no run reports an intent distribution." in report
    assert "Skipped: no run reports GAUC by intent-diversity group." in report
    assert "Figure 5: predicted vs true intent distribution: skipped" in report
    assert "Figure 6: GAUC by intent-diversity group: skipped" in report
    assert ("Figure 7: AUC and GAUC against n: skipped, `daian` was run at fewer "
            "than two values of n (found: 6)") in report
    assert not list(tmp_path.glob("*.png"))


def test_missing_base_and_undefined_rela_impr_read_n_a(results, tmp_path):
    no_base = copy.deepcopy(results)
    no_base["runs"] = [r for r in no_base["runs"] if r["variant"] != "din"]
    text = markdown_table(no_base)
    assert "The base variant `din` has no runs" in text
    assert _table_line(_ranking(text), "daian").endswith("| n/a | n/a |")
    # A base at chance level makes RelaImpr undefined instead of raising.
    for run in results["runs"]:
        if run["variant"] == "din":
            run["metrics"]["auc"] = 0.5
    _, daian = summarize(results)
    assert daian.rela_impr["auc"] is None and daian.paired_rela_impr["auc"] is None
    assert daian.rela_impr["gauc"] is not None


def test_empty_runs_give_a_report_without_figures(tmp_path):
    paths = write_report({"runs": [], "base_variant": "din"}, tmp_path)
    assert set(paths) == {"results", "report"}
    assert "No runs in the results." in paths["report"].read_text()


def test_one_seed_has_zero_std_and_none_metrics_read_as_nan(results):
    results["runs"] = [r for r in results["runs"] if r["seed"] == 0]
    results["runs"][0]["metrics"]["gauc"] = None  # NaN after strict JSON
    daian, din = sorted(summarize(results), key=lambda r: r.variant)
    assert din.metrics["auc"].std == 0.0 and din.metrics["auc"].count == 1
    assert np.isnan(daian.metrics["gauc"].mean) and daian.rela_impr["gauc"] is None
    assert "nan" in markdown_table(results)


def test_diversity_groups_sort_numerically():
    runs = [{"variant": "din", "seed": 0, "num_levels": 6,
             "metrics": {"auc": 0.6, "gauc": 0.6, "logloss": 0.4},
             "gauc_by_diversity": {"10": 0.5, "2+": 0.6, "2": 0.6, "0": 0.7}}]
    (row,) = summarize({"runs": runs, "base_variant": "din"})
    assert list(row.gauc_by_diversity) == ["0", "2", "2+", "10"]


@pytest.mark.parametrize("broken, message", [
    (lambda r: r["metrics"].pop("gauc"), r"no metrics \['gauc'\]"),
    (lambda r: r.pop("seed"), "has no 'seed'"),
])
def test_malformed_runs_raise_naming_the_run(results, broken, message):
    broken(results["runs"][1])
    with pytest.raises(DaianInputError, match=message):
        summarize(results)


def test_duplicate_runs_raise(results):
    results["runs"].append(copy.deepcopy(results["runs"][0]))
    with pytest.raises(DaianInputError, match="two runs of variant 'daian'"):
        summarize(results)


def test_throughput_section_shows_samples_per_second_over_seeds(results):
    rates = {0: 1000.0, 1: 1200.0, 2: 1400.0}
    for run in results["runs"]:
        if run["variant"] == "din":
            run["samples_per_second"] = rates[run["seed"]]
    section = _section(markdown_table(results), "Training throughput")
    values = [rates[s] for s in SEEDS]
    line = _table_line(section, "din | 6")
    assert f"{np.mean(values):.0f} ± {np.std(values, ddof=1):.0f}" in line
    assert "500 ± 0" in _table_line(section, "daian | 6")


def test_throughput_section_is_skipped_without_figures(results):
    for run in results["runs"]:
        del run["samples_per_second"]
    section = _section(markdown_table(results), "Training throughput")
    assert "Skipped" in section


def test_epochs_run_counts_every_stage():
    from daian_tf.experiments.runner import epochs_run

    assert epochs_run({"loss": [1, 2, 3], "val_auc": [1, 2, 3]}) == 3
    assert epochs_run({"stage1": {"loss": [1, 2]}, "stage2": {"loss": [1]},
                       "stage3": {"loss": [1, 2, 3]}}) == 6
