"""Everything a notebook writes into ``results/``: tidy tables (CSV + Markdown), figures, and the index.

Conventions (DESIGN.md):
* ``results/tables/<name>.csv``: one row per measurement, with ``source`` = ``paper`` | ``this-run`` and
  ``profile`` and ``hardware`` columns, so a toy number can never be read as a paper number. A rendered
  ``<name>.md`` and a ``<name>.json`` sidecar (title, note, claim verdict, notebook) sit beside it.
* ``results/figures/<name>.png``.
* Every write goes to a temporary file in the same folder, then ``os.replace``: a crash never leaves a
  half-written table, and earlier results stay as they were.

The results folder is ``$GENPERCEPT_RESULTS`` if set (tests point it at a temporary folder), else
``<repo>/results``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from .cache import REPO_ROOT, atomic_path, atomic_write_text
from .runs import (  # noqa: F401 (results.<name> is how notebooks and scripts read them)
    _ACTIVE_RUN,
    cpu_model_name,
    git_commit,
    hardware_label,
    results_dir,
    run_folder,
    set_run,
)

PAPER_DIR = REPO_ROOT / "data" / "paper"
SOURCES = ("paper", "this-run")
PAPER_HARDWARE = "as published"


def paper_table(name: str) -> pd.DataFrame:
    """A reference table of the paper from ``data/paper/<name>.csv`` (copied verbatim from ../shared/paper)."""
    path = PAPER_DIR / f"{name}.csv"
    if not path.is_file():
        available = ", ".join(sorted(p.stem for p in PAPER_DIR.glob("*.csv")))
        raise FileNotFoundError(f"{path}: no such paper table; expected one of {available}")
    return pd.read_csv(path)


def label_rows(df: pd.DataFrame, source: str, profile: str, hardware: str | None = None) -> pd.DataFrame:
    """Return ``df`` with ``source``, ``profile`` and ``hardware`` columns set (kept where already present)."""
    if source not in SOURCES:
        raise ValueError(f"source={source!r}: expected one of {', '.join(SOURCES)}")
    out = df.copy()
    out["source"] = source
    out["profile"] = profile if source == "this-run" else "paper"
    if "hardware" not in out.columns or source == "this-run":
        out["hardware"] = hardware or (hardware_label() if source == "this-run" else PAPER_HARDWARE)
    out["hardware"] = out["hardware"].fillna(PAPER_HARDWARE if source == "paper" else hardware_label())
    return out


def combine(paper: pd.DataFrame | None, ours: pd.DataFrame, profile: str, hardware: str | None = None):
    """The paper's rows and ours in one tidy table, labelled, paper first, shared columns first."""
    parts = []
    if paper is not None:
        parts.append(label_rows(paper, "paper", profile))
    parts.append(label_rows(ours, "this-run", profile, hardware))
    table = pd.concat(parts, ignore_index=True, sort=False)
    front = ["source", "profile", "hardware"]
    return table[front + [c for c in table.columns if c not in front]]


def _fmt(value) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return ""
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value).replace("|", "\\|")


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (no extra dependency)."""
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def write_table(
    df: pd.DataFrame,
    name: str,
    title: str = "",
    note: str = "",
    claim: str = "",
    notebook: str = "",
    results: str | os.PathLike | None = None,
) -> Path:
    """Write ``results/tables/<name>.{csv,md,json}`` atomically and return the CSV path.

    ``df`` must be tidy and carry ``source``/``profile``/``hardware`` (see ``combine``). ``claim`` is one
    line saying whether our measurement agrees with the paper's claim; it goes into SUMMARY.md.
    """
    missing = [c for c in ("source", "profile", "hardware") if c not in df.columns]
    if missing:
        raise ValueError(f"table {name!r} lacks columns {missing}: build it with results.combine(...)")
    bad = set(df["source"]) - set(SOURCES)
    if bad:
        raise ValueError(f"table {name!r} has source values {sorted(bad)}: expected {', '.join(SOURCES)}")
    params = _ACTIVE_RUN.get("parameters", {})
    if params.get("overrides") and "overrides" not in df.columns:  # an ablation's tables say what was changed
        df = df.assign(overrides=[json.dumps(params["overrides"], sort_keys=True) if src == "this-run" else ""
                                  for src in df["source"]])
    smoke = set(df.loc[df["source"] == "this-run", "profile"].astype(str)) == {"smoke"}
    if claim and smoke and not claim.startswith("smoke"):
        claim = f"smoke: too small to judge (a code-path check, not a measurement). {claim}"
    folder = results_dir(results) / "tables"
    csv_path = folder / f"{name}.csv"
    with atomic_path(csv_path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")
    header = f"# {title or name}\n\n" + (f"{note}\n\n" if note else "")
    header += f"**Claim check:** {claim}\n\n" if claim else ""
    atomic_write_text(folder / f"{name}.md", header + to_markdown(df))
    meta = {"name": name, "title": title or name, "note": note, "claim": claim, "notebook": notebook,
            "profiles": sorted(set(df.loc[df["source"] == "this-run", "profile"].astype(str))),
            "parameters": params}
    atomic_write_text(folder / f"{name}.json", json.dumps(meta, indent=2) + "\n")
    return csv_path


def read_table(name: str, results: str | os.PathLike | None = None) -> pd.DataFrame:
    path = results_dir(results) / "tables" / f"{name}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such table; run the notebook that writes it first")
    return pd.read_csv(path)


def save_figure(fig, name: str, results: str | os.PathLike | None = None, dpi: int = 120) -> Path:
    """Save a matplotlib figure to ``results/figures/<name>.png`` atomically."""
    path = results_dir(results) / "figures" / f"{name}.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    return path


def _ran(prov: dict, entry: dict, key: str) -> str:
    """A notebook's ``commit`` or ``hardware``: its own entry's, else (an older provenance file) the run's."""
    return entry.get(key, prov.get(key, "?"))


