"""Data formats (eebench.data.formats): ELUE TSVs, labelled files read as labelled, hub label handling."""

from pathlib import Path

import numpy as np
import pytest

from eebench.data.load import load_split
from eebench.data.tasks import TASKS, get_task
from eebench.errors import UserError
from eebench.recipe import TaskConfig

ELUE = Path(__file__).resolve().parents[2] / "shared" / "data" / "elue"
BOM = "\ufeff"


def _folder(tmp_path, name, files, crlf=False):
    d = tmp_path / name
    d.mkdir(parents=True)
    for fname, text in files.items():
        (d / fname).write_bytes(text.replace("\n", "\r\n" if crlf else "\n").encode("utf-8"))
    return d


MRPC_HEADER = "#1 ID\t#2 ID\t#1 String\t#2 String"


def _elue_mrpc(tmp_path):
    """ELUE's MRPC files as ELUE ships them: GLUE MRPC's columns (dev.tsv headed ``Quality``, test_full.tsv
    headed ``label``, test.tsv headed ``index``); a quoted field is kept as written."""
    return _folder(tmp_path, "MRPC", {
        "train.tsv": BOM + f"Quality\t{MRPC_HEADER}\n1\t702876\t702977\tA man.\tA guy.\n0\t11\t12\tA cat.\tA dog.\n",
        "dev.tsv": f"Quality\t{MRPC_HEADER}\n1\t1355540\t1355592\tIt rains.\tRain \"\"u2\"\" falls.\n",
        "test.tsv": f"index\t{MRPC_HEADER}\n0\t1089874\t1089925\tX.\tY.\n1\t3019446\t3019327\tP.\tQ.\n",
        "test_full.tsv": f"label\t{MRPC_HEADER}\n0\t1089874\t1089925\tX.\tY.\n1\t3019446\t3019327\tP.\tQ.\n",
    }, crlf=True)


def test_elue_mrpc_reads_elues_real_headers_by_position(tmp_path):
    d = _elue_mrpc(tmp_path)
    spec = get_task("elue_mrpc")
    cfg = TaskConfig(name="elue_mrpc", data_dir=str(d))
    train = load_split(spec, cfg, "train")
    assert train.text_a == ["A man.", "A cat."] and train.text_b == ["A guy.", "A dog."]  # BOM, CRLF stripped
    assert train.labels.tolist() == [1, 0]
    dev = load_split(spec, cfg, "dev")  # headed Quality, #1 ID, ...: label in column 1, sentences in 4 and 5
    assert dev.labels.tolist() == [1] and dev.text_b == ['Rain ""u2"" falls.']  # quotes kept, as ELUE's reader
    test = load_split(spec, cfg, "test")  # test_full.tsv, headed label, #1 ID, ...
    assert test.labels.tolist() == [0, 1] and test.text_a == ["X.", "P."] and test.text_b == ["Y.", "Q."]
    (d / "test_full.tsv").unlink()  # only ELUE's unlabelled test.tsv: its index column names the rows
    test = load_split(spec, cfg, "test")
    assert test.labels is None and test.ids == ["0", "1"] and test.text_b == ["Y.", "Q."]


@pytest.mark.parametrize("task, folder, files, labelled, unlabelled", [
    ("elue_sst2", "SST-2", {"dev.tsv": "sentence\tlabel\ngood .\t1\n", "test.tsv": "index\tsentence\n7\tbad .\n"},
     ("good .", None, 1), ("bad .", None, "7")),
    ("elue_imdb", "IMDb", {"dev.tsv": "sentence\tlabel\nA fine film.\t1\n", "test.tsv": "index\tsentence\n3\tDull.\n"},
     ("A fine film.", None, 1), ("Dull.", None, "3")),
    ("elue_snli", "SNLI", {"dev.tsv": BOM + "premise\thypothesis\tlabel\nP .\tH .\t2\n",
                           "test.tsv": BOM + "index\tpremise\thypothesis\n0\tQ .\tG .\n"}, ("P .", "H .", 2), ("Q .", "G .", "0")),
    ("elue_scitail", "SciTail", {"dev.tsv": "premise\thypothesis\tlabel\nP.\tH.\t1\n",
                                 "test.tsv": "index\tpremise\thypothesis\n5\tQ.\tG.\n"}, ("P.", "H.", 1), ("Q.", "G.", "5")),
    ("elue_stsb", "STS-B", {"dev.tsv": "sentence1\tsentence2\tlabel\nA.\tB.\t3.8\n",
                            "test.tsv": "index\tsentence1\tsentence2\n0\tC.\tD.\n"}, ("A.", "B.", 3.8), ("C.", "D.", "0")),
])
def test_every_elue_task_reads_its_columns_where_elues_processor_does(tmp_path, task, folder, files, labelled,
                                                                      unlabelled):
    """Positions of fastnlp/ElasticBERT's elue/elue.py processors: labelled files and the unlabelled test.tsv."""
    d = _folder(tmp_path, folder, files, crlf=True)
    cfg = TaskConfig(name=task, data_dir=str(d))
    dev, test = load_split(get_task(task), cfg, "dev"), load_split(get_task(task), cfg, "test")
    assert (dev.text_a[0], dev.text_b[0] if dev.text_b else None) == labelled[:2]
    assert dev.labels.tolist() == pytest.approx([labelled[2]])
    assert (test.text_a[0], test.text_b[0] if test.text_b else None, test.ids[0]) == unlabelled and test.labels is None


