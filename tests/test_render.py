"""What a researcher pastes into a paper: the LaTeX table compiles as written (escaped once,
numbers right-aligned, booktabs), pinned by a golden file and compiled where a LaTeX engine exists."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eebench.report.render import latex, write_table

GOLDEN = Path(__file__).parent / "fixtures" / "golden" / "operating_points.tex"


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"policy": ["entropy", "max_prob", "patience"],
                         "calibrated_on": ["dev", "dev", "dev@SST-2"],
                         "time%": [49.98, 61.2, np.nan],
                         "acc": ["78.90 ± 0.41", "79.1*", "80.0"],
                         "setting": ["threshold=0.6", "threshold=0.9", "patience=2, δ=0"]})


def test_latex_matches_the_golden_file_escaped_once_and_right_aligned():
    text = latex(_frame(), caption="Operating points (time% ≤ 50, * = best)")
    assert text == GOLDEN.read_text()
    assert "\\textbackslash" not in text  # nothing escaped twice
    assert "\\begin{tabular}{llrrl}" in text  # number columns right-aligned
    assert "calibrated\\_on & time\\% & acc" in text
    assert "78.90 $\\pm$ 0.41" in text


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no pdflatex installed (the golden file was compiled once)")
def test_the_written_tex_compiles(tmp_path):
    write_table(_frame(), tmp_path / "table", caption="Operating points (time% ≤ 50, * = best)")
    (tmp_path / "doc.tex").write_text("\\documentclass{article}\n\\usepackage{booktabs}\n"
                                      "\\begin{document}\n\\input{table.tex}\n\\end{document}\n")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:]
    assert "Missing character" not in (tmp_path / "doc.log").read_text()
    assert (tmp_path / "doc.pdf").stat().st_size > 0


def test_every_policy_gets_a_curve_or_shares_one_it_coincides_with():
    from eebench.report.run_report import coinciding_fronts, flops_unit, front_at_budgets
    from eebench.report.render import line_style

    curves = pd.DataFrame({"policy": ["entropy"] * 3 + ["max_prob"] * 3 + ["patience"] * 2,
                           "setting": list("abcabcde"),
                           "metric": [70, 75, 80, 70, 75, 80, 72, 78], "time_pct": [20, 40, 60, 20, 40, 60, 30, 90]})
    groups = coinciding_fronts(curves)
    assert [names for names, _ in groups] == [["entropy", "max_prob"], ["patience"]]
    styles = [line_style(i) for i in range(10)]
    assert len({(s["marker"], s["ls"], s["color"]) for s in styles}) == 10  # no two curves look alike
    front = pd.DataFrame({"policy": ["entropy"] * 4, "setting": ["t=0.9", "t=0.8", "t=0.79", "t=0.5"],
                          "metric": [70.0, 75.0, 75.01, 80.0], "time_pct": [19.0, 38.0, 39.0, 95.0]})
    corners = front_at_budgets(front)
    assert list(corners["time% budget"]) == ["≤ 20", "≤ 40", "≤ 100"]
    assert list(corners["setting"]) == ["t=0.9", "t=0.79", "t=0.5"]
    assert flops_unit(pd.Series([4.08e6])) == ("MFLOPs", 1e6)
    assert flops_unit(pd.Series([2.2e10])) == ("GFLOPs", 1e9)
