"""The setting a calibration saves is the setting of the row it chose: applied again to the same trace
it gives that row's exits exactly, for every policy and task type, with grids that mix a policy's
one-number form and its full settings (patience with and without delta)."""

from __future__ import annotations

import numpy as np
import pytest

from eebench.errors import UserError
from eebench.calibration import choose, row_setting, sweep, to_settings
from eebench.data.tasks import get_task
from eebench.policies import POLICIES
from eebench.trace_data import Trace


def _trace(regression: bool, n: int = 300, layers: int = 6, seed: int = 0) -> Trace:
    rng = np.random.default_rng(seed)
    classes = 1 if regression else 3
    logits = rng.normal(size=(n, layers, classes)).astype(np.float32) * np.linspace(0.3, 2.0, layers)[None, :, None]
    labels = rng.normal(size=n).astype(np.float32) if regression else rng.integers(0, classes, n)
    return Trace("dev", "k", np.arange(n).astype(str), logits, labels, regression,
                 lte=rng.random((n, layers)).astype(np.float32), cka=rng.random((n, layers - 1)).astype(np.float32))


@pytest.mark.parametrize("regression", [False, True])
@pytest.mark.parametrize("name", sorted(POLICIES))
def test_the_saved_setting_reapplied_gives_the_chosen_row(name, regression):
    policy = POLICIES[name]
    if not policy.serves(regression):
        pytest.skip(f"{name} does not serve {'regression' if regression else 'classification'}")
    trace = _trace(regression)
    spec = get_task("stsb" if regression else "mnli")
    settings = policy.fine_grid(trace)
    numeric = [k for k in policy.params if k not in policy.defaults]
    if len(numeric) == 1:  # the CLI's --grid 1,2 form beside the fine grid's full settings
        settings = to_settings(policy, [settings[0][numeric[0]], settings[-1][numeric[0]]]) + settings
    table = sweep(trace, spec, policy, settings)
    final = table[spec.primary_metric].iloc[-1]
    checked = 0
    for target in (30.0, 50.0, 80.0, 100.0):
        try:
            row = choose(table, spec.primary_metric, final, target_time_pct=target)
        except UserError as err:  # nothing this fast: only the "no setting reaches" refusal is expected
            assert "no setting reaches time%" in str(err) and target < 100, err
            continue
        checked += 1
        saved = row_setting(row, policy)
        again = policy.exits(trace, [policy.complete(saved)])[0]
        assert again.mean() == pytest.approx(row["mean_exit_layer"], abs=1e-9), (saved, target)
        assert set(saved) == {k for k in policy.params if k in table.columns}
    assert checked, f"{name}: no target was reachable, so nothing was checked"
