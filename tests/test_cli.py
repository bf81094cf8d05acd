"""End to end through the CLI on a shrunken quickstart recipe, and every user-error path."""


import os
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import ROOT, quickstart_overrides
from eebench.cli import app
from eebench.policies import POLICIES
from eebench.recipe import TrainConfig
from eebench.train.strategies import STRATEGIES, build_stages

QUICKSTART = str(ROOT / "recipes" / "quickstart.toml")
runner = CliRunner()


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _sets(overrides):
    return [x for o in overrides for x in ("--set", o)]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One quickstart run, trained once per module and never changed: tests get copies (run_dir)."""
    tmp = tmp_path_factory.mktemp("runs")
    result = _invoke("finetune", QUICKSTART, *_sets(quickstart_overrides(tmp, report=True)))
    assert result.exit_code == 0, result.output
    return tmp / "qs"


@pytest.fixture
def run_dir(finished_run, tmp_path_factory):
    """A private copy of the finished run: what a test calibrates, evaluates or damages stays its own,
    so no test's result depends on which tests ran before it."""
    import shutil

    copy = tmp_path_factory.mktemp("runs") / "qs"
    shutil.copytree(finished_run, copy)
    return copy


def test_finetune_writes_every_artifact(run_dir):
    for rel in ["recipe.toml", "recipe.json", "status.json", "train_log.jsonl", "model/model.safetensors",
                "model/exits.json", "model/config.json", "traces/dev.npz", "traces/test.npz",
                "eval/dev/layerwise.csv", "eval/dev/sweep_entropy.csv", "eval/dev/exits_entropy.csv",
                "eval/test/operating_entropy.json", "calibration/entropy.json",
                "report/report.md", "report/layerwise.md", "report/layerwise.tex", "report/layerwise.csv",
                "report/layerwise.png", "report/layerwise.pdf", "report/sweep_dev_entropy.md",
                "report/curve_dev_entropy.png", "report/curve_dev_entropy.pdf",
                "report/exit_hist_dev_entropy.png", "report/exit_hist_dev_entropy.pdf",
                "report/operating_points.tex"]:
        assert (run_dir / rel).is_file(), rel
    assert "\\toprule" in (run_dir / "report/layerwise.tex").read_text()


def test_calibrate_then_evaluate_applies_saved_threshold(run_dir):
    import json

    result = _invoke("calibrate", run_dir, "--policy", "max_prob", "--target-time-pct", "70")
    assert result.exit_code == 0, result.output
    cal = json.loads((run_dir / "calibration/max_prob.json").read_text())
    dev_point = json.loads((run_dir / "eval/dev/operating_max_prob.json").read_text())
    assert cal["split"] == "dev" and dev_point["time_pct"] <= 70 + 1e-9
    result = _invoke("evaluate", run_dir, "--split", "test")
    assert result.exit_code == 0, result.output
    test_point = json.loads((run_dir / "eval/test/operating_max_prob.json").read_text())
    assert test_point["setting"] == cal["setting"] and test_point["calibrated_on"] == "dev"
    result = _invoke("calibrate", run_dir, "--max-drop", "1.0")
    assert result.exit_code == 0, result.output
    point = json.loads((run_dir / "eval/dev/operating_entropy.json").read_text())
    last = json.loads((run_dir / "eval/dev/layerwise.json").read_text())[-1]["acc"]
    assert point["acc"] >= last - 1.0


@pytest.mark.parametrize("policy", [name for name, p in POLICIES.items() if not p.needs or p.needs == "cka"])
def test_every_policy_calibrates_on_quickstart(run_dir, policy):
    """Every registered policy that reads the quickstart's trace (LTE needs a model with an LTE head)."""
    result = _invoke("calibrate", run_dir, "--policy", policy, "--target-time-pct", "80")
    assert result.exit_code == 0, result.output
    import json

    point = json.loads((run_dir / f"eval/dev/operating_{policy}.json").read_text())
    assert point["time_pct"] <= 80 + 1e-9 and sum(point["histogram"]) == 120


