"""The printed table: a row per (group, method), a column per task (and its time%), the caption, and
the paper's own inconsistencies."""

from __future__ import annotations

import re

import pandas as pd

from eebench.report.tables.measure import has_flag
from eebench.report.tables.spec import TableSpec

def display(spec: TableSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """The printed table: a row per (group, method), a column per task (and its time% where the paper
    gives one). A measured cell reads ``ours (paper, ±diff)``; an unmeasured one ``paper*``."""
    d = spec.digits
    has_time = frame["paper_time_pct"].notna().any()
    out = []
    for (group, method), rows in frame.groupby(["row_group", "method"], sort=False):
        line = {"group": group, "method": method}
        for _, r in rows.iterrows():
            label = f"{r['task']} {r['metric']}"
            if pd.notna(r["ours"]):
                spread = (f" ± {r['ours_std']:.{d}f}" if "n_seeds" in r and pd.notna(r.get("n_seeds"))
                          and r["n_seeds"] > 1 else "")
                low, high = r.get("ours_lo"), r.get("ours_hi")
                interval = f" [{low:.{d}f}, {high:.{d}f}]" if pd.notna(low) and pd.notna(high) else ""
                marks = ("†" if "paper_outside_interval" in str(r["flags"]) else "") + \
                        ("‡" if "at_majority_rate" in str(r["flags"]) else "")
                line[label] = f"{r['ours']:.{d}f}{spread}{interval}{marks} ({r['paper']:.{d}f}, {r['diff']:+.{d}f})"
                if not has_time and r["policy"] not in ("", "static") and pd.notna(r["ours_time_pct"]):
                    line[label] += f" @ {r['ours_time_pct']:.0f}% time"
            else:
                line[label] = f"{r['paper']:.{d}f}*"
            if has_time and pd.notna(r["paper_time_pct"]):
                paper_t = f"{r['paper_time_pct']:.1f}"
                line[f"{r['task']} time%"] = (f"{r['ours_time_pct']:.1f} ({paper_t})" if pd.notna(r["ours"])
                                              else f"{paper_t}*")
        if spec.train_time:
            ours = rows["train_seconds"].dropna() if "train_seconds" in rows else pd.Series(dtype=float)
            paper = next((m.group(1) for m in rows["paper_note"].map(_PAPER_TIME.search) if m), "")
            line["train time"] = (clock(ours.iloc[0]) if len(ours) else "") + (f" (paper {paper} h:mm)" if paper else "")
        out.append(line)
    return pd.DataFrame(out).fillna("")


_PAPER_TIME = re.compile(r"training time (\d+:\d+)")


def caption(spec: TableSpec, frame: pd.DataFrame) -> str:
    measured = int(frame["ours"].notna().sum())
    sets = sorted({s for s in frame["set"] if s})
    text = (f"{spec.title}. Cells: ours (paper, ours − paper); * = paper's number, not run here "
            f"({measured} of {len(frame)} cells measured")
    if not measured:
        return text + ")."
    models = sorted({m for m in frame.get("model", pd.Series(dtype=str)).dropna() if m})
    return (text + f", recipe set {'/'.join(sets)}" + (f", model {', '.join(models)}" if models else "") + "). "
            "[low, high]: 95% interval (one seed: bootstrap over the split's examples; several seeds: of their "
            "mean, Student t); † the paper's number lies outside it; ‡ it covers the majority-class rate. The "
            "rows name the paper's models; the measured cells come from the model named here.")


def how_cells_fill(spec: TableSpec, frame: pd.DataFrame, sets: tuple[str, ...]) -> str:
    """Where a measured cell comes from, for the terminal: which recipes' run folders count, and how
    to fill the rest (a run of one's own counts only when it is the run of the cell's recipe)."""
    from eebench.recipe_io import load_recipe

    lines = []
    for set_name in sets:
        pattern = spec.recipes.get(set_name)
        if pattern is None:
            continue
        column, method = next(iter(spec.columns)), next(iter(spec.methods))
        example = spec.recipe_path(set_name, method, column)
        try:
            folder = load_recipe(example).run_dir(example.stem) if example and example.is_file() else None
        except Exception:  # a broken recipe is reported where it is used; here it only misses an example
            folder = None
        lines.append(f"{set_name} set: a cell is measured from the finished run of {pattern}"
                     + (f" (e.g. {folder} for {column} / {method})" if folder else "")
                     + "; a run of your own counts when it is that recipe's run: train it with eebench finetune "
                     f"{pattern.format(task=spec.columns[column].task, method=spec.methods[method])}, or fill "
                     f"every missing cell with eebench reproduce --table {spec.id}" + (" --cpu" if set_name == "cpu" else ""))
    return "\n".join(lines)


def mismatches(frame: pd.DataFrame) -> list[str]:
    """The paper's derived values that do not follow from its own components."""
    bad = frame[has_flag(frame, "paper_inconsistent")]
    return [f"{r['method']} ({r['row_group']}) {r['task']}: {r['note']}" for _, r in bad.iterrows()]


def clock(seconds: float) -> str:
    """h:mm:ss."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
