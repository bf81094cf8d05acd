"""Render one frame three ways: Markdown, LaTeX (booktabs) and CSV — the same numbers in each."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from eebench.io import atomic_write, write_text


def _cells(frame: pd.DataFrame, digits: int) -> list[list]:
    def fmt(v):
        if isinstance(v, float):
            return "" if pd.isna(v) else f"{v:.{digits}f}"
        return v

    return [[fmt(v) for v in row] for row in frame.itertuples(index=False)]


def markdown(frame: pd.DataFrame, digits: int = 2) -> str:
    return tabulate(_cells(frame, digits), headers=list(frame.columns), tablefmt="pipe",
                    disable_numparse=True)


def latex(frame: pd.DataFrame, digits: int = 2, caption: str = "") -> str:
    """A booktabs tabular that compiles as written: every header and cell escaped once, number
    columns right-aligned (a column is a number column when every filled cell is a number, a
    ``mean ± std`` or a marked number such as ``78.1*``)."""
    cells = _cells(frame, digits)
    align = "".join("r" if _numeric_column([row[j] for row in cells]) else "l" for j in range(frame.shape[1]))
    lines = [f"\\begin{{tabular}}{{{align}}}", "\\toprule",
             " & ".join(_tex_escape(str(c)) for c in frame.columns) + " \\\\", "\\midrule"]
    lines += [" & ".join(_tex_escape("" if v is None else str(v)) for v in row) + " \\\\" for row in cells]
    lines += ["\\bottomrule", "\\end{tabular}"]
    body = "\n".join(lines)
    if not caption:
        return body + "\n"
    return ("\\begin{table}[t]\n\\centering\n" + body + f"\n\\caption{{{_tex_escape(caption)}}}\n"
            "\\end{table}\n")


_NUMBER = re.compile(r"^[-+−]?\d+(\.\d+)?(x|×|%)?\*?( ± \d+(\.\d+)?)?\*?$")


def _numeric_column(values: list) -> bool:
    filled = [str(v).strip() for v in values if v is not None and str(v).strip() not in ("", "-", "—")]
    return bool(filled) and all(_NUMBER.match(v) for v in filled)


_TEX = {"\\": "\\textbackslash{}", "%": "\\%", "_": "\\_", "&": "\\&", "#": "\\#", "$": "\\$",
        "{": "\\{", "}": "\\}", "~": "\\textasciitilde{}", "^": "\\textasciicircum{}",
        "±": "$\\pm$", "≤": "$\\le$", "≥": "$\\ge$", "×": "$\\times$", "−": "$-$", "…": "\\ldots{}",
        "δ": "$\\delta$", "θ": "$\\theta$", "λ": "$\\lambda$", "γ": "$\\gamma$", "α": "$\\alpha$",
        "β": "$\\beta$", "τ": "$\\tau$"}


def _tex_escape(text: str) -> str:
    """Escape ``text`` for LaTeX, each character once (a table cell or a caption)."""
    return "".join(_TEX.get(ch, ch) for ch in text)


def write_table(frame: pd.DataFrame, stem: Path, caption: str = "", digits: int = 2) -> list[Path]:
    """Write ``stem``.md, .tex and .csv; returns the paths."""
    stem = Path(stem)
    md = (f"**{caption}**\n\n" if caption else "") + markdown(frame, digits) + "\n"
    paths = [write_text(stem.with_suffix(".md"), md),
             write_text(stem.with_suffix(".tex"), latex(frame, digits, caption))]
    paths.append(atomic_write(stem.with_suffix(".csv"), lambda p: frame.to_csv(p, index=False)))
    return paths


def save_figure(fig, stem: Path) -> list[Path]:
    """Save a matplotlib figure as PNG and PDF."""
    import matplotlib.pyplot as plt

    paths = []
    for ext in (".png", ".pdf"):
        target = Path(stem).with_suffix(ext)
        paths.append(atomic_write(target, lambda p, ext=ext: fig.savefig(p, format=ext[1:], dpi=150,
                                                                         bbox_inches="tight")))
    plt.close(fig)
    return paths
