import numpy as np
import pytest

from eebench.calibration import choose
from eebench.errors import UserError
from eebench.metrics import layerwise, majority_rate, score


def test_classification_metrics_against_hand_values():
    y = np.array([1, 1, 0, 0, 1])
    p = np.array([1, 0, 0, 1, 1])
    s = score(("acc", "f1", "mcc", "acc_f1_avg"), p, y)
    assert s["acc"] == pytest.approx(60.0)
    # tp=2 fp=1 fn=1 → f1 = 2/3
    assert s["f1"] == pytest.approx(200 / 3)
    # mcc = (tp·tn − fp·fn)/sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = (2·1 − 1·1)/sqrt(3·3·2·2) = 1/6
    assert s["mcc"] == pytest.approx(100 / 6)
    assert s["acc_f1_avg"] == pytest.approx((60 + 200 / 3) / 2)


def test_regression_metrics():
    y = np.array([0.0, 1.0, 2.0, 3.0])
    s = score(("pearson", "spearman"), y * 2 + 1, y)
    assert s["pearson"] == pytest.approx(100.0)
    assert s["spearman"] == pytest.approx(100.0)
    assert np.isnan(score(("pearson",), np.ones(4), y)["pearson"])  # constant predictions: none, not 0


def test_undefined_metric_is_null_in_the_file_and_nan_when_read(tmp_path):
    import json

    from eebench.run.records import Layerwise

    path = Layerwise([{"layer": 1, "pearson": float("nan")}, {"layer": 2, "pearson": 70.5}]).save(tmp_path / "l.json")
    assert json.loads(path.read_text()) == [{"layer": 1, "pearson": None}, {"layer": 2, "pearson": 70.5}]
    rows = Layerwise.load(path).root
    assert np.isnan(rows[0]["pearson"]) and rows[1]["pearson"] == 70.5


def test_layerwise_and_majority():
    logits = np.zeros((4, 2, 2))
    logits[:, 1, 1] = 1.0  # layer 2 predicts class 1 everywhere; layer 1 predicts class 0 (ties → 0)
    y = np.array([1, 1, 1, 0])
    rows = layerwise(("acc",), logits, y, regression=False)
    assert [r["acc"] for r in rows] == [25.0, 75.0]
    assert majority_rate(y) == 75.0


def test_choose_rules():
    import pandas as pd

    t = pd.DataFrame({"threshold": [0.0, 0.1, 0.2, 0.3], "acc": [90.0, 89.5, 88.0, 80.0],
                      "time_pct": [100.0, 70.0, 50.0, 30.0]})
    assert choose(t, "acc", 90.0, target_time_pct=60)["threshold"] == 0.2
    assert choose(t, "acc", 90.0, target_time_pct=100)["threshold"] == 0.0
    assert choose(t, "acc", 90.0, max_drop=1.0)["threshold"] == 0.1
    assert choose(t, "acc", 90.0, max_drop=10.0)["threshold"] == 0.3
    with pytest.raises(UserError, match="no setting reaches"):
        choose(t, "acc", 90.0, target_time_pct=10)
    with pytest.raises(UserError, match="give a target"):
        choose(t, "acc", 90.0)
