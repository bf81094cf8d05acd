"""Files a colleague on a shared cluster can read, and nothing left behind: results follow the umask,
no lock file survives a finished or refused run."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import ROOT, quickstart_overrides
from eebench.errors import Busy
from eebench.io import write_json, write_text
from eebench.ownership import lock_path, owned, owner


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
    for override in quickstart_overrides(tmp_path, "files"):
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
    from eebench.rundir import run_status

    def ctrl_c(total_steps, par):
        if total_steps == 6:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "_fault", ctrl_c)
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
    monkeypatch.setattr(loop, "_fault", lambda *a: None)
    again = runner.invoke(app, args)  # the same command again: refused, naming the resume command
    assert again.exit_code == 2 and f"eebench resume {tmp_path / 'ctrlc'}" in again.output.replace("\n", "")
    resumed = runner.invoke(app, shlex.split(hint.group(1))[1:])
    assert resumed.exit_code == 0, resumed.output
    assert re.search(r"resuming\s+from\s+\S*checkpoint", resumed.output), resumed.output[:600]
    assert run_status(tmp_path / "ctrlc").state == "finished"
