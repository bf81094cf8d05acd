"""The shipped paper-scale recipes carry the papers' settings (each pin names the paper's words):
BERTer's L_i + J_i summed on every early-exit row, SMART on the paraphrase task alone after §3.2's trial,
CsdBERT's ablation trained where Table 5 reads it."""

from pathlib import Path

import pytest

from eebench.paths import recipes_root
from eebench.recipe_io import load_recipe

BERTER = recipes_root() / "berter" / "paper"
EARLY_EXIT_ROWS = ["early_exit", "full_smart_early_exit", "concat_early_exit", "cos_early_exit", "slf_early_exit",
                   "slf_smart_alt_early_exit", "slf_smart_alt_early_exit_cos"]
AFTER_SMART_TRIAL = ["concat_early_exit", "cos_early_exit", "slf", "slf_early_exit", "slf_concat", "slf_smart_alt",
                     "slf_smart_alt_early_exit", "slf_smart_alt_early_exit_cos"]


def _multitask(variant: str, scale: str = "paper"):
    return load_recipe(Path(recipes_root() / "berter" / scale / f"multitask_{variant}.toml"))


@pytest.mark.parametrize("variant", EARLY_EXIT_ROWS)
def test_every_berter_early_exit_row_sums_the_lte_term_over_exits(variant):
    """§3.3: "substituting L_i with L_i + J_i": J summed over the exits, on the `lte` rows as on train.lte's."""
    recipe = _multitask(variant)
    if recipe.train.strategy == "lte":
        assert recipe.train.args["lte_reduction"] == "sum"
    else:
        assert recipe.train.lte  # train.lte adds plus_lte, whose term is the sum (lte_loss_fn("sum"))


@pytest.mark.parametrize("scale", ["paper", "cpu"])
def test_berter_smart_on_paraphrase_alone_after_the_full_smart_trial(scale):
    """§3.2: "we continued to employ SMART exclusively for paraphrase detection"."""
    for variant in AFTER_SMART_TRIAL:
        tasks = {t.name: t for t in _multitask(variant, scale).tasks}
        assert tasks["quora"].smart is not None and tasks["quora"].smart.enabled, variant
        assert tasks["sst5"].smart is None and tasks["sts"].smart is None, variant
        assert not _multitask(variant, scale).train.smart.enabled, variant
    for variant in ("full_smart", "full_smart_early_exit"):  # SMART on all three tasks
        assert _multitask(variant, scale).train.smart.enabled
    for variant in ("baseline", "early_exit"):
        recipe = _multitask(variant, scale)
        assert not recipe.train.smart.enabled and all(t.smart is None for t in recipe.tasks)


def test_the_lte_terms_sum_is_the_layer_count_times_its_mean():
    import torch
    from types import SimpleNamespace

    from eebench.train.strategies.lte import lte_loss_fn

    torch.manual_seed(0)
    out = SimpleNamespace(logits=torch.randn(4, 6, 3), lte=torch.rand(4, 6))
    labels, ctx = torch.tensor([0, 1, 2, 0]), SimpleNamespace(regression=False)
    total, _ = lte_loss_fn("sum")(out, labels, ctx)
    mean, _ = lte_loss_fn("mean")(out, labels, ctx)
    assert total.item() == pytest.approx(6 * mean.item())


def test_every_maml_setting_is_a_documented_recipe_argument():
    """MetaBERT: "For the hyper-parameter settings in the meta-learning algorithm, we are consistent with the
    literature [29]" (MAML, no numbers): every setting is an argument with its reading written beside it."""
    import ast
    import inspect

    from eebench.train.strategies import metabert

    tree = ast.parse(inspect.getsource(metabert.MetaBertArgs))
    body = tree.body[0].body
    fields = [(i, node.target.id) for i, node in enumerate(body) if isinstance(node, ast.AnnAssign)]
    assert {name for _, name in fields} >= {"support_size", "query_size", "meta_batch", "inner_lr", "inner_steps",
                                            "first_order", "meta_lr", "meta_epochs"}
    for i, name in fields:
        after = body[i + 1] if i + 1 < len(body) else None
        assert isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant), f"{name} has no docstring"
    defaults = metabert.MetaBertArgs()
    assert (defaults.inner_lr, defaults.support_size, defaults.query_size, defaults.meta_lr) == (1e-3, 16, 16, None)


def test_no_table_fits_an_operating_point_on_the_split_it_scores():
    """ELUE IMDb included (CsdBERT Table 2: 5,000 dev reviews): a test column is always fitted on a dev split,
    and `reproduce` traces that split for every cell."""
    from eebench.report.tables import load_spec, spec_ids
    from eebench.reproduce import needed_splits

    for table in spec_ids():
        spec = load_spec(table)
        for name, column in spec.columns.items():
            if column.split.startswith("test"):
                assert column.calibrate_split and column.calibrate_split.startswith("dev"), (table, name)
    imdb = [(folder, split) for folder, split in needed_splits(load_spec("csdbert-elue"), "paper")
            if "elue_imdb" in folder.name]
    assert {split for _, split in imdb} == {"dev", "test"}
    for method in ("joint", "csdbert"):
        for scale in ("paper/csdbert", "compare"):
            recipe = load_recipe(recipes_root() / scale / f"elue_imdb_{method}.toml")
            assert {"dev", "test"} <= set(recipe.output.evaluate_splits)
