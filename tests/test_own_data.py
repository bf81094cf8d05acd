"""A data set of one's own, declared in the recipe's [task] (no code): csv / tsv / jsonl files read by
`datasets`' builders, the hub path checked with a fake `load_dataset`; every mistake one line, exit 2."""

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from eebench.cli import app
from eebench.data.load import load_split
from eebench.data.synthetic import build_tokenizer
from eebench.data.tasks import task_spec
from eebench.recipe import TaskConfig

POS, NEG = ["great", "good", "happy", "best"], ["bad", "awful", "sad", "worst"]


def _rows(n: int, seed: int):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        good = bool(rng.random() < 0.5)
        words = rng.choice(POS if good else NEG, 3)
        yield {"body": " ".join(["the", "movie"] + list(words)), "verdict": "good" if good else "bad"}


def _write(folder, kind: str, sizes=(("train", 120), ("dev", 40), ("test", 30))):
    folder.mkdir(parents=True, exist_ok=True)
    for i, (split, n) in enumerate(sizes):
        rows = list(_rows(n, i))
        path = folder / f"{split}.{kind}"
        if kind == "jsonl":
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        else:
            with open(path, "w", newline="") as f:
                writer = csv.DictWriter(f, ["body", "verdict"], delimiter="\t" if kind == "tsv" else ",")
                writer.writeheader()
                writer.writerows(rows)
    return folder


def _recipe(tmp_path, kind: str, data, extra: str = "") -> str:
    build_tokenizer(tmp_path / "tok")  # a small WordPiece tokenizer (the generated task's vocabulary)
    path = tmp_path / "own.toml"
    path.write_text(f"""[model]
source = "random"
name = "bert"
tokenizer = "{tmp_path / 'tok'}"
config = {{ hidden_size = 32, num_hidden_layers = 2, num_attention_heads = 2, intermediate_size = 64, vocab_size = 64, max_position_embeddings = 64 }}

[task]
name = "reviews"
format = "{kind}"
data_dir = "{data}"
text = "body"
label = "verdict"
labels = ["bad", "good"]
metrics = ["acc", "f1"]
files = {{ train = "train.{kind}", dev = "dev.{kind}", test = "test.{kind}" }}
{extra}
[train]
strategy = "joint"
epochs = 1
lr = 1e-3
batch_size = 16
max_length = 16

[exit]
policy = "entropy"
target_time_pct = 60

[output]
root = "{tmp_path / 'runs'}"
run_name = "own"
evaluate_splits = ["dev", "test"]
report = false
""")
    return str(path)


@pytest.mark.parametrize("kind", ["csv", "tsv", "jsonl"])
def test_own_files_read_with_their_labels(tmp_path, kind):
    data = _write(tmp_path / "data", kind)
    cfg = TaskConfig(name="reviews", format=kind, data_dir=str(data), text="body", label="verdict",
                     labels=["bad", "good"])
    spec = task_spec(cfg)
    dev = load_split(spec, cfg, "dev")
    want = [r["verdict"] == "good" for r in _rows(40, 1)]
    assert len(dev) == 40 and dev.labels.tolist() == [int(w) for w in want]
    assert dev.text_a[0] == next(_rows(1, 1))["body"] and dev.text_b is None
    assert spec.metrics == ("acc",) and spec.num_labels == 2


def test_own_csv_trains_calibrates_and_evaluates(tmp_path):
    data = _write(tmp_path / "data", "csv")
    result = CliRunner().invoke(app, ["finetune", _recipe(tmp_path, "csv", data)])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "own"
    point = json.loads((run / "eval/test/operating_entropy.json").read_text())
    assert {"acc", "f1"} <= set(point) and (run / "calibration/entropy.json").is_file()


@pytest.mark.parametrize("change, message", [
    (lambda d: (d / "dev.csv").write_text((d / "dev.csv").read_text().replace(",verdict", ",stars")),
     "dev.csv: no 'verdict' field (found body, stars); set task.label"),
    (lambda d: (d / "train.csv").write_text((d / "train.csv").read_text().replace(",good", ",excellent", 1)),
     "label 'excellent' is not one of bad, good"),
    (lambda d: (d / "test.csv").write_text("body,verdict\n"), "test.csv: no examples"),
    (lambda d: (d / "test.csv").write_text(""), "test.csv: empty file"),
])
def test_a_mistake_in_own_data_is_one_line_before_training(tmp_path, change, message):
    data = _write(tmp_path / "data", "csv")
    change(data)
    result = CliRunner().invoke(app, ["finetune", _recipe(tmp_path, "csv", data)])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "runs" / "own").exists()


@pytest.mark.parametrize("extra, message", [
    ('regression = true', "task.labels: list the class names in id order"),
    ('metrics = ["accuracy"]', "unknown metric 'accuracy'"),
])
def test_a_mistake_in_the_task_declaration_names_the_key(tmp_path, extra, message):
    data = _write(tmp_path / "data", "csv")
    text = _recipe(tmp_path, "csv", data, extra)
    if extra.startswith("metrics"):
        text_path = tmp_path / "own.toml"
        text_path.write_text(text_path.read_text().replace('metrics = ["acc", "f1"]\n', ""))
    result = CliRunner().invoke(app, ["finetune", text])
    assert result.exit_code == 2 and message in result.output, result.output


def test_own_hub_data_set_maps_its_fields_and_split_names(monkeypatch):
    import datasets

    def fake_load(path, config=None, split=None, **kw):
        assert (path, config) == ("someone/reviews", "en")
        rows = {"validation": [("fine film", "pos"), ("dull film", "neg")], "train": [("good", "pos")]}[split]
        return datasets.Dataset.from_dict({"review": [r[0] for r in rows], "sentiment": [r[1] for r in rows]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    cfg = TaskConfig(name="reviews", format="hub", hub="someone/reviews", hub_config="en", text="review",
                     label="sentiment", labels=["neg", "pos"])
    dev = load_split(task_spec(cfg), cfg, "dev")
    assert dev.text_a == ["fine film", "dull film"] and dev.labels.tolist() == [1, 0]
    bad = TaskConfig(name="reviews", format="hub", hub="someone/reviews", hub_config="en", text="review",
                     label="sentiment", labels=["negative", "positive"])
    from eebench.errors import UserError

    with pytest.raises(UserError, match="label 'pos' is not in task.labels"):
        load_split(task_spec(bad), bad, "dev")
