import numpy as np
import pytest

from eebench.data.load import load_split
from eebench.data.tasks import get_task
from eebench.errors import UserError
from eebench.recipe import TaskConfig


def _folder(tmp_path, name, files):
    d = tmp_path / name
    d.mkdir()
    for fname, text in files.items():
        (d / fname).write_text(text)
    return d


def test_mrpc_format(tmp_path):
    d = _folder(tmp_path, "MRPC", {"dev.tsv": "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
                                              "1\t1\t2\tHe said \"yes\".\tHe agreed.\n0\t3\t4\tA\tB\n"})
    ex = load_split(get_task("mrpc"), TaskConfig(name="mrpc", data_dir=str(d)), "dev")
    assert ex.text_a == ['He said "yes".', "A"] and ex.text_b == ["He agreed.", "B"]
    assert ex.labels.tolist() == [1, 0]


def test_stsb_is_regression(tmp_path):
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    d = _folder(tmp_path, "STS-B", {"dev.tsv": header + "0\tg\tf\t2012\t1\tnone\tnone\tA man.\tA guy.\t4.2\n"})
    ex = load_split(get_task("sts-b"), TaskConfig(name="stsb", data_dir=str(d)), "dev")
    assert ex.labels.dtype == np.float32 and ex.labels.tolist() == pytest.approx([4.2])


def test_mnli_string_labels_follow_hub_order(tmp_path):
    cols = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
            "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label"]
    rows = ["\t".join(["0", "1", "1", "g", "x", "x", "x", "x", "P", "H", lab, lab]) for lab in
            ("entailment", "neutral", "contradiction")]
    d = _folder(tmp_path, "MNLI", {"dev_matched.tsv": "\t".join(cols) + "\n" + "\n".join(rows) + "\n"})
    ex = load_split(get_task("mnli"), TaskConfig(name="mnli", data_dir=str(d)), "dev_matched")
    assert ex.labels.tolist() == [0, 1, 2]


def test_cola_headerless_and_qqp_malformed_row(tmp_path):
    d = _folder(tmp_path, "CoLA", {"train.tsv": "gj04\t1\t\tOur friends won't buy this.\n"
                                                "gj04\t0\t*\tThey drank the pub.\n"})
    ex = load_split(get_task("cola"), TaskConfig(name="cola", data_dir=str(d)), "train")
    assert ex.labels.tolist() == [1, 0] and ex.text_a[1] == "They drank the pub."
    q = _folder(tmp_path, "QQP", {"train_subset.tsv": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
                                                      "1\t1\t2\tq1\tq2 0\n2\t3\t4\tq3\tq4\t1\n"})
    cfg = TaskConfig(name="qqp", data_dir=str(q), files={"train": "train_subset.tsv"})
    ex = load_split(get_task("qqp"), cfg, "train")
    assert ex.text_a == ["q3"] and ex.labels.tolist() == [1]  # 5-field row skipped like GLUE's processor


def test_dev_from_train_and_subsets_are_disjoint_and_seeded(tmp_path):
    lines = "".join(f"s{i}\t{i % 2}\n" for i in range(50))
    d = _folder(tmp_path, "SST-2", {"train.tsv": "sentence\tlabel\n" + lines})
    cfg = TaskConfig(name="sst2", data_dir=str(d), dev_from_train=10, train_subset=20)
    train, dev = load_split(get_task("sst2"), cfg, "train"), load_split(get_task("sst2"), cfg, "dev")
    assert len(train) == 20 and len(dev) == 10
    assert not set(train.text_a) & set(dev.text_a)
    assert load_split(get_task("sst2"), cfg, "train").text_a == train.text_a