def test_an_elue_file_with_too_few_columns_names_the_layout(tmp_path):
    d = _folder(tmp_path, "MRPC", {"dev.tsv": "sentence1\tsentence2\tlabel\nA.\tB.\t1\n"})
    with pytest.raises(UserError, match=r"dev.tsv: 3 columns in the header line .* at least 5 \(text in column 4 "
                                        r"and 5, label in column 1\); is this the ELUE MRPC file\?"):
        load_split(get_task("elue_mrpc"), TaskConfig(name="elue_mrpc", data_dir=str(d)), "dev")


def test_the_hubs_imdb_gets_a_fixed_5000_dev_split_from_its_train(monkeypatch):
    """ELUE's IMDb is 20,000 / 5,000 / 25,000; the hub has train / test only: dev is held out of train."""
    import datasets

    from eebench.data.load import load_from_hub

    n = 25_000
    hub = {"train": {"text": [f"review {i}" for i in range(n)], "label": [i % 2 for i in range(n)]},
           "test": {"text": ["t"] * 10, "label": [0] * 10}}
    monkeypatch.setattr(datasets, "load_dataset", lambda path, name=None, split=None: _FakeHub(hub[split]))
    spec = get_task("elue_imdb")
    dev, train = load_from_hub(spec, "dev"), load_from_hub(spec, "train")
    assert (len(dev), len(train)) == (5000, 20000) and not set(dev.text_a) & set(train.text_a)
    assert load_from_hub(spec, "dev").text_a == dev.text_a  # fixed: the same split every time
    assert "held-out 5000 dev examples, seed 0" in dev.source and len(load_from_hub(spec, "test")) == 10


def test_a_file_with_a_label_column_is_never_read_as_unlabelled(tmp_path):
    """GLUE MRPC / STS-B pointed at ELUE's copies (label column `label`, not Quality / score)."""
    d = _folder(tmp_path, "MRPC", {"dev.tsv": "label\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tA.\tB.\n0\t3\t4\tC\tD\n"})
    dev = load_split(get_task("mrpc"), TaskConfig(name="mrpc", data_dir=str(d)), "dev")
    assert dev.labels.tolist() == [1, 0]
    s = _folder(tmp_path, "STS-B", {"dev.tsv": "sentence1\tsentence2\tlabel\nA man.\tA guy.\t4.2\nA.\tB.\t0.5\n"})
    for task in ("stsb", "elue_stsb"):
        dev = load_split(get_task(task), TaskConfig(name=task, data_dir=str(s)), "dev")
        assert dev.labels.dtype == np.float32 and dev.labels.tolist() == pytest.approx([4.2, 0.5])


@pytest.mark.parametrize("task, folder, fname, text", [
    ("elue_mrpc", "MRPC", "dev.tsv", f"index\t{MRPC_HEADER}\n0\t1\t2\tA.\tB.\n"),
    ("elue_mrpc", "MRPC", "test_full.tsv", f"index\t{MRPC_HEADER}\n0\t1\t2\tA.\tB.\n"),
    ("mrpc", "MRPC", "dev.tsv", "#1 ID\t#2 ID\t#1 String\t#2 String\n1\t2\tA.\tB.\n"),
    ("sst5", "cs224n", "ids-sst-dev.csv", "\tid\tsentence\nx\t1\tgood\n"),
])
def test_a_split_that_must_be_labelled_and_is_not_is_one_line(tmp_path, task, folder, fname, text):
    d = _folder(tmp_path, folder, {fname: text})
    split = "test" if fname == "test_full.tsv" else "dev"
    with pytest.raises(UserError) as err:
        load_split(get_task(task), TaskConfig(name=task, data_dir=str(d)), split)
    msg = str(err.value)
    assert msg.startswith(str(d / fname)) and "must be labelled" in msg and "\n" not in msg


