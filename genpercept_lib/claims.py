"""Verdicts from tables: how far a model is above the guess that never looks at the image and below the VAE
ceiling, and whether a difference between two settings is larger than the seed-to-seed spread.

Every function reads columns (``kind``, a metric, ``seed``), never free text, and returns numbers plus one
sentence for ``SUMMARY.md``. A claim "agrees" only when the difference it rests on is larger than the spread
of the seeds of both rows it compares; a smoke run (a handful of images and steps) never agrees or disagrees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

SMOKE = "smoke: too small to judge"


def per_seed(df: pd.DataFrame, metric: str, **where) -> np.ndarray:
    """The metric averaged over evaluation sets, one value per seed, for the rows matching ``where``
    (column = value, or a callable on the column)."""
    mask = pd.Series(True, index=df.index)
    for col, val in where.items():
        mask &= df[col].map(val) if callable(val) else (df[col] == val)
    rows = df[mask]
    if rows.empty:
        raise ValueError(f"no rows with {where} for {metric!r}")
    if "kind" in rows and rows["kind"].nunique() > 1:  # e.g. a model's setting also labels its untrained row
        raise ValueError(f"rows with {where} mix kinds {sorted(rows['kind'].unique())}; select one kind")
    by = "seed" if "seed" in rows else None
    return (rows.groupby(by)[metric].mean().to_numpy() if by else np.array([rows[metric].mean()])).astype(float)


@dataclass
class Comparison:
    """a vs b on one metric, over seeds: mean difference (a - b), the spread it must beat, and the verdict."""

    a: np.ndarray
    b: np.ndarray
    lower_is_better: bool

    @property
    def difference(self) -> float:
        return float(self.a.mean() - self.b.mean())

    @property
    def spread(self) -> float:
        """The larger seed-to-seed range (max - min) of the two rows; 0 with one seed each."""
        return float(max(np.ptp(self.a) if len(self.a) > 1 else 0.0, np.ptp(self.b) if len(self.b) > 1 else 0.0))

    @property
    def seeds(self) -> int:
        return int(min(len(self.a), len(self.b)))

    @property
    def a_better(self) -> bool:
        return self.difference < 0 if self.lower_is_better else self.difference > 0

    @property
    def resolved(self) -> bool:
        """The difference exceeds the spread (and there are at least two seeds to measure a spread on)."""
        return self.seeds >= 2 and abs(self.difference) > self.spread

    def describe(self, metric: str, a_name: str, b_name: str) -> str:
        mean_a, mean_b = self.a.mean(), self.b.mean()
        head = f"{a_name} {metric} {mean_a:.3f} vs {b_name} {mean_b:.3f}"
        if self.seeds < 2:  # a spread of 0.000 would read as if one had been measured
            return f"{head} (one seed; difference {self.difference:+.3f}, no seed spread measured)"
        return f"{head} (mean of {self.seeds} seeds; difference {self.difference:+.3f}, seed spread {self.spread:.3f})"


def compare(a: np.ndarray, b: np.ndarray, lower_is_better: bool = True) -> Comparison:
    return Comparison(np.asarray(a, float), np.asarray(b, float), lower_is_better)


def _unjudged(comparison: Comparison, profile: str) -> str | None:
    """Why no verdict can be given (a smoke run; one seed, so no spread), or None when one can."""
    if profile == "smoke":
        return SMOKE
    if comparison.seeds < 2:
        return "not judged (one seed: no spread to judge the difference by)"
    return None


def verdict(comparison: Comparison, expect_a_better: bool, profile: str) -> str:
    """"agrees" / "does not agree" / "inconclusive" for a claim that a is better than b (or not)."""
    if unjudged := _unjudged(comparison, profile):
        return unjudged
    if not comparison.resolved:
        return "inconclusive (the difference is within the seed-to-seed spread)"
    return "agrees" if comparison.a_better == expect_a_better else "does not agree"


def within(comparison: Comparison, tolerance: float, profile: str, two_sided: bool = True) -> str:
    """"agrees" / "does not agree" / "inconclusive" for a claim of *no large difference*: that a and b differ
    by at most ``tolerance`` (``two_sided=False``: that a is worse than b by at most ``tolerance``; a better a
    always counts as within). The mirror of ``verdict``: it agrees only when the difference plus the seed
    spread stays within the tolerance, and disagrees only when the difference minus the spread exceeds it."""
    if unjudged := _unjudged(comparison, profile):
        return unjudged
    worse = comparison.difference if comparison.lower_is_better else -comparison.difference  # > 0: a is worse
    gap = abs(comparison.difference) if two_sided else worse
    if gap + comparison.spread <= tolerance:
        return "agrees"
    if gap - comparison.spread > tolerance:
        return "does not agree"
    return "inconclusive (the tolerance lies within the seed-to-seed spread of the difference)"


def headroom(df: pd.DataFrame, metric: str, lower_is_better: bool = True, ceiling_kind: str = "vae-ceiling",
             **model_where) -> dict:
    """Where the model rows stand between the ``image-blind`` guess and the ceiling (``ceiling_kind``: the
    ``vae-ceiling``, or pose's ``heatmap-ceiling``): their mean values and the share of that gap the model
    closes (1 = at the ceiling, 0 = no better than the guess). ``split="heldout"`` (or ``"indomain"``) in
    ``model_where`` scores the model and both references on that split's rows only."""
    if "split" in model_where and "split" in df:
        df = df[df["split"] == model_where["split"]]
    model = per_seed(df, metric, kind="model", **model_where).mean()
    blind = df[df.kind == "image-blind"][metric].mean()
    ceiling = df[df.kind == ceiling_kind][metric].mean()
    gap = (blind - ceiling) if lower_is_better else (ceiling - blind)
    # no gap to close when the guess is already at or past the ceiling (a VAE that cannot carry the label)
    closed = ((blind - model) if lower_is_better else (model - blind)) / gap if gap > 0 else float("nan")
    return {"model": float(model), "image_blind": float(blind), "ceiling": float(ceiling),
            "closed": float(closed), "ratio_to_blind": float(model / blind) if blind else float("nan")}


def headroom_sentence(h: dict, metric: str) -> str:
    head = (f"{metric} {h['model']:.3f} vs image-blind {h['image_blind']:.3f} ({h['ratio_to_blind']:.2f} x) and "
            f"VAE ceiling {h['ceiling']:.3f}: ")
    if h["closed"] != h["closed"]:  # NaN: the guess is at or past the ceiling
        return head + "the image-blind guess already scores at or beyond the VAE ceiling (the VAE loses the label)"
    if h["closed"] < 0:
        return head + "worse than the image-blind guess (none of the gap between guessing and the ceiling is closed)"
    return head + f"closes {h['closed']:.0%} of the gap between guessing and the ceiling"


class ClaimBox:
    """The box a notebook opens with, right after its parameters: the paper's claim (quoted, with its section), what
    we test, the rule that decides the verdict, and the verdict itself. The verdict is computed at the end of the
    notebook; ``verdict(text)`` fills it into the box at the top (a display update, which the executed copy keeps)
    and shows it again where it is computed."""

    def __init__(self, claim: str, section: str, test: str, rule: str):
        import uuid

        self.claim, self.section, self.test, self.rule = claim, section, test, rule
        self.display_id = f"claim-{uuid.uuid4().hex[:12]}"
        self._show(self.markdown("*computed at the end of this notebook*"), self.display_id)

    def markdown(self, verdict: str) -> str:
        """The box as Markdown: claim, test, rule, verdict."""
        return (f"> **The paper's claim** ({self.section}): {self.claim}\n>\n> **What we test:** {self.test}\n>\n"
                f"> **Rule:** {self.rule}\n>\n> **Verdict:** {verdict}")

    def verdict(self, text: str) -> str:
        """Fill the box at the top with ``text`` and show the box here too; returns ``text``."""
        from IPython.display import Markdown, update_display

        update_display(Markdown(self.markdown(text)), display_id=self.display_id)
        self._show(self.markdown(text))
        return text

    @staticmethod
    def _show(text: str, display_id: str | None = None) -> None:
        from IPython.display import Markdown, display

        display(Markdown(text), display_id=display_id) if display_id else display(Markdown(text))
