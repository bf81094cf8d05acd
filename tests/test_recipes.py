from pathlib import Path

import pytest

from eebench.data.tasks import get_task, task_spec
from eebench.errors import UserError
from eebench.recipe_io import load_recipe, task_recipe
from eebench.recipe_text import apply_overrides, parse_override

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").rglob("*.toml"))  # every shipped set, recursively


def test_there_are_recipes():
    names = {p.relative_to(ROOT / "recipes").as_posix() for p in RECIPES}
    assert {"quickstart.toml", "deebert_sst2.toml", "paper/romebert/sst2_romebert.toml",
            "replicate/romebert_sst2_romebert.toml"} <= names
    assert len(RECIPES) > 150


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.relative_to(ROOT / "recipes").as_posix())
def test_every_shipped_recipe_validates(path):
    from eebench.policies import POLICIES
    from eebench.train.strategies import STRATEGIES

    recipe = load_recipe(path)
    for one in [task_recipe(recipe, t.name) for t in recipe.tasks] or [recipe]:
        assert one.train.strategy in STRATEGIES
        assert one.exit.policy in POLICIES
        assert POLICIES[one.exit.policy].serves(task_spec(one.task).is_regression)


def test_regression_task_refuses_entropy_and_defaults_to_patience(tmp_path):
    path = _write(tmp_path, '[task]\nname = "stsb"\n[exit]\npolicy = "entropy"\n')
    with pytest.raises(UserError) as err:
        load_recipe(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: exit.policy: task stsb: exit policy 'entropy' does not apply to regression tasks")
    from eebench.policies import POLICIES

    serving = ", ".join(p.name for p in POLICIES.values() if p.serves(True))  # from the registry
    assert msg.endswith(f"use one of: {serving}") and "\n" not in msg
    assert load_recipe(_write(tmp_path, '[task]\nname = "stsb"\n')).exit.policy == "patience"
    assert load_recipe(_write(tmp_path, '[task]\nname = "sst2"\n')).exit.policy == "entropy"


def _write(tmp_path, text):
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


def test_unknown_key_names_file_and_key(tmp_path):
    path = _write(tmp_path, "[train]\nlrr = 1e-3\n")
    with pytest.raises(UserError) as err:
        load_recipe(path)
    msg = str(err.value)
    assert str(path) in msg and "train.lrr" in msg and "allowed keys" in msg and "lr" in msg
    assert "\n" not in msg


def test_wrong_type_names_key(tmp_path):
    path = _write(tmp_path, '[train]\nbatch_size = "big"\n')
    with pytest.raises(UserError, match=r"train\.batch_size"):
        load_recipe(path)


def test_unknown_strategy_and_strategy_args(tmp_path):
    with pytest.raises(UserError, match="unknown strategy 'nope'"):
        load_recipe(_write(tmp_path, '[train]\nstrategy = "nope"\n'))
    with pytest.raises(UserError, match=r"args\.stage3_lr: not an argument of strategy 'two_stage'"):
        load_recipe(_write(tmp_path, "[train]\nargs = { stage3_lr = 1.0 }\n"))


def test_unknown_policy(tmp_path):
    with pytest.raises(UserError, match="unknown exit policy"):
        load_recipe(_write(tmp_path, '[exit]\npolicy = "coin_flip"\n'))


def test_missing_recipe_and_bad_toml(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_recipe(tmp_path / "missing.toml")
    with pytest.raises(UserError, match="not valid TOML"):
        load_recipe(_write(tmp_path, "[train\n"))


def test_overrides_are_typed_and_validated(tmp_path):
    path = _write(tmp_path, "[train]\nlr = 1e-3\n")
    recipe = load_recipe(path, ["train.lr=3e-5", "train.args.stage2_lr=0.001", "task.name=rte"])
    assert recipe.train.lr == 3e-5 and recipe.train.args == {"stage2_lr": 0.001}
    assert recipe.task.name == "rte"
    with pytest.raises(UserError, match="train.nope"):
        load_recipe(path, ["train.nope=1"])
    with pytest.raises(UserError, match="expected section.key=value"):
        parse_override("train.lr")
    assert parse_override("exit.grid=[0, 0.1]") == (["exit", "grid"], [0, 0.1])
    assert apply_overrides({}, ["a.b=true"]) == {"a": {"b": True}}


def test_what_a_policy_needs_from_the_model_is_checked_before_training(tmp_path):
    """A multitask regression task exits by its LTE head only when the model has one (else patience);
    an LTE policy set on a model without the head is refused when the recipe loads, not hours later."""
    base = """[model]\nsource = "random"\nname = "bert"\n[[tasks]]\nname = "sst5"\n[[tasks]]\nname = "sts"\n{extra}
[train]\nstrategy = "{strategy}"\n{lte}\n"""
    path = tmp_path / "r.toml"
    path.write_text(base.format(extra="", strategy="finetune", lte=""))
    assert task_recipe(load_recipe(path), "sts").exit.policy == "patience"  # no LTE head: patience
    path.write_text(base.format(extra="", strategy="joint", lte="lte = true"))
    assert task_recipe(load_recipe(path), "sts").exit.policy == "lte"
    path.write_text(base.format(extra='policy = "lte"', strategy="finetune", lte=""))
    with pytest.raises(UserError, match=r"tasks.1 \(sts\).policy: exit policy 'lte' reads the LTE head.*train.lte = true"):
        load_recipe(path)
    single = tmp_path / "s.toml"
    single.write_text('[model]\nsource = "random"\nname = "bert"\n[task]\nname = "sst2"\n[train]\n'
                      'strategy = "two_stage"\n[exit]\npolicy = "lte"\ntarget_time_pct = 50\n')
    with pytest.raises(UserError, match=r"exit.policy: exit policy 'lte' reads the LTE head"):
        load_recipe(single)