def test_elue_row_with_a_missing_field_names_its_line(tmp_path):
    d = _folder(tmp_path, "SST-2", {"dev.tsv": "sentence\tlabel\ngood .\t1\nbad .\n"})
    with pytest.raises(UserError, match=r"dev.tsv:3: 1 tab-separated fields, the header has 2"):
        load_split(get_task("elue_sst2"), TaskConfig(name="elue_sst2", data_dir=str(d)), "dev")


def test_elue_tasks_are_found_under_the_data_root(tmp_path, monkeypatch):
    _folder(tmp_path / "elue", "SciTail", {"dev.tsv": "premise\thypothesis\tlabel\nP.\tH.\t1\nQ.\tG.\t0\n"})
    monkeypatch.setenv("EEBENCH_DATA", str(tmp_path))
    dev = load_split(get_task("elue_scitail"), TaskConfig(name="elue_scitail"), "dev")
    assert dev.labels.tolist() == [1, 0] and get_task("elue_scitail").labels[1] == "entails"


class _FakeHub:
    def __init__(self, columns):
        self.columns = columns

    def __getitem__(self, key):
        return self.columns[key]

    def __len__(self):
        return len(self.columns["label"])


def test_hub_drops_snli_pairs_without_gold_label_and_maps_label_names(monkeypatch):
    import datasets

    from eebench.data.load import load_from_hub

    hub = {("stanfordnlp/snli", None): {"premise": ["a", "b", "c"], "hypothesis": ["x", "y", "z"], "label": [0, -1, 2]},
           ("allenai/scitail", "tsv_format"): {"premise": ["a", "b"], "hypothesis": ["x", "y"],
                                                "label": ["entails", "neutral"]}}
    monkeypatch.setattr(datasets, "load_dataset", lambda path, name=None, split=None: _FakeHub(hub[(path, name)]))
    snli = load_from_hub(get_task("elue_snli"), "dev")
    assert snli.text_a == ["a", "c"] and snli.labels.tolist() == [0, 2]
    scitail = load_from_hub(get_task("elue_scitail"), "dev")
    assert scitail.labels.tolist() == [1, 0]


def test_hub_without_a_config_is_a_one_line_missing_data_error(monkeypatch):
    import datasets

    from eebench.data.load import load_from_hub
    from eebench.errors import MissingData

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'stanfordnlp/snli' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(MissingData, match=r"could not load stanfordnlp/snli split 'train' from the hub"):
        load_from_hub(get_task("elue_snli"), "train")


def test_every_task_names_a_format_and_its_files():
    for spec in TASKS.values():
        if spec.name == "synthetic":
            continue
        assert spec.format.file_name("train") and spec.format.family in ("glue", "elue", "cs224n")


@pytest.mark.skipif(not (ELUE / "SST-2" / "train.tsv").is_file(), reason=f"ELUE data not found at {ELUE}")
def test_real_elue_files(monkeypatch):
    monkeypatch.setenv("EEBENCH_DATA", str(ELUE.parent))
    counts = {split: load_split(get_task("elue_sst2"), TaskConfig(name="elue_sst2"), split) for split in
              ("train", "dev", "test")}
    assert {s: len(e) for s, e in counts.items()} == {"train": 8544, "dev": 1101, "test": 2210}
    assert counts["test"].labels is not None and int(counts["test"].labels.sum()) == 1067
    snli = load_split(get_task("elue_snli"), TaskConfig(name="elue_snli"), "dev")  # BOM + CRLF
    assert len(snli) == 9842 and np.bincount(snli.labels).tolist() == [3329, 3235, 3278]
    scitail = load_split(get_task("elue_scitail"), TaskConfig(name="elue_scitail"), "test")
    assert len(scitail) == 2126 and int(scitail.labels.sum()) == 842


_GLUE_MRPC = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n" + "".join(
    f"{i % 2}\t{i}\t{i + 100}\tsentence a {i}\tsentence b {i}\n" for i in range(6))
_GLUE_STSB = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n" + "".join(
    f"{i}\tmain\tf\t2012\t{i}\tnone\tnone\ta {i}\tb {i}\t{i % 5}.25\n" for i in range(6))
_CS224N_STS = "\tid\tsentence1\tsentence2\tsimilarity\n" + "".join(
    f"{i}\tid{i}\tthe first {i}\tthe second {i}\t{i % 5}.25\n" for i in range(6))


