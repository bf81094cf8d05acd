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
    cells = _cells(frame, digits)
    align = ["right" if _numeric_column([row[j] for row in cells]) else "left" for j in range(frame.shape[1])]
    return tabulate(cells, headers=list(frame.columns), tablefmt="pipe", disable_numparse=True,
                    colalign=align or None)


def latex(frame: pd.DataFrame, digits: int = 2, caption: str = "") -> str:
    """A booktabs tabular that compiles as written: every header and cell escaped once, number
    columns right-aligned (a column is a number column when every filled cell starts with a number:
    ``78.1``, ``78.1*``, ``80.2 ± 0.4``, ``78.1 (92.1, -14.0)``)."""
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


_NUMBER = re.compile(r"^[-+−]?\d+(\.\d+)?([x×%*]|\s|$)")  # 78.1, 78.1*, 1.96x, 80.2 ± 0.4, 78.1 (92.1, -14.0)


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


def write_table(frame: pd.DataFrame, stem: Path, caption: str = "", digits: int = 2,
                csv_frame: pd.DataFrame | None = None) -> list[Path]:
    """Write ``stem``.md, .tex and .csv (``csv_frame`` when the CSV keeps more rows than the
    tables show); returns the paths."""
    csv = frame if csv_frame is None else csv_frame
    stem = Path(stem)
    md = (f"**{caption}**\n\n" if caption else "") + markdown(frame, digits) + "\n"
    paths = [write_text(stem.with_suffix(".md"), md),
             write_text(stem.with_suffix(".tex"), latex(frame, digits, caption))]
    paths.append(atomic_write(stem.with_suffix(".csv"), lambda p: csv.to_csv(p, index=False)))
    return paths


LINE_STYLES = [("o", "-"), ("s", "--"), ("^", "-."), ("D", ":"), ("v", "-"), ("P", "--"), ("X", "-."),
               ("*", ":"), ("<", "-"), (">", "--")]
"""(marker, line style) per curve: curves that coincide stay visible, in grey print too."""


def line_style(i: int) -> dict:
    """Matplotlib keywords giving curve ``i`` a colour, marker and line style of its own; later
    curves are drawn smaller and hollow so one exactly on top of another still shows beneath."""
    marker, ls = LINE_STYLES[i % len(LINE_STYLES)]
    return {"marker": marker, "ls": ls, "color": f"C{i % 10}", "ms": max(3.0, 7.0 - 0.8 * i),
            "mfc": "none" if i % 2 else f"C{i % 10}", "lw": 1.4}


def save_figure(fig, stem: Path) -> list[Path]:
    """Save a matplotlib figure as PNG and PDF, cropped to what is drawn. The crop is measured once (one
    draw) and given to both saves; ``bbox_inches="tight"`` would draw the figure again for every format."""
    import matplotlib.pyplot as plt

    fig.canvas.draw()
    bbox = fig.get_tightbbox(fig.canvas.get_renderer()).padded(0.1)  # savefig's own pad_inches default
    paths = []
    for ext in (".png", ".pdf"):
        target = Path(stem).with_suffix(ext)
        paths.append(atomic_write(target, lambda p, ext=ext: fig.savefig(p, format=ext[1:], dpi=150,
                                                                         bbox_inches=bbox)))
    plt.close(fig)
    return paths
