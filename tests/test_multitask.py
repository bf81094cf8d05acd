"""BERTer's multitask pieces: CS224N loaders, pair input modes, cosine pair loss, the shared-backbone
model, collapse warnings, and a multitask run end to end on committed CS224N-format fixtures."""

import json
import re

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import FIXTURES
from eebench.cli import app
from eebench.data.examples import Examples
from eebench.data.load import load_split
from eebench.data.tasks import get_task
from eebench.errors import UserError
from eebench.metrics import collapse
from eebench.recipe import TaskConfig
from eebench.recipe_io import validate_recipe
from eebench.model.similarity import cosine_logits, logits_cosine
from eebench.train.losses import exit_losses

CS224N = FIXTURES / "cs224n"
runner = CliRunner()


def _words() -> list[str]:
    text = " ".join(p.read_text() for p in CS224N.glob("*.csv")).lower()
    return sorted(set(re.findall(r"[a-z]+|[^\sa-z0-9]", text)))


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    from transformers import BertTokenizerFast

    folder = tmp_path_factory.mktemp("tok")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_words()]
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True).save_pretrained(str(folder))
    return folder


# ------------------------------------------------------------------------------------ data
def test_cs224n_files_parse_with_quotes_empty_labels_and_unlabelled_tests():
    quora = get_task("quora").format.read(get_task("quora"), CS224N / "quora-train.csv", "train")
    assert len(quora) == 40  # the row with an empty label is skipped
    assert quora.text_a[3] == 'what does "how is the show fine?" mean?'  # CSV quoting undone
    assert quora.labels.dtype == np.int64 and set(quora.labels) <= {0, 1}
    sts = load_split(get_task("sts"), TaskConfig(name="sts", data_dir=str(CS224N)), "dev")
    assert sts.labels.dtype == np.float32 and sts.labels.max() == 5.0 and sts.text_b is not None
    test = load_split(get_task("sst5"), TaskConfig(name="sst5", data_dir=str(CS224N)), "test")
    assert test.labels is None and len(test) == 10 and test.text_a[0].startswith("the ")


def test_cs224n_wrong_file_names_the_file_and_column():
    with pytest.raises(UserError, match=r"ids-sst-train\.csv: no 'sentence1' column"):
        get_task("quora").format.read(get_task("quora"), CS224N / "ids-sst-train.csv", "train")


def test_embed_then_concat_restarts_positions_and_marks_segments(tokenizer_dir):
    from transformers import AutoTokenizer

    from eebench.data.encode import encode

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    ex = Examples(["0"], ["the film is good ."], ["the plot was bad ."], np.array([1]))
    f = encode(tok, ex, 32, "embed_then_concat", segments=True).features[0]
    a = tok("the film is good .")["input_ids"]
    assert f["input_ids"] == a + tok("the plot was bad .")["input_ids"]
    assert f["position_ids"] == list(range(len(a))) + list(range(len(f["input_ids"]) - len(a)))
    assert set(f["token_type_ids"]) == {0} and f["segment_ids"].count(0) == len(a)
    g = encode(tok, ex, 32, "concat", segments=True).features[0]
    assert "position_ids" not in g and g["segment_ids"] == g["token_type_ids"] and 1 in g["segment_ids"]


# ------------------------------------------------------------------------------------ losses
def test_cosine_pair_loss_is_cosine_embedding_loss():
    cos = torch.tensor([[0.9, -0.2], [0.3, 0.7], [-0.5, 0.1]])  # Shape: [B, L]
    labels = torch.tensor([1, 0, 0])
    logits = cosine_logits(cos)
    assert torch.allclose(logits_cosine(logits), cos, atol=1e-6)
    ours = exit_losses(logits, labels, False, "cosine")
    ref = torch.nn.CosineEmbeddingLoss(margin=0.0, reduction="none")
    for i in range(cos.shape[1]):  # CosineEmbeddingLoss from vectors whose cosine is cos[:, i]
        angle = torch.arccos(cos[:, i])
        u = torch.stack([torch.ones(3), torch.zeros(3)], 1)
        v = torch.stack([torch.cos(angle), torch.sin(angle)], 1)
        expected = ref(u, v, labels * 2 - 1).mean()
        assert torch.isclose(ours[i], expected, atol=1e-5)
    assert (logits.argmax(-1) == (cos > 0.5).long()).all()


def test_collapse_flags_one_class_and_constant_regression():
    labels = np.array([0, 1, 0, 1, 1, 0, 0, 1])
    logits = np.zeros((8, 2, 2), dtype=np.float32)
    logits[:, 0, 0] = 1.0  # exit 1: always class 0
    logits[:, 1, 1] = labels  # exit 2: follows the labels
    found = collapse(logits, labels, regression=False)
    assert [w["layer"] for w in found] == [1] and found[0]["class"] == 0 and found[0]["share"] == 1.0
    assert collapse(logits, np.zeros(8, dtype=np.int64), regression=False) == []  # labels one-sided too
    reg = np.ones((8, 1, 1), dtype=np.float32)
    assert collapse(reg, labels.astype(np.float32), regression=True)[0]["layer"] == 1


