"""Exit policies: pure functions from cached per-layer signals (the trace) to exit layers.

Exit layers are 1-based (1..L); the last layer always exits. A policy takes a list of *settings*
(small dicts) and returns the exit layer of every example under every setting, Shape [T, N].
One meaning per name (docs/policies.md):

* ``entropy`` {threshold}: exit at the first layer i < L whose prediction entropy H_i (nats) < threshold.
* ``max_prob`` {threshold}: … whose largest class probability ≥ threshold.
* ``lte`` {threshold}: … whose learned-to-exit certainty u_i ≥ threshold (needs an LTE head).
  These three also take a list of L-1 thresholds, one per layer.
* ``patience`` {patience}: PABEE — exit at the first layer whose prediction equals the previous
  layer's for ``patience`` consecutive layers (regression: |ŷ_i − ŷ_{i−1}| < ``delta``).
* ``pcee`` {patience, threshold}: patient and confident — exit at the first layer that ends a run
  of ``patience`` consecutive layers each with max probability ≥ threshold.
* ``cka`` {theta, count}: CsdBERT — s_i = linear CKA(E_i, E_{i+1}) of consecutive layers' token
  representations; after layer i+2 (i ≥ 1) the difference s_{i+1} − s_i is known; each difference
  < theta counts once; exit at the layer where the count reaches ``count`` (R).
* ``static`` {layer}: every example exits at ``layer``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

import numpy as np

from eebench.errors import UserError
from eebench.fastsweep import running_min
from eebench.recipe import DEEBERT_ENTROPY_GRID


# ----------------------------------------------------------------------------- per-layer signals
def _classes(logits: np.ndarray) -> list[np.ndarray]:
    """The class slices of [..., C] as float64 arrays: numpy reduces a short last axis slowly, so the
    functions below loop over the (few) classes instead."""
    return [np.ascontiguousarray(logits[..., c], dtype=np.float64) for c in range(logits.shape[-1])]


def _own_classes(logits: np.ndarray) -> list[np.ndarray]:
    """Like _classes, always copies: the callers work in place."""
    return [np.array(logits[..., c], dtype=np.float64) for c in range(logits.shape[-1])]


def _max(parts: list[np.ndarray]) -> np.ndarray:
    m = parts[0].copy()
    for p in parts[1:]:
        np.maximum(m, p, out=m)
    return m


def argmax(logits: np.ndarray) -> np.ndarray:
    """Same as logits.argmax(-1) (first maximum wins), faster for few classes."""
    parts = [logits[..., c] for c in range(logits.shape[-1])]
    best, idx = parts[0].copy(), np.zeros(parts[0].shape, dtype=np.int64)
    for c, p in enumerate(parts[1:], start=1):
        better = p > best
        best = np.where(better, p, best)
        idx[better] = c
    return idx


def entropy(logits: np.ndarray) -> np.ndarray:
    """Prediction entropy in nats, H = −Σ p log p from a stable log-softmax. [..., C] → [...]."""
    parts = _own_classes(logits)
    m = _max(parts)
    z, acc, e = np.zeros_like(m), np.zeros_like(m), np.empty_like(m)
    for x in parts:  # in place: a trace's [N, L] arrays are large, temporaries cost more than the math
        x -= m
        np.exp(x, out=e)
        z += e
        e *= x
        acc += e
    # −Σ p (x − log z) with p = e^x / z
    acc /= z
    np.log(z, out=z)
    z -= acc
    return z


def max_prob(logits: np.ndarray) -> np.ndarray:
    """Largest class probability, exp(max x − logsumexp x). [..., C] → [...]."""
    parts = _own_classes(logits)
    m = _max(parts)
    z = np.zeros_like(m)
    for x in parts:
        x -= m
        z += np.exp(x, out=x)
    return np.divide(1.0, z, out=z)


def first_layer_where(ok: np.ndarray) -> np.ndarray:
    """ok Shape: [..., N, L-1] (may layer i exit?) → exit layer, 1-based; L where none may."""
    n_layers = ok.shape[-1] + 1
    return np.where(ok.any(-1), ok.argmax(-1) + 1, n_layers)


def threshold_exits(signal: np.ndarray, thresholds, below: bool) -> np.ndarray:
    """signal Shape: [N, L]; thresholds: [T] or [T, L-1] (per layer) → exit layers Shape: [T, N]."""
    n_layers = signal.shape[1]
    rows = []
    for t in thresholds:
        t = np.asarray(t, dtype=np.float64)
        if t.ndim == 1 and t.shape[0] != n_layers - 1:
            raise UserError(f"a per-layer threshold needs {n_layers - 1} values (layers 1..L-1), "
                            f"got {t.shape[0]}")
        rows.append(np.broadcast_to(t, (n_layers - 1,)))
    t = np.stack(rows)[:, None, :]  # Shape: [T, 1, L-1]
    s = signal[None, :, :-1]
    return first_layer_where(s < t if below else s >= t)


def run_lengths(same: np.ndarray) -> np.ndarray:
    """same Shape: [..., L] (layer i agrees with / qualifies after layer i−1) → length of the current
    run of consecutive Trues ending at each layer."""
    out = np.zeros(same.shape, dtype=np.int64)
    run = np.zeros(same.shape[:-1], dtype=np.int64)
    for i in range(same.shape[-1]):
        run = np.where(same[..., i], run + 1, 0)
        out[..., i] = run
    return out


def predictions_agree(logits: np.ndarray, regression: bool, delta: float) -> np.ndarray:
    """[N, L]: layer i's prediction equals layer i−1's (False at layer 1)."""
    if regression:
        values = logits[..., 0]
        agree = np.abs(np.diff(values, axis=1)) < delta
    else:
        preds = argmax(logits)
        agree = preds[:, 1:] == preds[:, :-1]
    return np.concatenate([np.zeros((logits.shape[0], 1), dtype=bool), agree], axis=1)


# ----------------------------------------------------------------------------- the policies
def _thresholds(settings) -> list:
    return [s["threshold"] for s in settings]


def _entropy_exits(trace, settings):
    return threshold_exits(entropy(trace.logits), _thresholds(settings), below=True)


def _max_prob_exits(trace, settings):
    return threshold_exits(max_prob(trace.logits), _thresholds(settings), below=False)


def _lte_exits(trace, settings):
    return threshold_exits(trace.lte.astype(np.float64), _thresholds(settings), below=False)


def _patience_exits(trace, settings, delta: float = 0.1):
    runs = run_lengths(predictions_agree(trace.logits, trace.regression, delta))  # Shape: [N, L]
    p = np.asarray([s["patience"] for s in settings])[:, None, None]
    return first_layer_where(runs[None, :, :-1] >= p)


def _pcee_exits(trace, settings):
    conf = max_prob(trace.logits)  # Shape: [N, L]
    out = []
    for s in settings:
        runs = run_lengths(conf >= s["threshold"])
        out.append(first_layer_where(runs[:, :-1] >= s["patience"]))
    return np.stack(out)


def cka_counts(sims: np.ndarray, theta: float) -> np.ndarray:
    """sims Shape: [N, L-1] (s_i = CKA of layers i, i+1) → count after each layer, Shape: [N, L]."""
    n, l1 = sims.shape
    counts = np.zeros((n, l1 + 1), dtype=np.int64)
    run = np.zeros(n, dtype=np.int64)
    for j in range(l1 - 1):  # the difference s_{j+2} − s_{j+1} is known after layer j+3
        run = run + (sims[:, j + 1] - sims[:, j] < theta)
        counts[:, j + 2] = run
    return counts


def _cka_exits(trace, settings):
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


def _static_exits(trace, settings):
    n = trace.logits.shape[0]
    return np.stack([np.full(n, min(int(s["layer"]), trace.num_layers)) for s in settings])


def _midpoints(values: np.ndarray, n: int) -> list[float]:
    """Thresholds between quantiles of a signal: never equal to an observed value (no ties)."""
    u = np.unique(values)
    i = np.unique(np.searchsorted(u, np.quantile(values, np.linspace(0, 1, n)), side="right"))
    i = i[(i >= 1) & (i < len(u))]
    mids = (u[i - 1] + u[i]) / 2  # strictly between two neighbouring observed values
    return sorted(set(mids.tolist())) + [float(u[-1]) + 1.0, float(u[0]) - 1.0]


@dataclass(frozen=True)
class Policy:
    name: str
    needs: str  # the trace signal beyond logits: "", "lte" or "cka"
    exits_fn: Callable  # (trace, settings) → Shape [T, N]
    default_grid: Callable[[int], list[dict]]  # n_layers → settings
    candidates: Callable  # (trace, n) → settings, a fine grid for calibration
    description: str
    # For the fast sweep (eebench.fastsweep): (trace, settings) → [(key [N, L-1], thresholds [T],
    # strict, setting indices)], or None when the policy has no such form (e.g. per-layer thresholds).
    fast_keys: Callable | None = None

    def check(self, trace) -> None:
        if self.needs and getattr(trace, self.needs, None) is None:
            hint = ('train with train.strategy = "lte"' if self.needs == "lte"
                    else "re-run eebench evaluate to store CKA similarities")
            raise UserError(f"policy {self.name!r} needs {self.needs} signals, which this run's trace "
                            f"does not have; {hint}")

    def exits(self, trace, settings: list[dict]) -> np.ndarray:
        self.check(trace)
        return self.exits_fn(trace, settings)

    def fine_grid(self, trace, n: int = 200) -> list[dict]:
        """A dense grid for calibration, from the trace's own signal values."""
        self.check(trace)
        return self.candidates(trace, n)