def test_errors_name_the_file_and_fix(tmp_path):
    spec = get_task("sst2")
    with pytest.raises(UserError, match="is not a folder"):
        load_split(spec, TaskConfig(data_dir=str(tmp_path / "nope")), "dev")
    d = _folder(tmp_path, "SST-2", {"dev.tsv": "text\tlabel\nfine\t1\n", "train.tsv": "sentence\tlabel\nx\t7\n"})
    with pytest.raises(UserError, match="no 'sentence' column"):
        load_split(spec, TaskConfig(data_dir=str(d)), "dev")
    with pytest.raises(UserError, match=r"train.tsv:2: label '7'"):
        load_split(spec, TaskConfig(data_dir=str(d)), "train")
    with pytest.raises(UserError, match="test.tsv not found"):
        load_split(spec, TaskConfig(data_dir=str(d)), "test")
    with pytest.raises(UserError, match="has no split 'validation'"):
        load_split(spec, TaskConfig(data_dir=str(d)), "validation")
    with pytest.raises(UserError, match="unknown task"):
        get_task("imagenet")


def test_unreachable_hub_is_a_user_error(monkeypatch):
    import datasets

    def offline(*a, **k):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UserError, match=r"could not load nyu-mll/glue/rte split 'validation' \(eebench's 'dev'\) from the hub.*--data-root DIR.*task.data_dir"):
        load_split(get_task("rte"), TaskConfig(name="rte"), "dev")


def test_test_split_without_labels(tmp_path):
    d = _folder(tmp_path, "SST-2", {"test.tsv": "index\tsentence\n0\tgreat\n1\tbad\n"})
    ex = get_task("sst2").format.read(get_task("sst2"), d / "test.tsv", "test")
    assert ex.labels is None and ex.text_a == ["great", "bad"]


def test_data_root_is_searched_before_the_hub(tmp_path, monkeypatch):
    from eebench.errors import MissingData

    (tmp_path / "glue" / "SST-2").mkdir(parents=True)
    (tmp_path / "glue" / "SST-2" / "dev.tsv").write_text("sentence\tlabel\ngood film\t1\nbad film\t0\n")
    monkeypatch.setenv("EEBENCH_DATA", str(tmp_path))
    ex = load_split(get_task("sst2"), TaskConfig(name="sst2"), "dev")
    assert list(ex.labels) == [1, 0]
    with pytest.raises(MissingData) as err:  # RTE is under neither the data root nor (offline) the hub
        load_split(get_task("rte"), TaskConfig(name="rte"), "dev")
    text = str(err.value)
    assert str(tmp_path / "RTE") in text and str(tmp_path / "glue" / "RTE") in text and "hub" in text


def test_tokenized_splits_are_cached_in_arrow_and_equal_to_lists(tmp_path, monkeypatch):
    import eebench.data.encode as enc
    from eebench.data.synthetic import build_tokenizer, generate
    from eebench.recipe import SyntheticConfig

    monkeypatch.setenv("EEBENCH_CACHE", str(tmp_path / "cache"))
    tokenizer = build_tokenizer(tmp_path)
    examples = generate(SyntheticConfig(n_dev=300), "dev")
    first = enc.encode(tokenizer, examples, 32)
    lists = enc.encode_in_memory(tokenizer, examples, 32)
    assert isinstance(first.features, enc.ArrowRows) and len(first) == len(lists) == 300
    assert [first.features[i] for i in range(300)] == list(lists.features)
    assert (first.lengths() == lists.lengths()).all()
    index = [5, 0, 299]
    a, b = first.collate(first.__getitems__(index)), lists.collate(lists.__getitems__(index))
    assert all((a[k] == b[k]).all() for k in b)
    assert len(list((tmp_path / "cache" / "tokenized").glob("*.arrow"))) == 1

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(enc, "_encode_rows", no_tokenizing)
    again = enc.encode(tokenizer, examples, 32)  # same tokenizer, examples, settings: from the cache
    assert again.features[7] == lists.features[7]
    with pytest.raises(AssertionError, match="tokenized again"):
        enc.encode(tokenizer, examples, 16)  # another max_length: another key
