"""`raylign annotate`: label pairs (or candidate lists) with a pool of annotators, as a Ray Data job.

    raylign annotate --data ../shared/data/alpaca_farm_outputs_pairs.json \
        --annotator rm:alpaca-rm-smollm2 --annotator judge:SmolLM2-135M-Instruct@pairwise \
        --output runs/annotations.jsonl [--training --noise 0.25] [--seed 0]
    raylign annotate --config my_annotate.yaml [key.sub=value ...]

Writes one JSON line per pair: the input fields plus `preference` (in [1, 2], 1 =
output_1 better; noisy with --training), `preference_clean`, `annotator`, `swapped`,
`noised` (an input `preference` is kept as `reference_preference`).
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

from raylign.config import ConfigError, build_config, load_config
from raylign.feedback.config import AnnotateConfig, AnnotatorConfig, build_annotator, check_annotators, parse_spec
from raylign.feedback.pool import PoolConfig


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raylign annotate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", "-c", help="YAML with the AnnotateConfig fields")
    parser.add_argument("--data", help="pairs or candidate lists (.jsonl[.gz], .json, .parquet)")
    parser.add_argument("--annotator", action="append", default=[], help="annotator spec, repeat for a pool "
                        "(rm:NAME, rm-http:URL, fn:MOD:FUNC, judge:MODEL[@TEMPLATE], http:URL#MODEL[@TEMPLATE])")
    parser.add_argument("--output", help="JSONL file to write")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--training", action="store_true", help="add label noise (training labels)")
    parser.add_argument("--noise", type=float, default=None, help="flip rate p of training labels (default 0.25)")
    parser.add_argument("--no-swap", action="store_true", help="show outputs in their given order")
    parser.add_argument("--no-cache", action="store_true")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--limit", type=int, default=None, help="read at most N input rows")
    parser.add_argument("--in-process", action="store_true", help="annotate in this process, not as a Ray Data job")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides of the config")
    return parser


def config_from_args(args: argparse.Namespace) -> AnnotateConfig:
    tree: dict = {}
    if args.data:
        tree["data"] = args.data
    if args.output:
        tree["output"] = args.output
    if args.annotator:
        tree["annotators"] = [parse_spec(s).model_dump() for s in args.annotator]
    pool = {k: v for k, v in (("seed", args.seed), ("noise", args.noise)) if v is not None}
    if args.training:
        pool["training"] = True
    if args.no_swap:
        pool["swap_order"] = False
    if pool:
        tree["pool"] = pool
    for key, value in (("cache", False if args.no_cache else None), ("cache_dir", args.cache_dir),
                       ("limit", args.limit), ("use_ray_data", False if args.in_process else None)):
        if value is not None:
            tree[key] = value
    if args.config:
        from raylign.config import deep_merge

        base = load_config(AnnotateConfig, args.config, args.overrides).model_dump()
        return build_config(AnnotateConfig, deep_merge(base, tree), args.config)
    if "annotators" not in tree or "data" not in tree:
        raise ConfigError("annotate needs --data and at least one --annotator (or --config)")
    from raylign.config import apply_overrides

    return build_config(AnnotateConfig, apply_overrides(tree, args.overrides), "command line")


def build_pool(config: AnnotateConfig):
    from raylign.feedback.cache import AnnotationCache

    return pool_of(config.annotators, config.pool, AnnotationCache(config.cache_dir) if config.cache else None)


def pool_of(configs: list[AnnotatorConfig], pool_config: PoolConfig | None = None, cache=None):
    """An annotator pool from annotator configs, whose names must differ (they key the cache)."""
    from raylign.feedback.pool import AnnotatorPool

    annotators = [build_annotator(a) for a in configs]
    duplicated = [n for n, c in Counter(a.name for a in annotators).items() if c > 1]
    if duplicated:
        raise ConfigError(f"annotator names must differ: {duplicated} appear twice (set name:)")
    return AnnotatorPool(annotators, pool_config, cache)


def main(argv: list[str]) -> int:
    from raylign.feedback.job import (
        annotate_rows,
        quiet_ray_data,
        read_pairs,
        write_jsonl,
    )
    from raylign.preflight import check_config
    from raylign.runtime import init_ray

    config = config_from_args(_parser().parse_args(argv))
    check_config(config)
    check_annotators(config.annotators, "annotators")
    rows = read_pairs(config.data, config.limit)
    started = time.time()
    init_ray(config.ray_address, quiet=True)
    quiet_ray_data()
    pool = build_pool(config).prepare()
    cached_before = pool.cache.count() if pool.cache else 0
    try:
        out = annotate_rows(rows, pool, config.use_ray_data, config.batch_size, config.concurrency, config.num_cpus)
    finally:
        pool.close()
    write_jsonl(out, config.output)
    prefs = [r["preference"] for r in out]
    counts = Counter(r["annotator"] for r in out)
    print(f"annotated {len(out)} pairs in {time.time() - started:.1f}s -> {config.output}")
    print(f"  output_1 preferred {sum(p < 1.5 for p in prefs)}, output_2 {sum(p > 1.5 for p in prefs)}, "
          f"ties {sum(p == 1.5 for p in prefs)}; swapped {sum(r['swapped'] for r in out)}; "
          f"noised {sum(r['noised'] for r in out)}")
    print("  per annotator: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if pool.cache:
        print(f"  newly judged {pool.cache.count() - cached_before} pairs (the rest came from the cache "
              f"{pool.cache.path} or were ties)")
    return 0