def _threshold_grid(values):
    return lambda n_layers: [{"threshold": v} for v in values]


def _signal_candidates(signal_fn):
    return lambda trace, n=200: [{"threshold": t} for t in _midpoints(signal_fn(trace)[:, :-1].ravel(), n)]


def _scalar_thresholds(settings) -> np.ndarray | None:
    t = [s["threshold"] for s in settings]
    return None if any(isinstance(v, (list, tuple)) for v in t) else np.asarray(t, dtype=np.float64)


def _fast_threshold(signal_fn, below: bool):
    """entropy (exit when H < t) → key = running min of H; max_prob / lte (exit when s ≥ t) →
    key = running min of −s, exit when key ≤ −t."""
    def keys(trace, settings):
        t = _scalar_thresholds(settings)
        if t is None:
            return None
        s = signal_fn(trace)[:, :-1]
        if below:
            return [(running_min(s), t, True, np.arange(len(settings)))]
        return [(running_min(-s), -t, False, np.arange(len(settings)))]
    return keys


def _fast_patience(trace, settings, delta: float = 0.1):
    runs = run_lengths(predictions_agree(trace.logits, trace.regression, delta))[:, :-1]
    p = np.asarray([s["patience"] for s in settings], dtype=np.float64)
    return [(running_min(-runs.astype(np.float64)), -p, False, np.arange(len(settings)))]


