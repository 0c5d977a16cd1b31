"""Paired comparisons against a baseline (issue 14): the statistics against hand computations."""

from __future__ import annotations

import csv
import math
from types import SimpleNamespace

import numpy as np
import pytest

from stridelab.studies import aggregate, describe
from stridelab.studies.compare import compare, default_baseline, paired_difference

A = {0: 0.70, 1: 0.80, 2: 0.90}  # seeds -> test accuracy: the seeds differ a lot ...
B = {0: 0.72, 1: 0.821, 2: 0.919}  # ... the variant beats the baseline by 2 pts in every seed


def test_paired_t_interval_by_hand_where_the_means_intervals_overlap():
    d = paired_difference(B, A)
    # differences 0.020, 0.021, 0.019: mean 0.020, sd 0.001, t(0.975, 2) = 4.303
    half = 4.303 * 0.001 / math.sqrt(3)
    assert d.paired and d.n == 3
    assert d.mean == pytest.approx(0.02)
    assert d.lo == pytest.approx(0.02 - half, rel=1e-4) and d.hi == pytest.approx(0.02 + half, rel=1e-4)
    # t = 0.02 / (0.001 / sqrt(3)) = 34.64 on 2 df: p = 2 P(T > 34.64) = 0.000832 (to 3 digits; the table's t
    # distribution: P(T_2 > t) = 1/2 - t / (2 sqrt(t^2 + 2)))
    t = 0.02 / (0.001 / math.sqrt(3))
    assert d.excludes_zero and d.p == pytest.approx(1 - t / math.sqrt(t**2 + 2), rel=1e-6)
    assert 0.019 - 1e-12 <= d.boot_lo <= d.boot_hi <= 0.021 + 1e-12  # inside the differences' range
    assert d.boot_method in ("BCa", "percentile")
    # Each mean's own interval (half-width about 0.25) overlaps the other's: only the pairing decides.
    a, b = describe(list(A.values())), describe(list(B.values()))
    assert a["mean"] + a["ci95"] > b["mean"] - b["ci95"]


def test_no_difference_is_not_a_verdict_and_order_matters_for_the_sign():
    d = paired_difference({0: 0.5, 1: 0.6, 2: 0.4}, {0: 0.55, 1: 0.5, 2: 0.45})  # differences -0.05, +0.1, -0.05
    assert not d.excludes_zero and d.lo < 0 < d.hi
    assert paired_difference(A, B).mean == pytest.approx(-0.02)


def test_a_missing_seed_makes_it_unpaired_welch_by_hand():
    x, y = {0: 1.0, 1: 2.0, 2: 3.0}, {0: 2.0, 2: 4.0}  # seed 1 missing on one side
    d = paired_difference(x, y)
    # means 2 and 3; variances 1 and 2: se^2 = 1/3 + 2/2; Welch df = (4/3)^2 / ((1/3)^2/2 + 1^2/1) = 1.684
    # (no longer rounded down to 1, as the hand-written version did: its interval was wider)
    from scipy import stats

    se = math.sqrt(1 / 3 + 1.0)
    df = (4 / 3) ** 2 / ((1 / 3) ** 2 / 2 + 1.0)
    assert df == pytest.approx(1.684, abs=1e-3)
    t = stats.t.ppf(0.975, df)
    assert 4.303 < t < 12.706  # between the quantiles of 2 and 1 degrees of freedom
    assert not d.paired and d.mean == pytest.approx(-1.0)
    assert d.lo == pytest.approx(-1.0 - t * se) and d.hi == pytest.approx(-1.0 + t * se)
    assert d.p == pytest.approx(2 * stats.t.sf(1.0 / se, df))


def test_one_seed_gives_a_difference_without_an_interval():
    d = paired_difference({0: 0.9}, {0: 0.8})
    assert d.mean == pytest.approx(0.1) and math.isnan(d.lo) and not d.excludes_zero


def test_factor_contrasts_of_a_two_by_two_grid():
    cols = ["downsample", "padding"]
    grid = {
        (ds, pad): {
            "test/acc": {s: 0.8 + 0.01 * (ds == "blurpool") + 0.02 * (pad == "circular") + 0.1 * s for s in (0, 1)}
        }
        for ds in ("conv", "blurpool")
        for pad in ("zeros", "circular")
    }
    base = default_baseline(cols, list(grid), {"downsample": "conv"})
    assert base == {"downsample": "conv", "padding": "zeros"}
    found = {
        (c.factor, c.variant, c.baseline): c.differences["test/acc"].mean
        for c in compare(cols, grid, base, ["test/acc"])
    }
    assert found == pytest.approx(
        {
            ("downsample", ("blurpool", "zeros"), ("conv", "zeros")): 0.01,
            ("downsample", ("blurpool", "circular"), ("conv", "circular")): 0.01,
            ("padding", ("conv", "circular"), ("conv", "zeros")): 0.02,
            ("padding", ("blurpool", "circular"), ("blurpool", "zeros")): 0.02,
        }
    )