def test_speed_times_the_engine_and_the_report_shows_it(run_dir):
    import json

    result = _invoke("speed", run_dir, "--limit", "40", "--rounds", "1", "--batch-size", "16")
    assert result.exit_code == 0, result.output
    record = json.loads((run_dir / "eval/dev/speed_entropy.json").read_text())
    cal = json.loads((run_dir / "calibration/entropy.json").read_text())
    assert record["setting"] == cal["setting"] and record["examples"] == 40
    b1, b16 = record["batch_1"], record["batch_16"]
    assert b1["agreement"] == 1.0 and b16["agreement"] == 1.0
    assert 0 < b1["engine_p50_ms"] <= b1["engine_p95_ms"] and b1["measured_speedup"] > 0
    assert record["ideal_speedup"] == pytest.approx(6 / record["mean_exit_layer"])
    assert _invoke("report", "--run", run_dir).exit_code == 0
    assert "Measured speed" in (run_dir / "report/report.md").read_text()
    assert (run_dir / "report/measured_speed.csv").is_file()
    _one_line_error(_invoke("speed", run_dir, "--policy", "lte", "--limit", "5"),
                    "no calibration for policy 'lte'", "eebench calibrate")
    _one_line_error(_invoke("speed", run_dir, "--batch-size", "1"), "--batch-size 1: must be at least 2")


def test_lte_policy_without_lte_head_is_a_clear_error(run_dir):
    _one_line_error(_invoke("calibrate", run_dir, "--policy", "lte", "--target-time-pct", "80"),
                    "policy 'lte' needs lte signals", "train.strategy")


def test_trace_is_reused_and_a_stale_one_never_replaces_results_unasked(run_dir):
    from eebench.trace_data import load_trace

    path = run_dir / "traces/dev.npz"
    before = path.stat().st_mtime_ns
    assert _invoke("evaluate", run_dir, "--split", "dev").exit_code == 0
    assert path.stat().st_mtime_ns == before  # same key: reused, not rewritten
    old_key = load_trace(path).key
    kept = {p: p.read_bytes() for p in [*(run_dir / "calibration").glob("*.json"), *(run_dir / "eval/dev").glob("*")]}
    # change the data: a different dev set: refused, naming the data and --retrace; nothing replaced
    import json

    recipe = json.loads((run_dir / "recipe.json").read_text())
    recipe["task"]["synthetic"]["n_dev"] = 60
    (run_dir / "recipe.json").write_text(json.dumps(recipe))
    for command in (["evaluate", run_dir, "--split", "dev"], ["calibrate", run_dir, "--target-time-pct", "80"]):
        result = _invoke(*command)
        _one_line_error(result, "other data (120 examples from synthetic; now 60 from synthetic)", "--retrace")
    assert path.stat().st_mtime_ns == before and kept and all(p.read_bytes() == b for p, b in kept.items())
    result = _invoke("evaluate", run_dir, "--split", "dev", "--retrace")
    assert result.exit_code == 0, result.output
    fresh = load_trace(path)
    assert fresh.key != old_key and fresh.logits.shape[0] == 60
    recipe["task"]["synthetic"]["n_dev"] = 120
    (run_dir / "recipe.json").write_text(json.dumps(recipe))
    assert _invoke("evaluate", run_dir, "--split", "dev", "--retrace").exit_code == 0
    assert load_trace(path).key == old_key


def test_trace_matches_a_fresh_forward_pass(run_dir):
    import torch

    from eebench.data.encode import encode
    from eebench.data.load import load_split
    from eebench.model.build import load_model
    from eebench.run.folder import open_run
    from eebench.trace_data import load_trace

    run = open_run(run_dir)
    model, tok, _ = load_model(run.model_dir)
    ex = load_split(run.spec, run.recipe.task, "test")
    data = encode(tok, ex, run.recipe.train.max_length)
    batch = data.collate([data[i] for i in range(5)])
    with torch.no_grad():
        logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits
    trace = load_trace(run_dir / "traces/test.npz")
    np.testing.assert_allclose(trace.logits[:5], logits.numpy(), atol=1e-5)


def test_report_from_stored_results_and_paper_table(run_dir, tmp_path):
    result = _invoke("report", "--run", run_dir, "--table", "glue-test", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "romebert-glue-test.tex").is_file()
    assert "93.5" in (tmp_path / "romebert-glue-test.md").read_text()


def test_existing_run_is_not_overwritten(run_dir):
    result = _invoke("finetune", QUICKSTART, *_sets(quickstart_overrides(run_dir.parent)))
    assert result.exit_code == 2 and "already holds a run" in result.output


