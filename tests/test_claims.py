"""claims.py: seed-spread comparisons, verdicts and headroom read columns and refuse ambiguous row sets."""

import numpy as np
import pandas as pd
import pytest

from genpercept_lib import claims


def table():
    rows = [("model", "one_step", s, d, v) for s, (a, b) in enumerate([(0.20, 0.22), (0.21, 0.23), (0.19, 0.21)])
            for d, v in (("x", a), ("y", b))]
    rows += [("untrained", "one_step", 0, d, 0.9) for d in ("x", "y")]
    rows += [("image-blind", "image-blind", 0, d, 0.4) for d in ("x", "y")]
    rows += [("vae-ceiling", "vae", 0, d, 0.1) for d in ("x", "y")]
    return pd.DataFrame(rows, columns=["kind", "setting", "seed", "domain", "AbsRel"])


def test_per_seed_averages_domains_per_seed_and_refuses_mixed_kinds():
    df = table()
    assert np.allclose(claims.per_seed(df, "AbsRel", kind="model"), [0.21, 0.22, 0.20])
    # a model's setting also labels its untrained row: selecting by setting alone must not average them
    with pytest.raises(ValueError, match=r"mix kinds \['model', 'untrained'\]"):
        claims.per_seed(df, "AbsRel", setting="one_step")
    with pytest.raises(ValueError, match="no rows"):
        claims.per_seed(df, "AbsRel", kind="nothing")


def test_headroom_closes_the_gap_share_and_says_when_there_is_none():
    h = claims.headroom(table(), "AbsRel")
    assert h["model"] == pytest.approx(0.21) and h["closed"] == pytest.approx((0.4 - 0.21) / 0.3)
    assert "closes 63% of the gap" in claims.headroom_sentence(h, "AbsRel")
    inverted = table()
    inverted.loc[inverted.kind == "vae-ceiling", "AbsRel"] = 0.5  # the guess beats the VAE round trip
    h = claims.headroom(inverted, "AbsRel")
    assert np.isnan(h["closed"])
    assert "already scores at or beyond the VAE ceiling" in claims.headroom_sentence(h, "AbsRel")
    worse = table()
    worse.loc[worse.kind == "model", "AbsRel"] = 0.5  # the model is worse than the guess
    h = claims.headroom(worse, "AbsRel")
    assert h["closed"] < 0 and "worse than the image-blind guess" in claims.headroom_sentence(h, "AbsRel")


def test_headroom_reads_another_ceiling_kind_and_higher_is_better():
    """Pose: AP (higher is better) between the mean-pose guess and the heatmap ceiling."""
    df = pd.DataFrame({"kind": ["model", "image-blind", "heatmap-ceiling"], "AP": [0.2, 0.0, 0.8],
                       "seed": [0, 0, 0], "setting": ["pose", "blind", "ceiling"]})
    h = claims.headroom(df, "AP", lower_is_better=False, ceiling_kind="heatmap-ceiling")
    assert h["closed"] == pytest.approx(0.25) and h["ceiling"] == pytest.approx(0.8)
    assert np.isnan(claims.headroom(df, "AP", lower_is_better=False)["ceiling"])  # no vae-ceiling row here


def test_verdicts_need_two_seeds_and_a_difference_beyond_the_spread():
    clear = claims.compare([0.20, 0.21], [0.30, 0.31])
    assert clear.resolved and claims.verdict(clear, True, "default") == "agrees"
    assert claims.verdict(clear, False, "default") == "does not agree"
    close = claims.compare([0.20, 0.24], [0.22, 0.23])
    assert not close.resolved and claims.verdict(close, True, "default").startswith("inconclusive")
    one = claims.compare([0.20], [0.30])
    assert claims.verdict(one, True, "default").startswith("not judged (one seed")
    assert claims.verdict(clear, True, "smoke") == claims.SMOKE
    higher = claims.compare([0.8, 0.81], [0.5, 0.52], lower_is_better=False)
    assert higher.a_better and "mean of 2 seeds" in higher.describe("AP", "a", "b")


def test_describe_names_a_measured_spread_only_with_two_seeds():
    one = claims.compare([0.20], [0.30]).describe("AbsRel", "a", "b")
    assert one == "a AbsRel 0.200 vs b 0.300 (one seed; difference -0.100, no seed spread measured)"
    two = claims.compare([0.20, 0.22], [0.30, 0.31]).describe("AbsRel", "a", "b")
    assert two.endswith("(mean of 2 seeds; difference -0.095, seed spread 0.020)")


def test_within_needs_the_difference_and_its_spread_inside_the_tolerance():
    close = claims.compare([0.330, 0.334], [0.326, 0.328])  # a worse by 0.005, spread 0.004
    assert claims.within(close, 0.02, "default") == "agrees"
    assert claims.within(close, 0.007, "default").startswith("inconclusive")  # 0.005 + 0.004 > 0.007 > 0.001
    assert claims.within(close, 0.0005, "default") == "does not agree"  # 0.005 - 0.004 > 0.0005
    better = claims.compare([0.20, 0.21], [0.30, 0.31])  # a better by 0.1: far apart, yet never "worse"
    assert claims.within(better, 0.05, "default") == "does not agree"
    assert claims.within(better, 0.05, "default", two_sided=False) == "agrees"
    higher = claims.compare([0.70, 0.71], [0.80, 0.81], lower_is_better=False)  # a worse by 0.1, higher is better
    assert claims.within(higher, 0.05, "default", two_sided=False) == "does not agree"
    assert claims.within(claims.compare([0.3], [0.3]), 0.1, "default").startswith("not judged (one seed")
    assert claims.within(close, 0.02, "smoke") == claims.SMOKE