def test_the_aggregate_writes_verdicts_and_their_columns(tmp_path):
    from tests.test_aggregate import write_run

    crop = {0: 0.01, 1: -0.02, 2: 0.015}  # blurpool - conv: the seeds disagree
    for seed in A:
        conv = {"test/acc": A[seed], "border/deviation": 0.1 * seed, "crop/consistency": 0.5}
        blur = {"test/acc": B[seed], "border/deviation": 0.1 * seed + 0.05, "crop/consistency": 0.5 + crop[seed]}
        write_run(tmp_path, f"conv{seed}", downsample="conv", seed=seed, **conv)
        write_run(tmp_path, f"blur{seed}", downsample="blurpool", seed=seed, **blur)
    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task:\n    - downsample=conv,blurpool\n    - seed=0,1,2\n"
    )
    study = aggregate(tmp_path, plots=False)
    assert study.baseline == {"downsample": "conv"}  # the sweep's first value, not the alphabet's
    summary = (tmp_path / "summary.md").read_text()
    assert "## Verdicts" in summary and "| blurpool vs conv | 3 paired | **test acc +2.0 pts [" in summary
    # At a glance: surely better (higher accuracy), surely worse (a higher border deviation is worse),
    # undecided (plain), each in its figure's column.
    assert (
        "| downsample (setting) | seeds | test acc (pts, ↑) | crop consistency (pts, ↑) | border deviation (↓) |"
        in (summary)
    )
    # crop consistency: +0.2 pts with a spread of 1.9 pts: no number of seeds up to 1000 decides it
    assert "| blurpool | 3 | **+2.0** ✓ | +0.2 (needs >1000 seeds) | **+0.050** ✗ |" in summary
    assert "adjusted for the 3 tests of this table (Benjamini-Hochberg, false discovery rate 5%)" in summary
    assert "Seeds that would decide the 1 undecided cells" in summary
    assert "every comparison you named with over 1000 (the most: crop consistency, blurpool vs conv)" in summary
    rows = {r["downsample"]: r for r in csv.DictReader((tmp_path / "summary.csv").open())}
    assert float(rows["blurpool"]["test/acc/vs_downsample/mean"]) == pytest.approx(0.02)
    assert rows["blurpool"]["vs_downsample"] == "conv" and rows["conv"]["test/acc/vs_downsample/mean"] == ""
    # A named baseline (a study file's baseline:) wins over the sweep's order.
    flipped = aggregate(tmp_path, plots=False, baseline={"downsample": "blurpool"})
    assert flipped.comparisons[0].differences["test/acc"].mean == pytest.approx(-0.02)


def test_a_swept_padding_amount_names_the_padding_amount_baseline(tmp_path):
    """padding.amount=full,same is the padding_amount column: its first value is the baseline, and a
    study's baseline may name it either way."""
    from tests.test_aggregate import write_run

    for seed in (0, 1):
        for amount, acc in (("same", 0.9), ("full", 0.8), ("valid", 0.7)):
            write_run(tmp_path, f"{amount}{seed}", padding_amount=amount, seed=seed, **{"test/acc": acc + 0.01 * seed})
    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task:\n    - padding.amount=full,same,valid\n    - seed=0,1\n"
    )
    assert aggregate(tmp_path, plots=False).baseline == {"padding_amount": "full"}
    for named in ({"padding.amount": "same"}, {"padding_amount": "same"}):
        assert aggregate(tmp_path, plots=False, baseline=named).baseline == {"padding_amount": "same"}


def test_a_figure_equal_in_every_seed_prints_without_an_interval(tmp_path):
    from tests.test_aggregate import write_run

    for seed in (0, 1, 2):  # 0.1 three times: the mean is 0.10000000000000002, so the std is 1.7e-17, not 0
        write_run(tmp_path, f"r{seed}", downsample="conv", seed=seed, **{"test/acc": 0.5 + 0.1 * seed})
        write_run(tmp_path, f"s{seed}", downsample="blurpool", seed=seed, **{"test/acc": 0.1})
    study = aggregate(tmp_path, plots=False)
    assert 0 < [r for r in study.summary_rows() if r["downsample"] == "blurpool"][0]["test/acc/ci95"] < 1e-15
    summary = (study.root / "summary.md").read_text()
    assert "| blurpool | 3 | 0.100 |" in summary and "0.600 ± 0.248" in summary