def _one_line_error(result, *needles):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    text = " ".join(lines)
    assert text.startswith("error:"), result.output
    for needle in needles:
        assert needle in text, (needle, text)


@pytest.mark.parametrize("args,needles", [
    (["finetune", "recipes/missing.toml"], ["recipes/missing.toml", "not found"]),
    (["finetune", QUICKSTART, "--set", "train.lrr=1"], ["quickstart.toml", "train.lrr"]),
    (["finetune", QUICKSTART, "--set", "train.epochs=many"], ["train.epochs"]),
    (["finetune", QUICKSTART, "--set", "task.name=imagenet"], ["unknown task", "imagenet"]),
    (["finetune", QUICKSTART, "--set", "train.lr"], ["expected section.key=value"]),
    (["evaluate", "no/such/run"], ["no/such/run", "not a run folder"]),
    (["calibrate", "no/such/run", "--target-time-pct", "500"], ["--target-time-pct"]),
    (["report"], ["nothing to report"]),
    (["report", "--table", "nope"], ["unknown table", "glue-test"]),
])
def test_user_errors_are_one_line_exit_2(args, needles, tmp_path):
    args = [a if a != QUICKSTART else QUICKSTART for a in args]
    _one_line_error(_invoke(*args, *([] if args[0] != "finetune" else ["--set", f'output.root="{tmp_path}"'])),
                    *needles)


def test_missing_data_folder_and_unreachable_hub(tmp_path):
    recipe = ROOT / "recipes" / "deebert_sst2_minilm.toml"
    result = _invoke("finetune", recipe, "--data-dir", tmp_path / "nowhere", "--set", f'output.root="{tmp_path}"')
    _one_line_error(result, "nowhere", "data-dir")
    result = _invoke("finetune", ROOT / "recipes" / "deebert_sst2.toml", "--set", f'output.root="{tmp_path}"',
                     "--set", "task.name=rte")
    _one_line_error(result, "hub", "data_dir")


def test_missing_model_is_a_user_error(tmp_path):
    result = _invoke("finetune", QUICKSTART, "--set", f'output.root="{tmp_path}"', "--set", 'model.source="hub"',
                     "--set", 'model.name="no-such-org/no-such-model"')
    _one_line_error(result, "no-such-org/no-such-model", "model.name")


def test_calibrate_needs_a_target_it_can_reach(run_dir):
    import json

    path = run_dir / "recipe.json"
    recipe = json.loads(path.read_text())
    assert recipe["exit"]["target_time_pct"] is not None  # the quickstart carries one: no flag needed
    result = _invoke("calibrate", run_dir, "--target-time-pct", "0.5")
    _one_line_error(result, "no setting reaches", "nothing goes below")
    kept = path.read_text()
    try:  # a recipe without a target and no flag: told how to give one
        recipe["exit"]["target_time_pct"] = None
        path.write_text(json.dumps(recipe))
        _one_line_error(_invoke("calibrate", run_dir), "give a target", "--target-time-pct")
    finally:
        path.write_text(kept)


END_TO_END = ["two_stage", "romebert", "csdbert", "metabert", "lte", "smart_alternating"]
"""One strategy per step kind through the whole CLI (several stages; parts + combine; a coupled loss;
its own gradient rule; the LTE signal in the trace; dev metrics choosing each epoch's objective).
Every strategy's losses are pinned in tests/test_loss_pins.py."""


def test_every_strategy_is_pinned_and_each_step_kind_runs_end_to_end():
    import json

    from test_loss_pins import NAMES, PINS

    pinned = json.loads(PINS.read_text())
    assert set(STRATEGIES) <= set(NAMES) <= set(pinned)  # a new strategy needs its pin
    kinds = {("gradient" if s.gradient else "parts" if s.parts else "coupled" if s.coupled else "loss")
             for name in STRATEGIES for s in build_stages(TrainConfig(strategy=name), "sst2", 3)}
    covered = {("gradient" if s.gradient else "parts" if s.parts else "coupled" if s.coupled else "loss")
               for name in END_TO_END for s in build_stages(TrainConfig(strategy=name), "sst2", 3)}
    assert kinds <= covered