def _fast_grouped(counts_fn, group_key: str, count_key: str):
    """Settings grouped by one parameter; within a group, exit once a count reaches ``count_key``."""
    def keys(trace, settings):
        groups: dict = {}
        for k, s in enumerate(settings):
            groups.setdefault(s[group_key], []).append(k)
        out = []
        for value, idx in groups.items():
            counts = -counts_fn(trace, value)[:, :-1].astype(np.float64)
            r = np.asarray([settings[k][count_key] for k in idx], dtype=np.float64)
            out.append((running_min(counts), -r, False, np.asarray(idx)))
        return out
    return keys


POLICIES: dict[str, Policy] = {p.name: p for p in [
    Policy("entropy", "", _entropy_exits, _threshold_grid(DEEBERT_ENTROPY_GRID),
           _signal_candidates(lambda t: entropy(t.logits)),
           "exit at the first layer whose prediction entropy (nats) is below the threshold",
           _fast_threshold(lambda t: entropy(t.logits), below=True)),
    Policy("max_prob", "", _max_prob_exits,
           _threshold_grid([1.01, 0.99, 0.98, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5]),
           _signal_candidates(lambda t: max_prob(t.logits)),
           "exit at the first layer whose largest class probability is at least the threshold",
           _fast_threshold(lambda t: max_prob(t.logits), below=False)),
    Policy("lte", "lte", _lte_exits, _threshold_grid([1.01, 0.99, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]),
           _signal_candidates(lambda t: t.lte.astype(np.float64)),
           "exit at the first layer whose learned certainty is at least the threshold",
           _fast_threshold(lambda t: t.lte.astype(np.float64), below=False)),
    Policy("patience", "", _patience_exits, lambda L: [{"patience": p} for p in range(1, L)],
           lambda trace, n=200: [{"patience": p} for p in range(1, trace.num_layers)],
           "exit once the prediction has stayed the same for `patience` consecutive layers (PABEE)",
           _fast_patience),
    Policy("pcee", "", _pcee_exits,
           lambda L: [{"patience": p, "threshold": t} for p in (1, 2, 3) for t in (0.99, 0.95, 0.9, 0.8, 0.7)],
           lambda trace, n=200: [{"patience": p, "threshold": t} for p in range(1, min(4, trace.num_layers))
                                 for t in np.linspace(0.5, 1.0, 51).round(3).tolist()],
           "exit once `patience` consecutive layers are each confident (max probability ≥ threshold)",
           _fast_grouped(lambda t, th: run_lengths(max_prob(t.logits) >= th), "threshold", "patience")),
    Policy("cka", "cka", _cka_exits, lambda L: [{"theta": 0.06, "count": r} for r in range(1, max(L - 1, 2))],
           lambda trace, n=200: [{"theta": th, "count": r} for th in np.linspace(-0.05, 0.2, 26).round(3).tolist()
                                 for r in range(1, max(trace.num_layers - 1, 2))],
           "CsdBERT: count layers whose CKA similarity change is below theta; exit when the count reaches `count`"),
    Policy("static", "", _static_exits, lambda L: [{"layer": k} for k in range(1, L + 1)],
           lambda trace, n=200: [{"layer": k} for k in range(1, trace.num_layers + 1)],
           "every example exits at `layer`"),
]}


def get_policy(name: str) -> Policy:
    if name not in POLICIES:
        raise UserError(f"unknown exit policy {name!r}; choose one of {', '.join(POLICIES)}")
    return POLICIES[name]


def setting_label(setting: dict) -> str:
    return ", ".join(f"{k}={json.dumps(v) if isinstance(v, list) else f'{v:g}'}" for k, v in setting.items())


def exit_summary(exit_layers: np.ndarray, n_layers: int) -> dict:
    """time% = 100 · mean(exit layer) / L; speed-up = L / mean(exit layer); histogram of exit layers."""
    mean_layer = float(exit_layers.mean())
    return {
        "mean_exit_layer": mean_layer,
        "time_pct": 100.0 * mean_layer / n_layers,
        "speedup": n_layers / mean_layer,
        "histogram": np.bincount(exit_layers, minlength=n_layers + 1)[1:].tolist(),
    }