def provenance_line(prov: dict) -> str:
    """One line on where the results come from. ``--only`` reruns keep the other notebooks' executed copies, so
    the notebooks of one results folder may come from several commits and machines: then the line says so rather
    than naming the last run's (each notebook's own commit and hardware are in the table below it)."""
    entries = list(prov.get("notebooks", {}).values()) or [{}]
    commits = sorted({_ran(prov, e, "commit") for e in entries})
    machines = sorted({_ran(prov, e, "hardware") for e in entries})
    commit = f"Commit `{commits[0]}`" if len(commits) == 1 else \
        f"Notebooks run at {len(commits)} commits ({', '.join(f'`{c}`' for c in commits)})"
    hardware = f"hardware: {machines[0]}" if len(machines) == 1 else \
        f"on {len(machines)} machines ({'; '.join(machines)}): another CPU trains other weights, see each table's " \
        "`hardware` column"
    return f"{commit}, {hardware}."


def provenance_from_executed(folder: str | os.PathLike) -> dict:
    """The provenance entries of the executed copies in ``folder`` (``results/notebooks``), by name: each copy's
    own (``metadata.genpercept.provenance``, written by ``reproduce``), else what papermill recorded in it (start,
    end, duration, whether a cell raised, the profile; commit and hardware then "unknown"). A copy that is not
    readable JSON is left out; what rebuilds a damaged ``provenance.json``."""
    entries = {}
    for path in sorted(Path(folder).glob("*.ipynb")) if Path(folder).is_dir() else []:
        try:
            meta = json.loads(path.read_text()).get("metadata") or {}
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            continue
        own = (meta.get("genpercept") or {}).get("provenance")
        if isinstance(own, dict):
            entries[path.name] = own
            continue
        pm = meta.get("papermill") or {}
        entries[path.name] = {"profile": (pm.get("parameters") or {}).get("profile", "?"),
                              "start": pm.get("start_time"), "end": pm.get("end_time"),
                              "seconds": round(float(pm.get("duration") or 0), 1),
                              "status": "failed" if pm.get("exception") or not pm.get("end_time") else "ok",
                              "commit": "unknown", "hardware": "unknown"}
    return entries


def write_summary(results: str | os.PathLike | None = None) -> Path:
    """``results/SUMMARY.md``: every table (with its claim check) and every figure, with provenance."""
    root = results_dir(results)
    lines = ["# Results", "", "Generated by `make reproduce`; do not edit by hand. Every table lists the paper's",
             "numbers (`source = paper`) beside ours (`source = this-run`, with the profile and hardware).", ""]
    prov_path = root / "provenance.json"
    if prov_path.is_file():
        prov = json.loads(prov_path.read_text())
        nbs = prov.get("notebooks", {})
        lines += [provenance_line(prov), ""]
        if nbs:
            lines += ["| notebook | profile | status | seconds | finished | commit | hardware |",
                      "|---|---|---|---|---|---|---|"]
            for nb, info in sorted(nbs.items()):
                lines.append(f"| [{nb}](notebooks/{nb}) | {info.get('profile')} | {info.get('status')} | "
                             f"{info.get('seconds', 0):.0f} | {info.get('end', '')} | "
                             f"`{_ran(prov, info, 'commit')}` | {_ran(prov, info, 'hardware')} |")
            lines.append("")
    lines += ["## Tables", ""]
    for meta_path in sorted((root / "tables").glob("*.json")):
        meta = json.loads(meta_path.read_text())
        entry = f"- [{meta['title']}](tables/{meta['name']}.md) (`{meta['name']}.csv`, profile: " \
                f"{', '.join(meta.get('profiles') or ['-'])})"
        if meta.get("claim"):
            entry += f" — {meta['claim']}"
        lines.append(entry)
    lines += ["", "## Figures", ""]
    for fig in sorted((root / "figures").glob("*.png")):
        lines.append(f"- [{fig.stem}](figures/{fig.name})")
    return atomic_write_text(root / "SUMMARY.md", "\n".join(lines) + "\n")