@pytest.mark.parametrize("strategy", END_TO_END + ["smart"])
def test_each_step_kind_runs_on_quickstart(strategy, tmp_path):
    """Only the strategy is overridden (plus the test's shrinking); "smart": SMART on two_stage."""
    overrides = quickstart_overrides(tmp_path, strategy) + ["output.evaluate_splits=[\"dev\"]",
                                                           "output.report=false"]
    overrides.remove("train.args.stage2_epochs=1")
    if strategy == "smart":
        overrides += ["train.smart.enabled=true", "train.args={stage2_epochs=1}"]
    else:
        overrides += [f"train.strategy={strategy}", "train.args={}"]
    if strategy == "smart_alternating":
        overrides += ["train.eval_each_epoch=true", "train.epochs=2"]
    result = _invoke("finetune", QUICKSTART, *_sets(overrides))
    assert result.exit_code == 0, result.output
    import json

    rows = json.loads((tmp_path / strategy / "eval/dev/layerwise.json").read_text())
    assert [r["layer"] for r in rows] == list(range(1, 7)) and all(0 <= r["acc"] <= 100 for r in rows)
    log = (tmp_path / strategy / "train_log.jsonl").read_text()
    losses = [json.loads(line)["loss"] for line in log.splitlines() if '"loss"' in line]
    assert losses and all(np.isfinite(losses))
    if strategy == "smart":
        assert "loss_smart" in log
    if strategy == "lte":
        from eebench.trace_data import load_trace

        assert load_trace(tmp_path / strategy / "traces/dev.npz").lte is not None


def test_strategy_errors(tmp_path):
    result = _invoke("finetune", QUICKSTART, "--set", f'output.root="{tmp_path}"', "--set", "train.strategy=smart_alternating",
                     "--set", "train.args={}", "--set", "train.eval_each_epoch=false")
    _one_line_error(result, "smart_alternating", "eval_each_epoch")
    result = _invoke("finetune", QUICKSTART, "--set", "train.strategy=romebert", "--set", "train.args={gama=0.5}")
    _one_line_error(result, "args.gama", "not an argument of strategy 'romebert'", "gamma")


def test_compare_runs_side_by_side(run_dir, tmp_path):
    result = _invoke("compare", run_dir, run_dir, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    text = (tmp_path / "compare_synthetic_dev.md").read_text()
    assert f"{run_dir.name} (two_stage) |" in text and "(n=" not in text  # the same folder twice counts once
    assert (tmp_path / "compare_synthetic_dev.png").is_file()
    _one_line_error(_invoke("compare", run_dir, "no/such/run"), "not a run folder")
    _one_line_error(_invoke("compare", run_dir, "--time-pct", "50"), "--policy")


def test_seeds_train_one_run_per_seed_and_compare_pools_them(tmp_path):
    sets = _sets(quickstart_overrides(tmp_path, "qs") + ["output.report=false", 'output.evaluate_splits=["dev"]'])
    result = _invoke("finetune", QUICKSTART, *sets, "--seeds", "2")
    assert result.exit_code == 0, result.output
    runs = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert runs == ["qs-seed42", "qs-seed43"]
    import json

    assert [json.loads((tmp_path / r / "recipe.json").read_text())["train"]["seed"] for r in runs] == [42, 43]
    result = _invoke("finetune", QUICKSTART, *sets, "--set", "train.strategy=joint", "--set", "train.args={}",
                     "--set", 'output.run_name="joint"')
    assert result.exit_code == 0, result.output
    out = tmp_path / "tables"
    result = _invoke("compare", tmp_path / "qs-seed42", tmp_path / "qs-seed43", tmp_path / "joint", "--out", out,
                     "--policy", "entropy", "--time-pct", "50", "--at-metric", "60")
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out / "compare_synthetic_dev.csv")
    assert list(frame.columns) == ["row", "qs (two_stage) (n=2)", "joint"]
    rows = frame.set_index("row")
    layer = [json.loads((tmp_path / r / "eval/dev/layerwise.json").read_text())[0]["acc"] for r in runs]
    mean, std = np.mean(layer), np.std(layer, ddof=1)
    assert rows.loc["exit 1", "qs (two_stage) (n=2)"] == f"{mean:.1f} ± {std:.1f}"
    assert "entropy: acc at time% ≤ 50" in rows.index and "entropy: time% for acc ≥ 60" in rows.index
    assert "mean ± std over 1/2 seeds" in (out / "compare_synthetic_dev.md").read_text()
    import shutil

    shutil.copytree(tmp_path / "qs-seed42", tmp_path / "again")  # the same seed twice: repeats, not a spread
    result = _invoke("compare", tmp_path / "qs-seed42", tmp_path / "again", "--out", out)
    assert result.exit_code == 0, result.output
    assert list(pd.read_csv(out / "compare_synthetic_dev.csv").columns) == ["row", "qs-seed42 (two_stage)",
                                                                           "again (two_stage)"]


