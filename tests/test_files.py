"""Files a colleague on a shared cluster can read, and nothing left behind: results follow the umask,
no lock file survives a finished or refused run."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import ROOT, quickstart_overrides
from eebench.errors import Busy
from eebench.io import write_json, write_text
from eebench.run.ownership import lock_path, owned, owner


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_atomic_writes_get_the_umasks_mode(tmp_path, umask_027):
    write_text(tmp_path / "a.md", "x")
    write_json(tmp_path / "b.json", {"a": 1})
    for name in ("a.md", "b.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o640
    os.umask(0o022)
    write_text(tmp_path / "a.md", "y")  # a rewrite too
    assert stat.S_IMODE((tmp_path / "a.md").stat().st_mode) == 0o644


def test_no_lock_file_survives_a_finished_or_refused_writer(tmp_path):
    run = tmp_path / "run"
    with owned(run):
        assert lock_path(run).is_file()
        assert owner(run) is not None  # held: a second look sees the owner
        with pytest.raises(Busy):
            with owned(run):
                pass
        assert lock_path(run).is_file()  # the refused writer removed nothing of the owner's
    assert not lock_path(run).exists()
    assert owner(run) is None and not lock_path(run).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_finished_cli_run_leaves_no_lock_and_files_follow_the_umask(tmp_path, umask_027):
    from eebench.cli import app

    args = ["finetune", str(ROOT / "recipes" / "quickstart.toml")]
    for override in quickstart_overrides(tmp_path, "files", report=True):
        args += ["--set", override]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    for name in ("status.json", "recipe.json", "report/report.md", "report/layerwise.tex"):
        assert stat.S_IMODE((tmp_path / "files" / name).stat().st_mode) == 0o640, name


def test_ctrl_c_is_recorded_as_interrupted_and_the_hint_followed_literally_resumes(tmp_path, monkeypatch):
    import re
    import shlex

    import eebench.train.loop as loop
    from eebench.cli import app
    from eebench.run.folder import run_status

    def ctrl_c(total_steps, par):
        if total_steps == 6:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "fault_point", ctrl_c)
    args = ["finetune", str(ROOT / "recipes" / "quickstart.toml")]
    for override in [*quickstart_overrides(tmp_path, "ctrlc"), "train.checkpoint_every=4"]:
        args += ["--set", override]
    runner = CliRunner()
    result = runner.invoke(app, args)
    assert result.exit_code == 130, result.output
    status = run_status(tmp_path / "ctrlc")
    assert status.state == "interrupted" and not status.trained
    hint = re.search(r"continue it from its last checkpoint with: (eebench resume \S+)\n", result.output)
    assert hint, result.output
    monkeypatch.setattr(loop, "fault_point", lambda *a: None)
    again = runner.invoke(app, args)  # the same command again: refused, naming the resume command
    assert again.exit_code == 2 and f"eebench resume {tmp_path / 'ctrlc'}" in again.output.replace("\n", "")
    resumed = runner.invoke(app, shlex.split(hint.group(1))[1:])
    assert resumed.exit_code == 0, resumed.output
    assert re.search(r"resuming\s+from\s+\S*checkpoint", resumed.output.replace("\n", "")), resumed.output[:600]
    assert run_status(tmp_path / "ctrlc").state == "finished"


def test_a_run_remembers_its_data_root_and_its_own_data_folder(tmp_path, monkeypatch):
    """Trained with --data-root: evaluate / calibrate / speed need no flag, --data-dir at the run's own
    folder is the run's data (no `dev@SST-2` copy), and a stored trace serves when the files are gone."""
    import shutil

    from conftest import tiny_sst2_recipe
    from eebench.cli import app
    from eebench.paths import DATA_ENV

    data = tmp_path / "data" / "SST-2"
    data.mkdir(parents=True)
    for split, n in (("train", 48), ("dev", 24), ("test", 12)):
        rows = ["sentence\tlabel" if split != "test" else "index\tsentence"]
        rows += [f"a {'good' if i % 2 else 'bad'} film number {i}\t{i % 2}" if split != "test"
                 else f"{i}\ta film number {i}" for i in range(n)]
        (data / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    recipe = tiny_sst2_recipe(tmp_path / "r.toml", data, tmp_path / "results", "remember")
    recipe.write_text(recipe.read_text().replace(f'data_dir = "{data}"\n', ""))  # the data root finds it
    monkeypatch.delenv(DATA_ENV, raising=False)
    runner = CliRunner()
    result = runner.invoke(app, ["finetune", str(recipe), "--data-root", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    monkeypatch.delenv(DATA_ENV, raising=False)  # a new shell: no data root given
    run = tmp_path / "results" / "remember"
    for args in (["evaluate", str(run), "--split", "test"],
                 ["calibrate", str(run), "--target-time-pct", "80"],
                 ["speed", str(run), "--limit", "8", "--rounds", "1"]):
        monkeypatch.delenv(DATA_ENV, raising=False)
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
    monkeypatch.delenv(DATA_ENV, raising=False)
    result = runner.invoke(app, ["evaluate", str(run), "--split", "dev", "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    assert not list((run / "eval").glob("*@*")) and not list((run / "calibration").glob("*@*"))
    status = json.loads((run / "status.json").read_text())
    assert status["data_root"] == str((tmp_path / "data").resolve())
    assert status["data"]["test"]["source"] == str((data / "test.tsv").resolve()) and status["data"]["test"]["n"] == 12
    shutil.rmtree(tmp_path / "data")  # the files are gone: the stored traces, made from the recorded data, serve
    monkeypatch.delenv(DATA_ENV, raising=False)
    result = runner.invoke(app, ["evaluate", str(run), "--split", "dev"])
    assert result.exit_code == 0 and "its stored trace is of the data the run recorded" in result.output, result.output


def test_overwrite_names_the_report_where_it_will_be(tmp_path):
    from eebench.cli import app

    args = ["finetune", str(ROOT / "recipes" / "quickstart.toml")]
    for override in [*quickstart_overrides(tmp_path, "over", report=True), "train.epochs=0", "train.args.stage2_epochs=0"]:
        args += ["--set", override]
    runner = CliRunner()
    assert runner.invoke(app, args).exit_code == 0
    result = runner.invoke(app, [*args, "--overwrite"])
    assert result.exit_code == 0, result.output
    text = result.output.replace("\n", "")
    assert ".overwrite" not in text and f"files in {tmp_path / 'over' / 'report'}" in text
    assert (tmp_path / "over" / "report" / "report.md").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_folder_swap_killed_between_its_renames_is_recovered(tmp_path):
    """The one folder swap (eebench.io.swap_folder), used by the model save, the checkpoint and a replaced
    run: killed after moving the old folder aside, before moving the new one in, the reader gets the old
    folder back."""
    from eebench.io import recover_swap, swap_folder, swapped_out

    for module in ("model/build.py", "train/checkpoint.py", "run/ownership.py"):
        text = (ROOT / "eebench" / module).read_text()
        assert "swap_folder(" in text and ".rename(" not in text, module  # no swap of its own
    folder, new = tmp_path / "model", tmp_path / "model.new"
    folder.mkdir()
    (folder / "weights").write_text("old")
    new.mkdir()
    (new / "weights").write_text("new")
    calls = []

    def dying_replace(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:
            raise KeyboardInterrupt("killed between the renames")
        os.rename(src, dst)

    original = os.replace
    os.replace = dying_replace
    try:
        with pytest.raises(KeyboardInterrupt):
            swap_folder(new, folder)
    finally:
        os.replace = original
    assert not folder.exists() and swapped_out(folder).exists()
    recover_swap(folder)
    assert (folder / "weights").read_text() == "old" and not swapped_out(folder).exists()
    swap_folder(new, folder)
    assert (folder / "weights").read_text() == "new" and not new.exists()


def test_no_command_writes_the_environment(tmp_path, monkeypatch):
    """--data-root is this command's choice, passed on to child processes in the environment their
    launcher builds; the process's own environment is never written, and the next command starts fresh."""
    from eebench.cli import app
    from eebench.paths import DATA_ENV, child_env, data_root

    monkeypatch.delenv(DATA_ENV, raising=False)
    before = {k: v for k, v in os.environ.items() if k.startswith("EEBENCH")}
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "no-run"), "--data-root", str(tmp_path)])
    assert result.exit_code == 2, result.output  # the data root was taken, then the run folder refused
    assert {k: v for k, v in os.environ.items() if k.startswith("EEBENCH")} == before
    from eebench.paths import set_data_root

    set_data_root(tmp_path)  # what a command does with --data-root
    assert data_root() == tmp_path.resolve() and child_env()[DATA_ENV] == str(tmp_path.resolve())
    assert DATA_ENV not in os.environ
    CliRunner().invoke(app, ["recipes"])  # a new command forgets the last one's choice
    assert data_root() is None
    for path in (ROOT / "eebench").rglob("*.py"):
        text = path.read_text()
        assert "os.environ[DATA_ENV]" not in text and "environ.update" not in text, path