# The README's standing table: each task's headline model row against its references, per split, read from the
# tables of a results folder (a task whose table is missing or lacks the columns is left out).
# (task, table, metric, lower is better, the headline model's rows, the ceiling's kind)
STANDING = (
    ("depth", "pipelines_accuracy", "AbsRel", True, {"pipeline": "one_step", "init": "prior", "denoise_steps": 1,
                                                      "ensemble": 1}, "vae-ceiling"),
    ("normals", "depth_normals", "mean", True, {"task": "normal"}, "vae-ceiling"),  # mean angular error (deg)
    ("DIS", "dis_accuracy", "max_F_beta", False, {"pipeline": "one_step", "init": "prior"}, "vae-ceiling"),
    ("matting", "matting", "SAD", True, {"pipeline": "one_step", "init": "prior"}, "vae-ceiling"),
    ("segmentation", "segmentation", "mIoU", False, {"pipeline": "one_step", "init": "prior"}, "vae-ceiling"),
    ("pose", "table3_pose", "AP", False, {"init": "prior"}, "heatmap-ceiling"),
)


def _metric_rows(df: pd.DataFrame, metric: str) -> pd.DataFrame | None:
    """``df``'s this-run rows with ``metric`` as a column ``value`` (wide tables, or long ones with metric/value)."""
    df = df[df["source"] == "this-run"] if "source" in df else df
    if metric in df:
        return df.assign(value=df[metric])
    if {"metric", "value"} <= set(df.columns):
        return df[df["metric"] == metric]
    return None


def standing(results: str | os.PathLike | None = None) -> pd.DataFrame:
    """One row per (task, split): the headline model's mean (over sets and seeds), how many seeds, the image-blind
    row's and the ceiling's means, and the model's ratio to the image-blind row."""
    rows = []
    for task, table, metric, lower, where, ceiling in STANDING:
        try:
            df = read_table(table, results)
        except FileNotFoundError:
            continue
        df = _metric_rows(df, metric)
        if df is None or "kind" not in df or df.empty:
            continue
        split = df["split"] if "split" in df else pd.Series("heldout", index=df.index)
        for name in ("heldout", "indomain"):
            part = df[split == name]
            model = part[part["kind"] == "model"]
            for col, val in where.items():
                model = model[model[col] == val] if col in model else model
            blind = part.loc[part["kind"] == "image-blind", "value"]
            if model.empty or blind.empty:
                continue
            seeds = model["seed"].nunique() if "seed" in model else 1
            value = float(model.groupby("seed")["value"].mean().mean() if "seed" in model else model["value"].mean())
            ceil = part.loc[part["kind"] == ceiling, "value"]
            rows.append({"task": task, "split": name, "metric": metric, "lower_is_better": lower, "model": value,
                         "seeds": seeds, "image_blind": float(blind.mean()),
                         "ceiling": float(ceil.mean()) if len(ceil) else float("nan"),
                         # a guess that scores about zero (pose AP) has no meaningful ratio
                         "ratio_to_blind": value / float(blind.mean()) if abs(blind.mean()) > 0.01 else float("nan")})
    return pd.DataFrame(rows)


def standing_markdown(results: str | os.PathLike | None = None) -> str:
    """The standing table as Markdown (the README's, between its markers), with the run it comes from."""
    df = standing(results)
    if df.empty:
        return "_No default-profile results yet: run `make reproduce`._"
    lines = ["| task | split | metric | ours (seeds) | image-blind | ceiling | ours / image-blind | beats the guess? |",
             "|---|---|---|---|---|---|---|---|"]
    for r in df.itertuples():
        beats = r.model < r.image_blind if r.lower_is_better else r.model > r.image_blind
        arrow = "lower" if r.lower_is_better else "higher"
        lines.append(f"| {r.task} | {r.split} | {r.metric} ({arrow} better) | {r.model:.3f} ({r.seeds}) | "
                     f"{r.image_blind:.3f} | {r.ceiling:.3f} | {_fmt_ratio(r.ratio_to_blind)} | "
                     f"{'yes' if beats else 'no'} |")
    prov_path = results_dir(results) / "provenance.json"
    if prov_path.is_file():
        prov = json.loads(prov_path.read_text())
        full = prov.get("full_run")
        if full and "wall_seconds" in full:
            when = (f" Last run of every notebook from an empty cache: {full['wall_seconds'] / 60:.1f} minutes "
                    f"wall-clock at `{full['commit']}` ({full['reference_minutes']:.1f} reference-host minutes).")
        else:
            when = " No run of every notebook from an empty cache is recorded yet."
        lines += ["", provenance_line(prov) + when]
    return "\n".join(lines)


def _fmt_ratio(x: float) -> str:
    return "—" if x != x else f"{x:.2f}"


README_MARKERS = ("<!-- standing:begin (generated by make reproduce from results/; do not edit) -->",
                  "<!-- standing:end -->")


def update_readme(readme: str | os.PathLike, results: str | os.PathLike | None = None) -> bool:
    """Replace the text between the README's standing markers with ``standing_markdown``; False (nothing written)
    when the README has no markers."""
    path = Path(readme)
    text = path.read_text()
    begin, end = README_MARKERS
    if begin not in text or end not in text:
        return False
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    new = f"{head}{begin}\n{standing_markdown(results)}\n{end}{tail}"
    if new != text:
        atomic_write_text(path, new)
    return True