def test_a_second_writer_of_a_run_gets_one_line_and_changes_nothing(tmp_path):
    from eebench.run.ownership import owned as run_lock

    from eebench.errors import BUSY_EXIT

    with run_lock(tmp_path / "qs"):  # as a finetune still training in another process holds it
        result = _invoke("finetune", QUICKSTART, *_sets(quickstart_overrides(tmp_path)))
        skipped = _invoke("finetune", QUICKSTART, *_sets(quickstart_overrides(tmp_path)), "--if-missing")
    assert result.exit_code == BUSY_EXIT == 3 and f"being written by eebench pid {os.getpid()}" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "qs").exists()
    # a job step: left alone, and the exit code (not the log's wording) tells the launcher so
    assert skipped.exit_code == BUSY_EXIT and "skipped:" in skipped.output


def test_cli_mistakes_get_a_line_that_fixes_them(run_dir, tmp_path):
    """Each natural mistake: one line that shows the right form."""
    from eebench.cli import app

    result = _invoke("finetune", QUICKSTART, tmp_path / "nope.toml", "--set", f'output.root="{tmp_path}"')
    _one_line_error(result, "nope.toml")
    assert not any(tmp_path.iterdir())  # nothing trained before the second recipe was found missing
    _one_line_error(_invoke("finetune", QUICKSTART, "--if-missing", "true"), "take no value")
    _one_line_error(_invoke("finetune", QUICKSTART, "--set", "output.evaluate_splits=dev,test"),
                    'output.evaluate_splits=["dev", "test"]')
    _one_line_error(_invoke("finetune", QUICKSTART, "--set", "train.strategy=deebert"), 'strategy = "two_stage"')
    _one_line_error(_invoke("calibrate", run_dir, "--target-time-pct", "5"), "nothing goes below 16.7", "exit 1")
    _one_line_error(_invoke("calibrate", run_dir, "--policy", "lte", "--target-time-pct", "80"), "train.lte = true")
    version = CliRunner().invoke(app, ["--version"])
    assert version.exit_code == 0 and version.output.startswith("eebench ")
    help_text = CliRunner().invoke(app, ["reproduce", "--help"], terminal_width=200).output
    assert "with a [launcher]" in help_text
    assert "<bool>" not in CliRunner().invoke(app, ["finetune", "--help"], terminal_width=200).output


