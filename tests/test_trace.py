import numpy as np

from eebench.data.examples import Examples
from eebench.trace_data import Trace, load_trace, save_trace, stored_key, trace_key


def _examples(labels=(0, 1)):
    return Examples(["0", "1"], ["a b", "c"], None, np.asarray(labels, dtype=np.int64))


def test_key_changes_with_weights_data_and_max_length():
    fp = _examples().fingerprint()
    base = trace_key("w1", fp, 128)
    assert trace_key("w1", fp, 128) == base
    assert trace_key("w2", fp, 128) != base
    assert trace_key("w1", fp, 64) != base
    assert trace_key("w1", _examples((1, 1)).fingerprint(), 128) != base
    changed_text = Examples(["0", "1"], ["a b", "d"], None, np.asarray([0, 1]))
    assert changed_text.fingerprint() != _examples().fingerprint()


def test_trace_round_trip(tmp_path):
    trace = Trace("dev", "k", np.asarray(["0", "1"]), np.random.rand(2, 3, 2).astype(np.float32),
                  np.asarray([0, 1]), False)
    path = tmp_path / "t.npz"
    save_trace(path, trace)
    back = load_trace(path)
    assert stored_key(path) == "k" and back.split == "dev" and not back.regression
    np.testing.assert_array_equal(back.logits, trace.logits)
    np.testing.assert_array_equal(back.labels, trace.labels)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    assert stored_key(tmp_path / "missing.npz") is None
