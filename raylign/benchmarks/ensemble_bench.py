"""`raylign bench ensemble`: a k-member reward-model ensemble, shared trunk vs member by member.

Scores the same held-out HH pairs, and runs the same training steps (forward + backward of
`EnsemblePairScorer`), once with the members' shared frozen lower blocks run once
(`raylign.scoring.shared_trunk`) and once with every member run in full, alternating the two
`--repeats` times in one process; prints seconds per pass, the ratio and the largest score
difference (which must be ~0: the two are the same computation).

    raylign bench ensemble --model runs/rm_hh_ensemble [--pairs 96] [--repeats 3]

Without a trained ensemble, `--model hh-rm-smollm2 --members 3 --top-layers 3` builds one in
memory from a single reward model whose top blocks and head are perturbed per member.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from raylign.benchmarks.report import describe_machine, format_machine, format_table


def _ensemble(args):
    import torch

    from raylign.scoring.base import EnsembleSettings
    from raylign.scoring.ensemble import EnsembleScorer, is_ensemble_dir, load_scorer
    from raylign.scoring.reward_model import RewardScorer

    if is_ensemble_dir(args.model):
        return load_scorer(args.model, batch_size=args.batch_size)
    members = [RewardScorer(args.model, max_length=args.max_length, batch_size=args.batch_size) for _ in range(args.members)]
    for seed, member in enumerate(members[1:], start=1):
        torch.manual_seed(seed)
        with torch.no_grad():
            for block in member.model.model.layers[-args.top_layers:]:
                for param in block.parameters():
                    param.add_(0.01 * torch.randn_like(param))
    return EnsembleScorer(members, EnsembleSettings(aggregate="mean"), f"{args.model} x{args.members}")


def _timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def main(argv: list[str]) -> int:
    import torch

    from raylign.algorithms.reward_model import EnsemblePairScorer, RewardEnsembleModule
    from raylign.data.adapters import load_rows
    from raylign.data.splits import select_split
    from raylign.models.trainable import LoraSettings, make_trainable
    from raylign.scoring.reward_model import pad_batch

    parser = argparse.ArgumentParser(prog="raylign bench ensemble", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="runs/rm_hh_ensemble", help="an ensemble directory, or one RM to copy")
    parser.add_argument("--members", type=int, default=3, help="copies, when --model is one RM")
    parser.add_argument("--top-layers", type=int, default=3, help="blocks the copies differ in (and training trains)")
    parser.add_argument("--data", default="../shared/data/hh_rlhf_harmless.jsonl.gz")
    parser.add_argument("--pairs", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=320)
    parser.add_argument("--train-steps", type=int, default=4, help="training steps timed per repeat (batch 8 pairs)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default="runs/bench/ensemble.json")
    args = parser.parse_args(argv)

    rows = select_split(load_rows(args.data, "preference", "auto", None, "skip"), "test", 0.2, 0.1, 0)[: args.pairs]
    scorer = _ensemble(args)
    sequences = [scorer.encode(r["messages"], r["chosen"]) for r in rows]
    trunk = scorer.shared_trunk()
    if trunk is None:
        raise SystemExit(f"{args.model}: the members share no frozen lower blocks, nothing to compare")
    member_by_member = lambda: torch.tensor([m.score_ids([s[i] for s in sequences])  # noqa: E731
                                             for i, m in enumerate(scorer.members)], dtype=torch.float64).T
    shared_once = lambda: trunk.member_scores([s[0] for s in sequences])  # noqa: E731
    results = {"shared": [], "full": []}
    for _ in range(args.repeats):
        for name, fn in (("shared", shared_once), ("full", member_by_member)):
            seconds, scores = _timed(fn)
            results[name].append(seconds)
            results[f"{name}_scores"] = scores
    max_diff = float((results["shared_scores"] - results["full_scores"]).abs().max())

    models = [m.model for m in scorer.members]
    ensemble = make_trainable(RewardEnsembleModule(models), "top_layers", args.top_layers, LoraSettings())
    ensemble.train()
    batches = [pad_batch([s[0] for s in sequences[i : i + 16]], models[0].config.pad_token_id)
               for i in range(0, 16 * args.train_steps, 16)]

    def train_steps(module):
        for ids, mask in batches:
            module(ids, mask).sum().backward()
        ensemble.zero_grad(set_to_none=True)

    shared_module, full_module = EnsemblePairScorer(ensemble), EnsemblePairScorer(ensemble)
    full_module._trunk = False  # every member in full, as before the shared trunk
    train = {"shared": [], "full": []}
    for _ in range(args.repeats):
        train["shared"].append(_timed(lambda: train_steps(shared_module))[0])
        train["full"].append(_timed(lambda: train_steps(full_module))[0])
    assert shared_module._trunk, "the training module did not find the frozen trunk"

    machine = describe_machine()
    med = {k: statistics.median(v) for k, v in results.items() if not k.endswith("_scores")}
    tmed = {k: statistics.median(v) for k, v in train.items()}
    print(format_machine(machine))
    print(f"{scorer.model_path}: {len(scorer.members)} members, {len(trunk.trunk.layers)} shared blocks + "
          f"{len(trunk.tops[0][0].layers)} own; {len(sequences)} HH test pairs, median of {args.repeats}")
    print(format_table(["pass", "member by member (s)", "shared trunk (s)", "speed-up"], [
        [f"score {len(sequences)} pairs", f"{med['full']:.2f}", f"{med['shared']:.2f}", f"{med['full'] / med['shared']:.2f}x"],
        [f"train {args.train_steps} steps of 16", f"{tmed['full']:.2f}", f"{tmed['shared']:.2f}",
         f"{tmed['full'] / tmed['shared']:.2f}x"],
    ]))
    print(f"largest score difference between the two: {max_diff:.2e}")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "model": str(scorer.model_path), "members": len(scorer.members),
                               "pairs": len(sequences), "score_seconds": {k: results[k] for k in ("shared", "full")},
                               "train_seconds": train, "max_score_difference": max_diff}, indent=1))
    print(f"wrote {out}")
    return 0 if max_diff < 1e-3 else 1