# ------------------------------------------------------------------------------------ model
def test_multitask_model_shares_the_backbone_and_round_trips(tiny_bert_config, tmp_path, tokenizer_dir):
    from transformers import AutoTokenizer, BertConfig, BertModel

    from eebench.model.build import load_model, save_model
    from eebench.model.multiexit import MultiTaskModel

    torch.manual_seed(0)
    config = BertConfig(**{**tiny_bert_config, "vocab_size": 512})
    tasks = {"sst5": {"num_labels": 5}, "sts": {"num_labels": 1, "lte": True},
             "quora": {"num_labels": 2, "pair_cosine": True}}
    model = MultiTaskModel(BertModel(config), tasks).eval()
    assert model.task("sst5").backbone is model.task("sts").backbone
    names = list(model.state_dict())
    assert sum(n.startswith("backbone.embeddings.word_embeddings") for n in names) == 1
    assert model.task("sts").lte is not None and model.task("sst5").lte is None
    batch = {"input_ids": torch.tensor([[2, 7, 8, 3, 9, 10, 3]]), "attention_mask": torch.ones(1, 7, dtype=torch.long),
             "segment_ids": torch.tensor([[0, 0, 0, 0, 1, 1, 1]])}
    out = {t: model.task(t)(**batch) for t in tasks}
    assert out["sst5"].logits.shape == (1, 3, 5) and out["sts"].logits.shape == (1, 3, 1)
    assert out["quora"].logits.shape == (1, 3, 2)
    save_model(model, AutoTokenizer.from_pretrained(str(tokenizer_dir)), tmp_path / "m", {"task": "all"})
    view, _, meta = load_model(tmp_path / "m", "quora")
    assert meta["tasks"]["quora"]["pair_cosine"] is True
    assert torch.allclose(view(**batch).logits, out["quora"].logits, atol=1e-6)
    with pytest.raises(UserError, match="not 'cola'"):
        load_model(tmp_path / "m", "cola")


# ------------------------------------------------------------------------------------ recipes and runs
def _recipe(tmp_path, tokenizer_dir, strategy_lines: str, quora_extra: str = "") -> str:
    text = f"""
description = "multitask test"
[model]
source = "random"
name = "bert"
tokenizer = "{tokenizer_dir}"
config = {{ hidden_size = 32, num_hidden_layers = 3, num_attention_heads = 2, intermediate_size = 64, max_position_embeddings = 64, vocab_size = 512 }}
exit_pooling = "mean"
pair_input = "embed_then_concat"
[[tasks]]
name = "sst5"
data_dir = "{CS224N}"
[[tasks]]
name = "quora"
data_dir = "{CS224N}"
{quora_extra}
[[tasks]]
name = "sts"
data_dir = "{CS224N}"
[train]
{strategy_lines}
epochs = 2
lr = 1e-3
batch_size = 8
max_length = 32
[exit]
policy = "max_prob"
[output]
root = "{tmp_path}"
run_name = "mt"
report = false
"""
    path = tmp_path / "mt.toml"
    path.write_text(text)
    return str(path)


def test_multitask_run_end_to_end(tmp_path, tokenizer_dir):
    recipe = _recipe(tmp_path, tokenizer_dir, 'strategy = "slf"\nargs = { refine = "smart_alternating" }\nlte = true',
                     'pair_loss = "cosine"\nsmart = { enabled = true }')
    result = runner.invoke(app, ["finetune", recipe])
    assert result.exit_code == 0, result.output
    run = tmp_path / "mt"
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["train_seconds"] > 0
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    summaries = [r["epoch_summary"] for r in log if "epoch_summary" in r]
    # SLF: one focus stage per layer, then the refine stage; dev metrics per task every epoch
    assert [s["stage"] for s in summaries] == ["focus1", "focus2", "focus3", "refine+lte", "refine+lte"]
    assert set(summaries[-1]["tasks"]) == {"sst5", "quora", "sts"}
    assert {r.get("task") for r in log if "step" in r} >= {"sst5", "quora", "sts"}
    assert any("loss_smart" in r for r in log if r.get("task") == "quora")
    assert not any("loss_smart" in r for r in log if r.get("task") == "sst5")
    for task in ("sst5", "quora", "sts"):
        sub = run / "tasks" / task
        assert json.loads((sub / "status.json").read_text())["state"] == "finished"
        rows = json.loads((sub / "eval/dev/layerwise.json").read_text())
        assert len(rows) == 3
        assert (sub / "eval/dev/warnings.json").is_file()
    sts_recipe = json.loads((run / "tasks/sts/recipe.json").read_text())
    assert sts_recipe["exit"]["policy"] == "lte" and sts_recipe["task"]["name"] == "sts"
    assert (run / "tasks/sts/eval/dev/sweep_lte.csv").is_file()
    # a task's folder is a run of its own: re-evaluating reuses the stored trace
    again = runner.invoke(app, ["evaluate", str(run / "tasks" / "quora"), "--split", "dev"])
    assert again.exit_code == 0, again.output
    # the parent folder says where its tasks are
    parent = runner.invoke(app, ["evaluate", str(run), "--split", "dev"])
    assert parent.exit_code == 2 and "tasks/sst5" in parent.output
    _check_table(tmp_path, status["train_seconds"])


