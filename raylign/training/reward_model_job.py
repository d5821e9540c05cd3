"""`raylign train rm`: read and split preference pairs, train on a Ray Train worker group,
copy the HF checkpoint out, optionally export the compact weight delta.

    raylign train rm --config jobs/rm_hh.yaml [key.sub=value ...]
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from raylign.config import dump_config, load_config
from raylign.data.readers import DataError
from raylign.training.reward_model_config import RewardTrainConfig
from raylign.training.reward_model_data import load_pair_rows, split_of, tokenize_pairs


def prepare_pairs(config: RewardTrainConfig, tokenizer) -> dict:
    """Tokenized train / validation / test pairs, with counts for the report."""
    data = config.data
    rows = load_pair_rows(data.path, data.format, data.limit, data.on_error)
    test_fraction = 0.0 if data.test_path else data.test_fraction
    split: dict[str, list[dict]] = {"train": [], "validation": [], "test": []}
    for row in rows:
        split[split_of(row["prompt_id"], test_fraction, data.validation_fraction, data.split_seed)].append(row)
    if data.test_path:
        split["test"] = load_pair_rows(data.test_path, data.format, None, data.on_error)
    result, counts = {}, {}
    for name, part in split.items():
        pairs, dropped = tokenize_pairs(tokenizer, part, data.max_length, data.over_long)
        result[name] = pairs
        counts[name] = {"pairs": len(pairs), "dropped_over_long": dropped}
    if not result["train"]:
        raise DataError(f"{data.path}: no training pairs left after the split and length filter")
    return {"pairs": result, "counts": counts}


def run(config: RewardTrainConfig) -> dict:
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from raylign.models.chat import load_tokenizer
    from raylign.models.registry import resolve_model
    from raylign.runtime import init_ray
    from raylign.training.reward_model_trainer import train_loop_per_worker

    started = time.time()
    model_path = resolve_model(config.model)
    output_dir = Path(config.output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "recipe.yaml").write_text(dump_config(config))
    prepared = prepare_pairs(config, load_tokenizer(str(model_path)))
    print(f"[rm] pairs: {json.dumps(prepared['counts'])}", flush=True)

    init_ray(config.ray_address)
    pairs_ref = ray.put(prepared["pairs"])
    storage = output_dir / ".ray_train"
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "config": config.model_dump(mode="json"),
            "pairs_ref": pairs_ref,
            "model_path": str(model_path),
            "output_dir": str(output_dir),
        },
        torch_config=TorchConfig(backend="nccl" if config.use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=config.num_workers,
            use_gpu=config.use_gpu,
            resources_per_worker={"CPU": config.cpus_per_worker, **({"GPU": 1} if config.use_gpu else {})},
        ),
        run_config=RunConfig(name=f"rm-{int(started)}", storage_path=str(storage)),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"reward-model training produced no checkpoint (error: {result.error})")
    result.checkpoint.to_directory(str(output_dir))
    shutil.rmtree(storage, ignore_errors=True)
    summary = {**(result.metrics or {}), "counts": prepared["counts"], "wall_seconds": round(time.time() - started, 1),
               "model_dir": str(output_dir)}
    if config.export_delta:
        from raylign.scoring.assets import export_delta

        export_delta(output_dir, model_path, Path(config.export_delta), config.data.max_length, config.model)
        summary["delta"] = config.export_delta
    (output_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))
    print(f"[rm] done: {json.dumps(summary)}", flush=True)
    return summary


def main(argv: list[str]) -> int:
    from raylign.cli import recipe_parser

    parser = recipe_parser("train rm", "Train a pairwise (Bradley-Terry) reward model on Ray Train.")
    args = parser.parse_args(argv)
    config = load_config(RewardTrainConfig, args.config, args.overrides)
    print(dump_config(config), flush=True)
    run(config)
    return 0