def test_tables_off_a_terminal_print_every_cell_whole():
    """`eebench recipes --table ... | cat`: the recipe paths and run folders whole, on standard output."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "eebench.cli", "recipes", "--table", "glue-dev", "--cpu"],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    assert "recipes/compare/sst2_self_distill.toml" in done.stdout and "results/cmp_sst2_self_distill" in done.stdout
    assert "…" not in done.stdout


@pytest.mark.parametrize("args, needle", [
    (["finetune"], "error: eebench finetune: Missing argument 'RECIPE...'; see eebench finetune --help"),
    (["calibrate", "x", "--target-time-pct", "x"], "error: eebench calibrate: Invalid value for '--target-time-pct'"),
    (["finetune", "--no-such-flag"], "error: eebench finetune: No such option: --no-such-flag"),
    (["no-such-command"], "error: eebench: No such command 'no-such-command'"),
])
def test_a_usage_mistake_is_one_line(args, needle):
    result = runner.invoke(app, args, prog_name="eebench")
    out = result.output.strip()
    assert result.exit_code == 2 and out.startswith(needle) and len(out.splitlines()) == 1, out


def test_operating_points_and_layerwise_metrics_carry_bootstrap_intervals(run_dir):
    import json

    from eebench.intervals import caption

    point = json.loads((run_dir / "eval/dev/operating_entropy.json").read_text())
    low, high = point["intervals"]["acc"]
    assert low <= point["acc"] <= high and point["bootstrap"]["resamples"] == 1000
    assert point["intervals"]["time_pct"][0] <= point["time_pct"] <= point["intervals"]["time_pct"][1]
    rows = json.loads((run_dir / "eval/dev/layerwise.json").read_text())
    assert all(r["acc_lo"] <= r["acc"] <= r["acc_hi"] for r in rows)
    assert _invoke("report", "--run", run_dir).exit_code == 0
    md = (run_dir / "report/operating_points.md").read_text()
    assert caption(1000) in md and f"{point['acc']:.1f} [{low:.1f}, {high:.1f}]" in md
    assert "acc_lo" in (run_dir / "report/operating_points.csv").read_text().splitlines()[0]
    assert "[" in (run_dir / "report/layerwise.tex").read_text()
    result = _invoke("calibrate", run_dir, "--target-time-pct", "60", "--bootstrap", "0")
    assert result.exit_code == 0, result.output
    again = json.loads((run_dir / "eval/dev/operating_entropy.json").read_text())
    assert again["intervals"] == {} and again["bootstrap"] is None


def test_compare_two_runs_pairwise(run_dir, finished_run, tmp_path):
    """Paired bootstrap on the same examples: a run against itself differs by 0 (not separable); against a
    copy whose every exit is confidently wrong on a third of the examples, the drop is separable."""
    import dataclasses
    import shutil

    from eebench.trace_data import load_trace, save_trace

    same = _invoke("compare", run_dir, finished_run, "--out", tmp_path / "same")
    assert same.exit_code == 0, same.output
    frame = pd.read_csv(tmp_path / "same" / "paired_synthetic_dev.csv")
    first = frame.iloc[0]
    assert first["B - A"] == 0 and first["low"] == 0 and first["high"] == 0 and first["verdict"] == "not separable"
    worse = tmp_path / "worse"
    shutil.copytree(finished_run, worse)
    trace = load_trace(worse / "traces/dev.npz")
    logits = trace.logits.copy()
    hurt = np.flatnonzero(np.arange(len(logits)) % 3 == 0)
    logits[hurt] = 10.0
    logits[hurt, :, trace.labels[hurt]] = -10.0  # every exit confidently wrong on a third of the examples
    save_trace(worse / "traces/dev.npz", dataclasses.replace(trace, logits=logits))
    result = _invoke("compare", run_dir, worse, "--out", tmp_path / "worse_out", "--time-pct", "100")
    assert result.exit_code == 0, result.output
    row = pd.read_csv(tmp_path / "worse_out" / "paired_synthetic_dev.csv").iloc[0]
    assert row["B - A"] < 0 and row["high"] < 0 and row["verdict"] == "separable" and row["p"] < 0.05


def test_calibrate_with_a_guarantee_and_its_transfer_to_test(run_dir):
    import json

    result = _invoke("calibrate", run_dir, "--guarantee", "0.2", "--delta", "0.2")
    assert result.exit_code == 0, result.output
    assert "with probability >= 0.8" in result.output and "time%" in result.output
    cal = json.loads((run_dir / "calibration/entropy.json").read_text())
    g = cal["guarantee"]
    assert g["eps"] == 0.2 and g["delta"] == 0.2 and g["p_value"] <= 0.2 and g["empirical_risk"] <= 0.2
    assert g["n"] == 120 and "Learn-then-Test" in g["method"]
    assert g["point_estimate_time_pct"] is None or g["point_estimate_time_pct"] <= g["time_pct"]
    result = _invoke("evaluate", run_dir, "--split", "test")
    assert result.exit_code == 0, result.output
    point = json.loads((run_dir / "eval/test/operating_entropy.json").read_text())
    assert point["transfer"]["calibrated_on"] == "dev" and "realised_risk" in point["transfer"]["guarantee"]
    assert point["transfer"]["time_pct"]["interval"][0] <= point["transfer"]["time_pct"]["calibration"]
    _one_line_error(_invoke("calibrate", run_dir, "--guarantee", "0.0001", "--delta", "0.01"),
                    "no entropy setting keeps the disagreement")
    _one_line_error(_invoke("calibrate", run_dir, "--guarantee", "0.1", "--target-time-pct", "50"),
                    "give only one of")