def _damaged(text: str, how: str) -> str:
    lines = text.splitlines(keepends=True)
    if how == "extra_field":
        lines[3] = lines[3].rstrip("\n") + "\textra\n"
    elif how == "missing_field":
        lines[3] = lines[3].rsplit("\t", 1)[0] + "\n"
    elif how == "cut_line":  # the file ends mid-row
        return "".join(lines[:-1]) + lines[-1][: lines[-1].index("\t", lines[-1].index("\t") + 1)]
    elif how == "cut_number":
        lines[3] = lines[3].rstrip("\n")[:-2] + "\n"  # 3.25 -> 3.
    elif how == "open_quote":
        lines[3] = lines[3].replace("the first", '"the first', 1)
    return "".join(lines)


@pytest.mark.parametrize("how", ["extra_field", "missing_field", "cut_line", "cut_number", "open_quote"])
@pytest.mark.parametrize("task,folder,name,text", [
    ("mrpc", "MRPC", "dev.tsv", _GLUE_MRPC), ("stsb", "STS-B", "dev.tsv", _GLUE_STSB),
    ("sts", "cs224n", "sts-dev.csv", _CS224N_STS)])
def test_a_damaged_row_is_one_error_naming_file_and_line(tmp_path, task, folder, name, text, how):
    """Every reader, every damage a user can do: one error naming file:line (nothing read silently)."""
    if how == "cut_number" and task == "mrpc" or how == "open_quote" and task != "sts":
        pytest.skip("no number to cut / GLUE TSVs take quotes as text")
    d = _folder(tmp_path, folder, {name: _damaged(text, how)})
    with pytest.raises(UserError) as err:
        load_split(get_task(task), TaskConfig(name=task, data_dir=str(d)), "dev")
    line = 7 if how == "cut_line" else 4  # header line 1, the damaged row 4, the last row 7
    assert f"{d / name}:{line}:" in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


def test_utf8_error_after_a_bom_names_the_right_byte_and_an_empty_cs224n_file_reads_well(tmp_path):
    d = _folder(tmp_path, "SST-2", {})
    (d / "dev.tsv").write_bytes(b"\xef\xbb\xbfsentence\tlabel\nok\t1\nbad \xff\t0\n")
    with pytest.raises(UserError, match=r"dev.tsv:3: not UTF-8 text \(byte 27: b'\\xff'\)"):
        load_split(get_task("sst2"), TaskConfig(name="sst2", data_dir=str(d)), "dev")
    c = _folder(tmp_path, "cs224n", {"sts-dev.csv": ""})
    with pytest.raises(UserError) as err:
        load_split(get_task("sts"), TaskConfig(name="sts", data_dir=str(c)), "dev")
    assert str(err.value).endswith("empty file; expected the CS224N sts file (tab-separated despite the .csv name, "
                                   "with a header line)"), str(err.value)


@pytest.mark.parametrize("task", ["quora", "sts"])
def test_a_cs224n_task_without_its_files_never_falls_back_to_other_hub_data(tmp_path, monkeypatch, task):
    """GLUE QQP / STS-B on the hub are other data sets than CS224N's splits: one line naming the folders
    searched, unless the recipe asks for the hub (and then the run records it)."""
    import datasets

    from eebench.paths import DATA_ENV

    asked = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: asked.append(a) or (_ for _ in ()).throw(
        ConnectionError("offline")))
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    with pytest.raises(UserError) as err:
        load_split(get_task(task), TaskConfig(name=task), "dev")
    text = str(err.value)
    assert f"{tmp_path / 'cs224n'}" in text and "not CS224N's" in text and "task.hub_fallback = true" in text
    assert "\n" not in text and asked == []  # the hub was not even asked
    with pytest.raises(UserError, match=r"and no hub copy \(offline\)"):
        load_split(get_task(task), TaskConfig(name=task, hub_fallback=True), "dev")
    assert asked  # asked for it: the hub is tried


def test_a_tasks_submission_file_and_hub_splits_are_part_of_its_declaration():
    """GLUE's server expects these file names; NLI tasks as label words (one TaskSpec entry says it all)."""
    files = {(name, split): stem for name, spec in TASKS.items() for split, stem in spec.submission.items()}
    assert files == {("cola", "test"): "CoLA", ("sst2", "test"): "SST-2", ("mrpc", "test"): "MRPC",
                     ("stsb", "test"): "STS-B", ("qqp", "test"): "QQP", ("qnli", "test"): "QNLI",
                     ("rte", "test"): "RTE", ("wnli", "test"): "WNLI", ("mnli", "test_matched"): "MNLI-m",
                     ("mnli", "test_mismatched"): "MNLI-mm"}
    assert {name for name, spec in TASKS.items() if spec.submission_words} == {"mnli", "qnli", "rte"}
    assert get_task("mnli").hub_split("dev_matched") == "validation_matched" and get_task("sst2").hub_split("dev") == "validation"
