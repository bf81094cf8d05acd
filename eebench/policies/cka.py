"""``cka`` {theta, count} (CsdBERT): s_i = linear CKA(E_i, E_{i+1}) of consecutive layers' token
representations; after layer i+2 (i ≥ 1) the difference s_{i+1} − s_i is known; each difference
< theta counts once; exit at the layer where the count reaches ``count`` (R). Needs the CKA
similarities in the trace. Classification and regression."""

from __future__ import annotations

import numpy as np

from eebench.model.similarity import centered_gram, linear_cka
from eebench.policies.base import Policy


def cka_counts(sims: np.ndarray, theta: float) -> np.ndarray:
    """sims Shape: [N, L-1] (s_i = CKA of layers i, i+1) → count after each layer, Shape: [N, L]."""
    n, l1 = sims.shape
    counts = np.zeros((n, l1 + 1), dtype=np.int64)
    run = np.zeros(n, dtype=np.int64)
    for j in range(l1 - 1):  # the difference s_{j+2} − s_{j+1} is known after layer j+3
        run = run + (sims[:, j + 1] - sims[:, j] < theta)
        counts[:, j + 2] = run
    return counts


def _exits(trace, settings):
    """All settings at once: with counts non-decreasing, exit = 1 + #{layers i < L : count_i < R}.
    Counts are 0 after layers 1 and 2; after layer i ≥ 3 the cumulative sum of [s_{k+1} − s_k < θ]."""
    sims = trace.cka.astype(np.float64)
    n, n_layers = sims.shape[0], sims.shape[1] + 1
    m = max(n_layers - 3, 0)  # layers 3..L-1: where the count can grow
    thetas, which = np.unique(np.asarray([s["theta"] for s in settings], dtype=np.float64), return_inverse=True)
    r = np.clip(np.asarray([s["count"] for s in settings]), 0, m + 1)
    early = min(2, n_layers - 1) * (r > 0)  # layers 1, 2 (when before L) have count 0 < R
    diff = np.ascontiguousarray((sims[:, 1:m + 1] - sims[:, :m]).T)  # Shape: [m, N]
    counts = np.zeros((len(thetas), n), dtype=np.int16)  # Shape: [Θ, N], the count after layer 3 + j
    below = np.zeros((len(thetas), m + 2, n), dtype=np.int16)  # below[θ, R] = #{layers 3..L-1: count < R}
    for j in range(m):  # small-integer [Θ, N] slabs, one layer at a time: no [Θ, N, m] temporaries
        counts += diff[j][None] < thetas[:, None]
        for c in np.unique(r[r > 0]):
            below[:, c] += counts < c
    return 1 + early[:, None] + below[which, r]


def step(setting, view, state):
    gram = centered_gram(view.hidden, view.mask)
    if "count" not in state:
        state["count"] = np.zeros(view.n, dtype=np.int64)
    if "prev_gram" in state:
        sim = linear_cka(state["prev_gram"], gram).float().cpu().numpy().astype(np.float64)
        if "prev_sim" in state:
            state["count"] = state["count"] + ((sim - state["prev_sim"]) < setting["theta"])
        state["prev_sim"] = sim
    state["prev_gram"] = gram
    return state["count"] >= setting["count"]


POLICY = Policy(
    "cka", "CsdBERT: count layers whose CKA similarity change is below theta; exit when the count reaches "
    "`count`", ("theta", "count"),
    lambda n_layers, regression=False: [{"theta": 0.06, "count": r} for r in range(1, max(n_layers - 1, 2))],
    lambda trace, n=200: [{"theta": th, "count": r} for th in np.linspace(-0.05, 0.2, 26).round(3).tolist()
                          for r in range(1, max(trace.num_layers - 1, 2))],
    _exits, step, needs="cka",
    # CsdBERT's R at its theta 0.06: a long count exits late
    ordered=lambda n_layers, n_classes=2, regression=False: [
        {"theta": 0.06, "count": r} for r in range(max(n_layers - 2, 1), 0, -1)])
