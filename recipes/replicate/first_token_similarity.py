"""How much a backbone's exit inputs differ between sentences: the mean pairwise cosine similarity,
over dev examples, of the first-token vector (what a first-token exit head reads) and of the
mean-pooled vector, at every layer. A recipe measures its pre-trained backbone; a run folder measures
that run's fine-tuned one. Inputs are encoded as training encodes them (the recipe's max_length and
pair_input). A first-token similarity of 1.0000 means every sentence gives the same vector at that
layer, so its exit head has nothing to separate
(docs/replication.md, "Why the early exits stay at the majority class").

    python recipes/replicate/first_token_similarity.py recipes/replicate/romebert_sst2_two_stage.toml \
        [--examples 64] [--data-root DIR]
    python recipes/replicate/first_token_similarity.py results/rep_romebert_sst2_two_stage-seed1
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

from eebench.data.encode import encode_in_memory
from eebench.data.load import load_split
from eebench.data.tasks import get_task
from eebench.errors import UserError
from eebench.model.build import build_backbone, build_tokenizer, load_model
from eebench.recipe_io import load_recipe
from eebench.rundir import open_run


def mean_pairwise_cosine(x: torch.Tensor) -> float:
    """Mean cosine similarity over all pairs of distinct rows. x Shape: [N, H]."""
    x = F.normalize(x, dim=-1)
    sim = x @ x.T
    n = sim.shape[0]
    return float((sim.sum() - sim.diagonal().sum()) / (n * n - n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", help="a recipe (its pre-trained backbone) or a run folder (its trained one)")
    parser.add_argument("--examples", type=int, default=64, help="dev examples compared pairwise (at least 2)")
    parser.add_argument("--data-root", help="the data folder (default: $EEBENCH_DATA)")
    args = parser.parse_args()
    if args.examples < 2:
        parser.error("--examples must be at least 2 (similarity is measured between pairs)")
    if args.data_root:
        os.environ["EEBENCH_DATA"] = args.data_root
    trained = os.path.isdir(args.recipe)
    recipe = open_run(args.recipe).recipe if trained else load_recipe(args.recipe)
    dev = load_split(get_task(recipe.task.name), recipe.task, "dev")
    n = min(args.examples, len(dev))
    if trained:
        model, tokenizer, _ = load_model(os.path.join(args.recipe, "model"))
        backbone = model.backbone
    else:
        tokenizer, backbone = build_tokenizer(recipe.model), build_backbone(recipe.model)
    data = encode_in_memory(tokenizer, dev.subset(range(n)), recipe.train.max_length, recipe.model.pair_input)
    batch = data.collate([data[i] for i in range(n)])
    batch.pop("labels", None), batch.pop("index")
    backbone.eval()
    with torch.no_grad():
        hidden = backbone(**batch, output_hidden_states=True).hidden_states[1:]
    mask = batch["attention_mask"][..., None].float()
    source = args.recipe if trained else recipe.model.name
    print(f"{source} on {n} {recipe.task.name} dev examples: mean pairwise cosine similarity")
    print("| layer | first token | mean-pooled |")
    print("|---|---|---|")
    for layer, h in enumerate(hidden, 1):
        pooled = (h * mask).sum(1) / mask.sum(1)
        print(f"| {layer} | {mean_pairwise_cosine(h[:, 0]):.4f} | {mean_pairwise_cosine(pooled):.4f} |")


if __name__ == "__main__":
    try:
        main()
    except UserError as err:  # a missing data file or model: one line and exit code 2, as eebench's commands
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
