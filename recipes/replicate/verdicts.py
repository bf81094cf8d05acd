"""Measure each paper claim on the replication runs (recipes/replicate/, three seeds each) and print the
verdict table of docs/replication.md:

    python recipes/replicate/verdicts.py [--results results] [--suffix _headlr]

A claim compares two settings over their seeds with Welch's t-test: "holds" when the difference has
the claimed sign and p < 0.05, "does not hold" when it is significant the other way (or, for a "not
above" claim, significantly above), "not separable at this scale" otherwise. Settings whose runs
are missing are listed as "not measured"."""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import ttest_ind

from eebench.errors import UserError
from eebench.report.compare import metric_at_time, policy_sweep, time_at_metric
from eebench.rundir import open_run, run_status


@dataclass
class Claim:
    paper: str
    text: str
    a: str  # run name (without the seed suffix) expected higher (or lower, for time%)
    b: str
    measure: str  # "early", "last", "at_time:<policy>:<t>", "time_for:<policy>"
    direction: str = "above"  # above: a > b; below: a < b; not_above: a ≤ b
    b_policy: str | None = None  # measure b with another policy (CKA vs entropy on one model)


CLAIMS = [
    Claim("RomeBERT", "RomeBERT's early exits are far above DeeBERT's (mean accuracy of exits 1..L-1)",
          "rep_romebert_sst2_romebert", "rep_romebert_sst2_two_stage", "early"),
    Claim("RomeBERT", "DeeBERT+SD is not above DeeBERT layer-wise (mean accuracy of exits 1..L-1)",
          "rep_romebert_sst2_self_distill", "rep_romebert_sst2_two_stage", "early", "not_above"),
    Claim("RomeBERT", "RomeBERT needs less time% than DeeBERT at matched accuracy (entropy exit; time% "
          "to reach the lowest last-exit accuracy of all their runs − 1)", "rep_romebert_sst2_romebert",
          "rep_romebert_sst2_two_stage", "time_for:entropy", "below"),
    Claim("RomeBERT", "gradient regularization is above self-distillation only (mean of exits 1..L-1)",
          "rep_romebert_sst2_romebert", "rep_romebert_sst2_romebert_sd", "early"),
    Claim("RomeBERT", "gradient regularization is above self-distillation only (last exit)",
          "rep_romebert_sst2_romebert", "rep_romebert_sst2_romebert_sd", "last"),
    *(Claim("MetaBERT", f"MetaBERT is above {label} training ({what})", "rep_metabert_sst2_metabert",
            f"rep_metabert_sst2_{method}", measure)
      for method, label in [("joint", "joint"), ("two_stage", "two-stage"), ("alternating", "alternating")]
      for measure, what in [("early", "mean of exits 1..L-1, Fig. 2"), ("last", "last exit, Table II")]),
    *(Claim("CsdBERT", f"dropping {term} costs accuracy ({what})", "rep_csdbert_sst2_csdbert",
            f"rep_csdbert_sst2_csdbert_{run}", measure)
      for term, run in [("L_KD", "no_kd"), ("L_SCL", "no_scl")]
      for measure, what in [("early", "mean of exits 1..L-1"),
                            ("at_time:cka:50", "CKA exit, best accuracy at time% ≤ 50, i.e. 2× speed-up")]),
    Claim("CsdBERT", "the CKA exit beats entropy at equal speed-up (same CsdBERT models, best accuracy at "
          "time% ≤ 50)", "rep_csdbert_sst2_csdbert", "rep_csdbert_sst2_csdbert", "at_time:cka:50",
          b_policy="entropy"),
    *(Claim("BERTer", f"SLF is above joint training (SST-5, {what})", "rep_berter_sst5_slf",
            "rep_berter_sst5_joint", measure)
      for measure, what in [("early", "mean of exits 1..L-1"), ("last", "last exit")]),
    Claim("BERTer", "Conc-Before-Embed is above embedding each sentence on its own (Quora, last exit)",
          "rep_berter_quora_concat", "rep_berter_quora_embed_then_concat", "last"),
]


def seeds(results: Path, name: str) -> list:
    return [open_run(p) for p in sorted(results.glob(f"{name}-seed*")) if run_status(p).finished]


def value(run, measure: str, policy: str | None = None, target: float | None = None) -> float:
    metric = run.spec.primary_metric
    rows = run.layerwise("dev")
    if measure == "early":
        return float(np.mean([r[metric] for r in rows[:-1]]))
    if measure == "last":
        return float(rows[-1][metric])
    kind, name, *rest = measure.split(":")
    table = policy_sweep(run, "dev", policy or name)
    if kind == "at_time":
        return metric_at_time(table, metric, float(rest[0]))
    return time_at_metric(table, metric, target)


def judge(a: list[float], b: list[float], direction: str) -> tuple[str, float]:
    with warnings.catch_warnings():  # nearly equal seeds (exits at the majority class) warn of precision loss
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(ttest_ind(a, b, equal_var=False).pvalue) if np.std(a) + np.std(b) > 0 else (
            0.0 if np.mean(a) != np.mean(b) else 1.0)
    diff = np.mean(a) - np.mean(b)
    significant = p < 0.05
    if direction == "not_above":
        return ("does not hold" if significant and diff > 0 else "holds"), p
    wanted = diff > 0 if direction == "above" else diff < 0
    if not significant:
        return "not separable at this scale", p
    return ("holds" if wanted else "does not hold"), p


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--suffix", default="", help="measure the runs <run><suffix>-seed<S> instead, e.g. "
                        "_headlr for the diagnostic runs with exit heads at lr 1e-3 (docs/replication.md)")
    parser.add_argument("--paper", action="append", help="only this paper's claims (repeatable)")
    args = parser.parse_args()
    print("| paper | claim | A (mean ± std) | B (mean ± std) | seeds | p (Welch) | verdict |")
    print("|---|---|---|---|---|---|---|")
    for c in CLAIMS:
        if args.paper and c.paper not in args.paper:
            continue
        name_a, name_b = c.a + args.suffix, c.b + args.suffix
        runs_a, runs_b = seeds(args.results, name_a), seeds(args.results, name_b)
        if len(runs_a) < 2 or len(runs_b) < 2:
            print(f"| {c.paper} | {c.text} | {name_a}: {len(runs_a)} run(s) | {name_b}: {len(runs_b)} run(s) | | | "
                  f"not measured |")
            continue
        target = None
        if c.measure.startswith("time_for"):  # an accuracy every run of both settings reaches
            target = min(value(r, "last") for r in runs_a + runs_b) - 1.0
        a = [value(r, c.measure, target=target) for r in runs_a]
        b = [value(r, c.measure, c.b_policy, target) for r in runs_b]
        verdict, p = judge(a, b, c.direction)
        label_b = f"{name_b} ({c.b_policy})" if c.b_policy else name_b
        print(f"| {c.paper} | {c.text} | {name_a}: {np.mean(a):.1f} ± {np.std(a, ddof=1):.1f} | {label_b}: "
              f"{np.mean(b):.1f} ± {np.std(b, ddof=1):.1f} | {len(a)}/{len(b)} | {p:.3f} | {verdict} |")


if __name__ == "__main__":
    try:
        main()
    except UserError as err:  # a corrupt run file: one line and exit code 2, as eebench's commands
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