def _check_table(tmp_path, train_seconds):
    """BERTer's Table 2 spec over this run: one multitask run fills a row, STS exits by LTE, the dev
    score is recomputed from our three cells, the training time is the run's."""
    from eebench.report import tables

    method = "SLF + Smart Alt + Early Exit"
    spec = tables.load_spec("berter-multitask").model_copy(update={
        "methods": {method: "mt"}, "recipes": {"cpu": f"{tmp_path.as_posix()}/{{method}}.toml"}})
    frame = tables.measure(spec, sets=("cpu",))
    row = frame[frame["method"] == method].set_index("task")
    assert row.loc[["SST-5", "Quora", "STS", "Dev Score"], "ours"].notna().all()
    assert row.loc["STS", "policy"] == "lte" and row.loc["SST-5", "policy"] == "max_prob"
    assert row.loc["STS", "run"].endswith("tasks/sts")
    parts = row.loc[["SST-5", "Quora", "STS"], "ours"]
    assert row.loc["Dev Score", "ours"] == pytest.approx((parts["SST-5"] + parts["Quora"] + (parts["STS"] + 1) / 2) / 3)
    assert 0 <= parts["SST-5"] <= 1  # fractions, as BERTer prints them
    shown = tables.display(spec, frame).set_index("method")
    assert shown.loc[method, "train time"].startswith(tables.clock(train_seconds))
    assert "% time" in shown.loc[method, "SST-5 acc"]
    assert frame[frame["method"] == "Baseline"]["ours"].isna().all()  # rows not run keep the paper's number


def test_collapsed_paraphrase_predictions_are_reported(tmp_path, tokenizer_dir):
    # A head-only run on a frozen random encoder with a lr of 0 predicts one class for every pair.
    recipe = _recipe(tmp_path, tokenizer_dir, 'strategy = "head_only"')
    text = open(recipe).read().replace("lr = 1e-3", "lr = 1e-12").replace("epochs = 2", "epochs = 1")
    open(recipe, "w").write(text)
    result = runner.invoke(app, ["finetune", recipe])
    assert result.exit_code == 0, result.output
    warnings = json.loads((tmp_path / "mt/tasks/quora/eval/dev/warnings.json").read_text())
    assert warnings and warnings[-1]["layer"] == 3 and warnings[-1]["share"] >= 0.99
    assert warnings[-1]["label_share"] < 0.99  # the dev labels are mixed: the model, not the data, collapsed
    assert "predictions collapsed" in result.output


def test_a_per_task_learning_rate_is_refused_before_training(tmp_path, tokenizer_dir):
    """One optimizer per stage serves every task: a task's own stage2_lr would be ignored, so it is refused."""
    recipe = _recipe(tmp_path, tokenizer_dir, 'strategy = "two_stage"', 'args = { stage2_lr = 5e-3 }')
    result = runner.invoke(app, ["finetune", recipe])
    assert result.exit_code == 2, result.output
    assert "stage stage2 of task quora has lr 0.005, of task sst5 0.001" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "mt").exists()
    same = _recipe(tmp_path, tokenizer_dir, 'strategy = "two_stage"\nargs = { stage2_lr = 5e-3 }',
                   'args = { stage2_lr = 5e-3 }')
    from eebench.recipe_io import load_recipe

    assert load_recipe(same, []).tasks[1].args == {"stage2_lr": 5e-3}  # the same lr everywhere is fine


def test_multitask_recipe_errors_are_one_line(tmp_path, tokenizer_dir):
    recipe = _recipe(tmp_path, tokenizer_dir, 'strategy = "joint"', 'strategy = "two_stage"')
    result = runner.invoke(app, ["finetune", recipe])
    assert result.exit_code == 2 and "lockstep" in result.output and "Traceback" not in result.output
    with pytest.raises(UserError, match="either \\[task\\]"):
        validate_recipe({"task": {"name": "sst2"}, "tasks": [{"name": "sst5"}]}, "r.toml")
    with pytest.raises(UserError, match="tasks.0 \\(sst5\\)"):
        validate_recipe({"tasks": [{"name": "sst5", "strategy": "nope"}]}, "r.toml")
    assert not (tmp_path / "mt").exists()  # nothing written for a recipe that cannot run
    bad = _recipe(tmp_path, tokenizer_dir, 'strategy = "joint"')
    text = open(bad).read().replace('name = "sst5"\n', 'name = "sst5"\npair_loss = "cosine"\n')
    open(bad, "w").write(text)
    result = runner.invoke(app, ["finetune", bad])
    assert result.exit_code == 2 and "binary sentence-pair" in result.output