def test_hparams_columns_start_with_the_headline_figures():
    from lightning.pytorch.loggers import TensorBoardLogger

    from stridelab.config import VARIANT_FIELDS
    from stridelab.metrics.tensorboard import log_tensorboard

    class Spy(TensorBoardLogger):
        experiment = SimpleNamespace(flush=lambda: None)  # log_tensorboard flushes the writer

        def __init__(self) -> None:
            self.seen = None

        def log_hyperparams(self, params, metrics=None):
            self.seen = list(metrics)

        def finalize(self, status):
            pass

    spy = Spy()
    metrics = {k: "x" for k in (*VARIANT_FIELDS, "seed")}
    metrics.update({"train/steps": 10, "train/epochs": 1, "val/acc": 0.5, "probe/spc": 0.3, "test/acc": 0.9})
    log_tensorboard([spy], metrics, None, 10)
    assert spy.seen == ["test/acc", "probe/spc", "val/acc", "train/steps", "train/epochs"]


def test_two_factor_grids_get_heat_maps_and_interaction_plots(tmp_path):
    from tests.test_aggregate import write_run

    for seed in (0, 1):
        for ds in ("conv", "blurpool"):
            for pad in ("zeros", "circular"):
                acc = 0.8 + 0.05 * (ds == "blurpool") + 0.01 * seed
                write_run(tmp_path, f"{ds}-{pad}-{seed}", downsample=ds, padding=pad, seed=seed, **{"test/acc": acc})
    aggregate(tmp_path)
    plots = {p.name for p in (tmp_path / "plots").iterdir()}
    assert {"factors_heatmap.png", "factors_interaction.png", "verdicts.png"} <= plots
    assert "plots/factors_heatmap.png" in (tmp_path / "summary.md").read_text()
    assert len(list((tmp_path / "_study").glob("events.out.tfevents.*"))) == 1  # the plots, in TensorBoard
    aggregate(tmp_path)
    assert len(list((tmp_path / "_study").glob("events.out.tfevents.*"))) == 1  # rewritten, not appended
    one = tmp_path / "one"
    for seed in (0, 1):
        write_run(one, f"c{seed}", downsample="conv", seed=seed, **{"test/acc": 0.8})
        write_run(one, f"b{seed}", downsample="blurpool", seed=seed, **{"test/acc": 0.9})
    aggregate(one)
    assert not list((one / "plots").glob("factors_*"))  # one factor: the bar plots
    # A study of several grids, as the demo: red-green x padding beside shapes10 x downsample x padding.
    # Its root gets the heat maps of the one group that crosses two factors in full.
    demo = tmp_path / "demo"
    for seed in (0, 1):
        for pad in ("zeros", "reflect", "circular"):
            write_run(demo, f"rg-{pad}-{seed}", model="redgreen_net", data="redgreen", downsample="conv",
                      padding=pad, seed=seed, **{"test/acc": 0.9})  # fmt: skip
        for ds in ("conv", "blurpool"):
            for pad in ("zeros", "circular"):
                write_run(demo, f"s-{ds}-{pad}-{seed}", downsample=ds, padding=pad, seed=seed, **{"test/acc": 0.8})
    aggregate(demo)
    assert {p.name for p in (demo / "plots").glob("factors_*")} == {"factors_heatmap.png", "factors_interaction.png"}
    # two such groups (two data sets, each downsample x padding): a pair of files each
    for seed in (0, 1):
        for ds in ("conv", "blurpool"):
            for pad in ("zeros", "circular"):
                write_run(demo, f"c-{ds}-{pad}-{seed}", data="cifar10", downsample=ds, padding=pad, seed=seed,
                          **{"test/acc": 0.7})  # fmt: skip
    aggregate(demo)
    names = {p.name for p in (demo / "plots").glob("factors_heatmap*")}
    assert names == {"factors_heatmap_simple_cnn_cifar10.png", "factors_heatmap_simple_cnn_shapes10.png"}, names


def test_ci_bars_stay_inside_the_figures_range():
    from stridelab.studies.plots import _bar

    below, above = _bar("test/acc", [0.9, 0.5], [0.6, 0.1])
    assert below == pytest.approx([0.6, 0.1]) and above == pytest.approx([0.1, 0.1])  # 0.9 + 0.6 is cut at 1
    below, above = _bar("border/deviation", [0.2], [0.5])
    assert below == pytest.approx([0.2]) and above == pytest.approx([0.5])  # non-negative figures stop at 0


