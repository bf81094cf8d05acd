"""The real early-exit engine against running every layer, on a trained run folder.

    python benchmarks/engine_speed.py results/deebert_sst2_minilm [--split dev] [--policy entropy]
                                      [--target-time-pct 50] [--limit 872] [--batch 32]

Picks the policy setting on the split's stored trace whose time% is at or below the target (mean
exit layer ≤ L/2 for 50), then measures, interleaved per example / per batch:
  * batch size 1: wall-clock per example of the engine and of the full model (all layers, final
    head only), p50 / p95, and the measured speed-up against the ideal L / mean(exit layer);
  * batch size --batch: the engine with row compaction against the full model, per batch;
  * agreement: the engine's exits against the trace simulation, on every example.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from eebench.calibrate import sweep
from eebench.data.encode import encode
from eebench.data.load import load_split
from eebench.engine import EarlyExitEngine
from eebench.model.build import load_model
from eebench.policies import get_policy
from eebench.runs import ensure_trace, open_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--split", default="dev")
    ap.add_argument("--policy", default="entropy")
    ap.add_argument("--target-time-pct", type=float, default=50.0)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--batch", type=int, default=32)
    a = ap.parse_args()
    run = open_run(a.run)
    trace = ensure_trace(run, a.split)
    policy = get_policy(a.policy)
    table = sweep(trace, run.spec, policy, policy.fine_grid(trace))
    ok = table[table["time_pct"] <= a.target_time_pct]
    row = ok.sort_values("time_pct", ascending=False).iloc[0]
    setting = {k: row[k] for k in policy.default_grid(2)[0]}
    expected = policy.exits(trace, [setting])[0]
    model, tok, _ = load_model(run.model_dir)
    engine = EarlyExitEngine(model, a.policy, setting, trace.regression)
    examples = load_split(run.spec, run.recipe.task, a.split)
    data = encode(tok, examples, run.recipe.train.max_length)
    n = min(a.limit or len(data), len(data))
    L = trace.num_layers

    def batch_of(idx):
        b = data.collate([data[i] for i in idx])
        index = b.pop("index").numpy()
        b.pop("labels", None)
        return index, b

    # warm-up
    for i in range(min(20, n)):
        _, b = batch_of([i])
        engine.run(b), engine.run_full(b)
    t_engine, t_full, got = np.zeros(n), np.zeros(n), np.zeros(n, dtype=np.int64)
    for i in range(n):
        _, b = batch_of([i])
        t0 = time.perf_counter()
        exits, _ = engine.run(b)
        t_engine[i] = time.perf_counter() - t0
        t0 = time.perf_counter()
        engine.run_full(b)
        t_full[i] = time.perf_counter() - t0
        got[i] = exits[0]
    ideal = L / expected[:n].mean()
    measured = t_full.sum() / t_engine.sum()
    agree1 = (got == expected[:n]).mean()

    order = np.argsort(data.lengths()[:n], kind="stable")  # similar lengths per batch, as in serving
    tb_engine = tb_full = 0.0
    got_b = np.zeros(n, dtype=np.int64)
    for s in range(0, n, a.batch):
        index, b = batch_of(order[s: s + a.batch].tolist())
        t0 = time.perf_counter()
        exits, _ = engine.run(b)
        tb_engine += time.perf_counter() - t0
        t0 = time.perf_counter()
        engine.run_full(b)
        tb_full += time.perf_counter() - t0
        got_b[index] = exits
    measured_b = tb_full / tb_engine
    agree_b = (got_b == expected[:n]).mean()

    ms = lambda x: 1000 * np.percentile(x, [50, 95])  # noqa: E731
    print(f"run {run.dir}, split {a.split}, {n} examples, policy {a.policy} {setting}, threads {torch.get_num_threads()}")
    print(f"mean exit layer {expected[:n].mean():.2f} of {L}; time% {100 * expected[:n].mean() / L:.1f}; "
          f"ideal speed-up L/mean(exit) = {ideal:.2f}x")
    e50, e95 = ms(t_engine)
    f50, f95 = ms(t_full)
    print(f"batch 1:  engine p50 {e50:.2f} ms p95 {e95:.2f} ms | full model p50 {f50:.2f} ms p95 {f95:.2f} ms")
    print(f"batch 1:  measured speed-up {measured:.2f}x = {measured / ideal:.2f} of ideal (target >= 0.90)")
    # Long inputs cost more per layer and tend to exit later, so L / mean(exit) overstates what any
    # engine can save. The cost-weighted ideal weights each example's exit by its own full-model time.
    weighted = t_full.sum() / (t_full * got / L).sum()
    print(f"batch 1:  cost-weighted ideal sum(t_full) / sum(t_full * exit / L) = {weighted:.2f}x; "
          f"measured = {measured / weighted:.2f} of it")
    print(f"batch {a.batch}: engine {tb_engine:.2f} s | full {tb_full:.2f} s | measured speed-up "
          f"{measured_b:.2f}x = {measured_b / ideal:.2f} of ideal (target >= 0.75)")
    print(f"exits equal to the trace simulation: batch 1 {100 * agree1:.2f}%, batch {a.batch} {100 * agree_b:.2f}%")
    layer_us, head_us, decide_us, tokens = component_costs(engine, batch_of, n)
    print(f"batch 1 cost per layer passed (median example, {tokens} tokens): encoder layer {layer_us:.0f} us, "
          f"exit head {head_us:.0f} us ({100 * head_us / layer_us:.1f}%), exit decision {decide_us:.0f} us")


def component_costs(engine, batch_of, n: int, repeat: int = 200) -> tuple[float, float, float, int]:
    """Median microseconds of one encoder layer, one exit head and one exit decision at batch 1."""
    from eebench.engine import _State

    lengths = [(batch_of([i])[1]["attention_mask"].shape[1], i) for i in range(min(200, n))]
    _, b = batch_of([sorted(lengths)[len(lengths) // 2][1]])
    with torch.no_grad():
        hidden, mask4 = engine._embed(b)
        mask = b["attention_mask"]
        logits, pooled = engine.model.heads[0](hidden, mask)

        def median_us(fn):
            ts = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
            return 1e6 * float(np.median(ts))

        return (median_us(lambda: engine._layer(engine.layers[0], hidden, mask4)),
                median_us(lambda: engine.model.heads[0](hidden, mask)),
                median_us(lambda: engine._decide(1, logits, pooled, hidden, mask, _State())),
                int(mask.shape[1]))


if __name__ == "__main__":
    main()
