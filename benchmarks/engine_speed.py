"""The real early-exit engine against running every layer, on a trained run folder.

    python benchmarks/engine_speed.py results/deebert_sst2_minilm [--split dev] [--policy entropy]
                                      [--target-time-pct 50] [--limit N] [--batch 32] [--rounds 3]
                                      [--block 100] [--device cuda]
    python benchmarks/engine_speed.py --family all  (or --family albert,deberta-v2,...)

``--family``: no run folder; each family as a random model of MiniLM-L6's shape (6 layers, hidden 384,
12 heads, feed-forward 1536, vocabulary 30522) with its exit heads' confidence spread so that entropy
exits happen, on 200 random token sequences of 6-64 tokens (mean ~26, SST-2's). The entropy setting is
the largest time% <= --target-time-pct on these; batch 1, stream, as below, per family side by side.

Runs on the GPU when there is one (``--device`` chooses); every time is synchronised (CUDA events
on a GPU) and every input length is warmed up first.

Picks the policy setting whose time% on the measured examples is the largest at or below the
target (mean exit layer ≤ L/2 for 50), then measures:
  * batch size 1, stream: the engine serves a block of --block consecutive examples, then the full
    model (all layers, final head only) serves the same block; the order alternates per block and
    per round (--rounds), each example's time is the median of its rounds. This is what a deployed
    model sees: consecutive requests, the weights of the layers it runs warm in the CPU caches.
  * batch size 1, interleaved: engine and full model on the same example back to back (order
    alternating). Each run inherits the other's cache state, so the engine's early layers are
    often cold; printed as the pessimistic reading.
  * batch size --batch: the engine with row compaction against the full model, per batch;
  * agreement: the engine's exits against the trace simulation, on every example.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from eebench.data.load import load_split
from eebench.engine import EarlyExitEngine
from eebench.model.build import load_model
from eebench.policies import get_policy
from eebench.pipeline.trace import encode_split, ensure_trace
from eebench.run.folder import open_run
from eebench.device import Clock, describe, inference_dtype, resolve_device
from eebench.engine.benchmarking import (batched_times, length_batches, single_batches, stream_contenders, sync_cost_us, timed,
                                  warm_up)


def pick_setting(trace, policy, n: int, target_time_pct: float) -> tuple[dict, np.ndarray]:
    """The setting with the largest time% ≤ target on the first n examples, and its exits there."""
    settings = policy.fine_grid(trace)
    exits = policy.exits(trace, settings)[:, :n]
    time_pct = 100 * exits.mean(1) / trace.num_layers
    ok = np.flatnonzero(time_pct <= target_time_pct)
    if not len(ok):
        raise SystemExit(f"no {policy.name} setting reaches time% <= {target_time_pct} on this split")
    best = ok[np.argmax(time_pct[ok])]
    return settings[best], exits[best]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", nargs="?")
    ap.add_argument("--family", default=None, help="all, or model types separated by commas (no run folder)")
    ap.add_argument("--examples", type=int, default=200, help="with --family: random sequences per family")
    ap.add_argument("--split", default="dev")
    ap.add_argument("--policy", default="entropy")
    ap.add_argument("--target-time-pct", type=float, default=50.0)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--estimate", choices=("median", "min"), default="median",
                    help="with --family: each example's time over rounds (min: the least disturbed round)")
    ap.add_argument("--block", type=int, default=100)
    ap.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: the GPU when there is one)")
    a = ap.parse_args(argv)
    device = resolve_device(a.device)
    if a.family:
        return families(a, device)
    if a.run is None:
        raise SystemExit("give a run folder, or --family")
    run = open_run(a.run)
    trace = ensure_trace(run, a.split, device=a.device)
    n = min(a.limit or len(trace.logits), len(trace.logits))
    setting, expected = pick_setting(trace, get_policy(a.policy), n, a.target_time_pct)
    model, tok, _ = load_model(run.model_dir, run.model_task)
    model.to(device)
    engine = EarlyExitEngine(model, a.policy, setting, trace.regression,
                             dtype=inference_dtype(device, run.recipe.train.mixed_precision))
    clock = Clock(device)
    examples = load_split(run.spec, run.recipe.task, a.split)
    data = encode_split(run.recipe, tok, examples)
    L = trace.num_layers

    singles, batches = single_batches(data, n, device), length_batches(data, n, a.batch, device)
    warm_up(engine, singles, batches)
    t, got = three_way(engine, singles, expected, a.rounds, a.block)
    t_engine, t_full = t["engine"], t["full"]
    ideal = L / expected.mean()
    measured = t_full.sum() / t_engine.sum()
    agree1 = (got == expected).mean()

    # batch 1, interleaved: the same example back to back, order alternating
    ti_engine, ti_full = np.zeros(n), np.zeros(n)
    for i, b in enumerate(singles):
        if i % 2:
            ti_full[i] = timed(engine.run_full, b, clock)
        ti_engine[i] = timed(engine.run, b, clock)
        if not i % 2:
            ti_full[i] = timed(engine.run_full, b, clock)
    measured_i = ti_full.sum() / ti_engine.sum()

    tb_engine, tb_full, got_b = batched_times(engine, batches, n)
    measured_b = tb_full / tb_engine
    agree_b = (got_b == expected).mean()

    ms = lambda x: 1000 * np.percentile(x, [50, 95])  # noqa: E731
    print(f"run {run.dir}, split {a.split}, {n} examples, policy {a.policy} {setting}, threads {torch.get_num_threads()}, "
          f"device {' '.join(describe(device).values())}")
    print(f"mean exit layer {expected.mean():.2f} of {L}; time% {100 * expected.mean() / L:.1f}; "
          f"ideal speed-up L/mean(exit) = {ideal:.2f}x")
    e50, e95 = ms(t_engine)
    f50, f95 = ms(t_full)
    print(f"batch 1, stream ({a.rounds} rounds, blocks of {a.block}): engine p50 {e50:.2f} ms p95 {e95:.2f} ms | "
          f"full model p50 {f50:.2f} ms p95 {f95:.2f} ms")
    print(f"batch 1, stream:      measured speed-up {measured:.2f}x = {measured / ideal:.2f} of ideal (target >= 0.90)")
    print(f"batch 1, stream:      oracle (static model cut at each example's exit layer) "
          f"{t_full.sum() / t['oracle'].sum():.2f}x = {t_full.sum() / t['oracle'].sum() / ideal:.2f} of ideal: the floor "
          f"here; engine time over it {t_engine.sum() / t['oracle'].sum():.3f} (what deciding costs)")
    print(f"batch 1, interleaved: measured speed-up {measured_i:.2f}x = {measured_i / ideal:.2f} of ideal")
    # Long inputs cost more per layer and tend to exit later, so L / mean(exit) overstates what any
    # engine can save. The cost-weighted ideal weights each example's exit by its own full-model time.
    weighted = t_full.sum() / (t_full * got / L).sum()
    print(f"batch 1, stream:      cost-weighted ideal sum(t_full) / sum(t_full * exit / L) = {weighted:.2f}x; "
          f"measured = {measured / weighted:.2f} of it")
    print(f"batch {a.batch}: engine {tb_engine:.2f} s | full {tb_full:.2f} s | measured speed-up "
          f"{measured_b:.2f}x = {measured_b / ideal:.2f} of ideal (target >= 0.75)")
    print(f"exits equal to the trace simulation: batch 1 {100 * agree1:.2f}%, batch {a.batch} {100 * agree_b:.2f}%")
    layer_us, head_us, cold_us, decide_us, tokens = component_costs(engine, singles)
    print(f"batch 1 cost per layer passed (median example, {tokens} tokens): encoder layer "
          f"{layer_us:.0f} us, exit head {head_us:.0f} us in a loop, {cold_us:.0f} us right after its layer "
          f"({100 * cold_us / layer_us:.1f}%), "
          f"exit decision {decide_us:.0f} us (host round trip of the decision's copy alone: "
          f"{sync_cost_us(engine, singles[0]):.1f} us)")


FAMILY_TYPES = ["bert", "roberta", "xlm-roberta", "electra", "albert", "distilbert", "deberta-v2", "modernbert",
                "mpnet", "llama", "gpt2"]


def random_family_setup(model_type: str, device, n: int = 200, target_time_pct: float = 50.0, seed: int = 0):
    """A random model of MiniLM-L6's shape in this family, batch-1 inputs, and the entropy setting with the
    largest time% <= target on them (from the model's own trace)."""
    from transformers import AutoConfig, AutoModel

    from eebench.model import MultiExitModel
    from eebench.model.families import shape_config
    from eebench.trace_data import Trace

    torch.manual_seed(seed)
    config = AutoConfig.for_model(model_type, **shape_config(model_type, hidden=384, layers=6, heads=12,
                                                             intermediate=1536, vocab=30522, positions=512))
    model = MultiExitModel(AutoModel.from_config(config), 2).eval().to(device)
    with torch.no_grad():
        for i, head in enumerate(model.heads):  # later exits more confident, as trained ones are
            head.classifier.weight.mul_(4.0 * (i + 1))
    rng = np.random.default_rng(seed)
    lengths = np.clip(np.round(rng.normal(26, 10, n)), 6, 64).astype(int)
    singles = []
    for t in lengths:
        ids = torch.as_tensor(rng.integers(5, 30000, (1, t)), device=device)
        singles.append({"input_ids": ids, "attention_mask": torch.ones_like(ids),
                        "token_type_ids": torch.zeros_like(ids)})
    with torch.inference_mode():
        logits = np.stack([model(**b).logits[0].float().cpu().numpy() for b in singles])
    trace = Trace("bench", "random", np.arange(n).astype(str), logits, np.zeros(n, dtype=np.int64), False)
    setting, expected = pick_setting(trace, get_policy("entropy"), n, target_time_pct)
    return model, singles, setting, expected


def families(a, device) -> None:
    """Every family at MiniLM-L6's shape: measured / ideal speed-up at batch 1, with where time goes."""
    types = FAMILY_TYPES if a.family == "all" else a.family.split(",")
    print(f"batch 1, stream ({a.rounds} rounds, blocks of {a.block}), threads {torch.get_num_threads()}, device "
          f"{' '.join(describe(device).values())}; random models of MiniLM-L6's shape, {a.examples} random sequences")
    print(f"{'family':12s} {'time%':>6s} {'ideal':>6s} {'measured':>8s} {'of ideal':>8s} {'of cw':>6s} {'oracle':>7s} "
          f"{'eng/orc':>7s} {'agree':>6s} | "
          f"{'full ms':>7s} {'engine ms':>9s} | per layer passed: layer us, head us (in a loop / after its layer), "
          f"decision us")
    print("(of cw: of the cost-weighted ideal sum(t_full) / sum(t_full * exit / L): long inputs cost more per "
          "layer, so where they exit matters; oracle: of ideal for the static model cut at each example's exit "
          "layer, the floor any engine reaches here; eng/orc: that floor over the engine's time, 1 = deciding is free)")
    for model_type in types:
        model, singles, setting, expected = random_family_setup(model_type, device, n=a.examples,
                                                                target_time_pct=a.target_time_pct)
        engine = EarlyExitEngine(model, "entropy", setting)
        warm_up(engine, singles, [])
        t, got = three_way(engine, singles, expected, a.rounds, a.block, a.estimate)
        ideal = 6 / expected.mean()
        measured, floor = t["full"].sum() / t["engine"].sum(), t["full"].sum() / t["oracle"].sum()
        layer_us, head_us, cold_us, decide_us, _ = component_costs(engine, singles)
        weighted = t["full"].sum() / (t["full"] * got / 6).sum()
        print(f"{model_type:12s} {100 * expected.mean() / 6:6.1f} {ideal:6.2f} {measured:8.2f} {measured / ideal:8.2f} "
              f"{measured / weighted:6.2f} {floor / ideal:7.2f} {t['oracle'].sum() / t['engine'].sum():7.3f} "
              f"{100 * (got == expected).mean():5.1f}% | {1000 * t['full'].mean():7.2f} {1000 * t['engine'].mean():9.2f} | "
              f"{layer_us:.0f}, {head_us:.0f} / {cold_us:.0f}, {decide_us:.0f}")


def three_way(engine, singles, expected, rounds, block, estimate: str = "median") -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Batch 1, stream: the engine, the oracle (the static model cut at each example's exit layer:
    the same layers and one head, no decisions) and the full model, block by block in rotating order;
    per contender each example's median (or min: ``estimate``) over rounds, and the engine's exits."""
    got = np.zeros(len(singles), dtype=np.int64)

    def run(i):
        got[i] = engine.run(singles[i])[0][0]

    times = stream_contenders({"engine": run, "oracle": lambda i: engine.run_to(singles[i], int(expected[i])),
                               "full": lambda i: engine.run_full(singles[i])}, len(singles), engine.device,
                              rounds, block)
    reduce = {"median": np.median, "min": np.min}[estimate]
    return {name: reduce(t, 0) for name, t in times.items()}, got


def component_costs(engine, singles, repeat: int = 200) -> tuple[float, float, float, float, int]:
    """Median microseconds at batch 1 of one encoder layer, one exit head with its weights warm (timed in a
    loop), one exit head right after its layer ran (as the engine meets it: the layer's weights have
    pushed the head's out of the CPU caches) and one exit decision (the path the engine takes)."""

    lengths = sorted((b["attention_mask"].shape[1], i) for i, b in enumerate(singles[:200]))
    b = singles[lengths[len(lengths) // 2][1]]
    with torch.inference_mode():
        hidden, ctx = engine._embed(b)
        mask = b["attention_mask"]
        logits, pooled = engine._head(1, hidden, mask, False)
        row = engine.policy.row_step

        clock = Clock(engine.device)

        def median_us(fn, before=None):
            times = []
            for _ in range(repeat):
                if before is not None:
                    before()
                times.append(clock.seconds(fn))
            return 1e6 * float(np.median(times))

        def decide():
            if row is not None:
                return row(engine.setting, 1, logits.tolist()[0])
            return engine._decide(1, logits, pooled, hidden, mask, {})

        layer = lambda: engine.family.step(engine.layers[0], 0, hidden, ctx)  # noqa: E731
        return (median_us(layer), median_us(lambda: engine._head(1, hidden, mask, False)),
                median_us(lambda: engine._head(1, hidden, mask, False), before=layer),
                median_us(decide), int(mask.shape[1]))


if __name__ == "__main__":
    main()