# -- issue 23: multiple comparisons and seeds needed ------------------------------------------------------
def test_benjamini_hochberg_and_holm_by_hand():
    from stridelab.studies.stats import adjust

    p = [0.01, 0.04, 0.03, 0.005, float("nan")]
    # BH: sorted 0.005, 0.01, 0.03, 0.04 (m = 4) -> p * m / rank = 0.02, 0.02, 0.04, 0.04, then the running
    # minimum from the top: 0.02, 0.02, 0.04, 0.04. Holm: (m - rank + 1) p = 0.02, 0.03, 0.06, 0.04, running
    # maximum: 0.02, 0.03, 0.06, 0.06. A NaN is not a test.
    fdr, holm, none = adjust(p, "fdr"), adjust(p, "holm"), adjust(p, "none")
    assert fdr[:4] == pytest.approx([0.02, 0.04, 0.04, 0.02]) and math.isnan(fdr[4])
    assert holm[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02]) and math.isnan(holm[4])
    assert none[:4] == p[:4]
    with pytest.raises(ValueError, match="correction must be one of fdr, holm, none"):
        adjust(p, "bonferroni")


def test_seeds_needed_by_the_noncentral_t():
    from scipy import stats

    from stridelab.studies.stats import paired_power, seeds_needed

    # Cohen's tables (paired t, two-sided 5%, power 80%): d = 1 -> 10 pairs, d = 0.5 -> 34.
    assert seeds_needed(1.0, 1.0) == 10 and seeds_needed(-0.5, 1.0) == 34
    assert paired_power(9, 1.0) < 0.8 <= paired_power(10, 1.0)
    # the power of n = 10 by simulation of the paired t test: within 2 points of the formula
    rng = np.random.default_rng(0)
    d = rng.normal(1.0, 1.0, (20000, 10))
    p = stats.ttest_1samp(d, 0.0, axis=1).pvalue
    assert abs((p < 0.05).mean() - paired_power(10, 1.0)) < 0.02
    assert seeds_needed(0.0, 1.0) is None and seeds_needed(1.0, 0.0) is None and seeds_needed(0.001, 1.0) is None


def _synthetic_study(real: float, seed: int):
    """22 comparisons of 5 paired seeds against one baseline: 20 with no true difference, 2 with ``real``."""
    rng = np.random.default_rng(seed)
    seeds = range(5)
    base = {s: rng.normal(0.8, 0.05) for s in seeds}
    grid = {("base",): {"test/acc": base}}
    for i in range(22):
        shift = real if i >= 20 else 0.0
        grid[(f"v{i:02d}",)] = {"test/acc": {s: base[s] + shift + rng.normal(0, 0.01) for s in seeds}}
    return grid


def test_fdr_decides_the_real_differences_and_at_most_one_null_where_none_decides_more():
    decided = {}
    for correction in ("fdr", "none"):
        found = []
        for seed in range(10):  # ten synthetic studies, each of 20 null and 2 real comparisons
            comps = compare(["downsample"], _synthetic_study(0.05, seed), {"downsample": "base"}, ["test/acc"],
                            correction)  # fmt: skip
            real = sum(c.differences["test/acc"].decided for c in comps if c.variant[0] >= "v20")
            null = sum(c.differences["test/acc"].decided for c in comps if c.variant[0] < "v20")
            found.append((real, null))
        decided[correction] = found
    assert all(real == 2 and null <= 1 for real, null in decided["fdr"]), decided["fdr"]
    assert sum(n for _, n in decided["none"]) > sum(n for _, n in decided["fdr"]), decided
    assert all(real == 2 for real, _ in decided["none"])


def test_a_glance_cell_says_decided_dagger_or_the_seeds_it_needs():
    from stridelab.studies.compare import Difference
    from stridelab.studies.summary import glance_cell

    decided = Difference(3, True, 0.02, 0.01, 0.03, 0.01, 0.03, p=0.001, sd=0.001, p_adj=0.004, correction="fdr")
    dagger = Difference(3, True, 0.02, 0.001, 0.04, 0.01, 0.03, p=0.04, sd=0.008, p_adj=0.2, correction="fdr")
    short = Difference(3, True, 0.01, -0.02, 0.04, -0.01, 0.03, p=0.3, sd=0.012, seeds_needed=14, p_adj=0.5)
    assert glance_cell(decided, True) == "**+2.0**"
    assert glance_cell(dagger, True) == "+2.0 †"
    assert glance_cell(short, True) == "+1.0 (needs ~14 seeds)"
