"""`raylign` command line: one entry point, subcommands that each own their arguments.

Subcommands are listed here and imported only when used, so `raylign --help`
stays fast and a missing GPU package never breaks an unrelated command.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys

# (words, "module:function", help). The function receives the remaining argv.
COMMANDS: list[tuple[tuple[str, ...], str, str]] = [
    (("smoke",), "raylign.smoke:main", "start Ray, load a model in a sampler actor and generate"),
    (("train", "rrhf"), "raylign.algorithms.rrhf_job:main", "RRHF on the distributed RLHF engine"),
    (("train", "ppo"), "raylign.algorithms.ppo_job:main", "PPO (policy, reference, reward, value) on the engine"),
    (("train", "grpo"), "raylign.algorithms.grpo_job:main", "GRPO / RLOO (group-relative advantages, no critic)"),
    (("train", "raft"), "raylign.algorithms.raft_job:main", "RAFT / expert iteration: sample K, keep the best, fine-tune"),
    (("train", "online-dpo"), "raylign.algorithms.online_dpo_job:main", "online DPO on best-vs-worst sampled pairs"),
    (("train", "quark"), "raylign.algorithms.quark_job:main", "Quark: reward-quantile control tokens + KL"),
    (("train", "rm"), "raylign.training.reward_model_job:main", "train a pairwise (Bradley-Terry) reward model"),
    (("train", "sft"), "raylign.training.sft:main", "supervised fine-tuning on instruction data (offline trainer)"),
    (("train", "dpo"), "raylign.training.dpo:main", "DPO / IPO / conservative DPO on preference pairs (offline trainer)"),
    (("bench", "train"), "raylign.benchmarks.train_bench:main", "offline trainer throughput (RM, DPO, SFT) vs TRL"),
    (("train", "cut"), "raylign.training.cut_objective:main", "CUT: contrastive unlikelihood on judgments, LoRA"),
    (("eval", "rm"), "raylign.evaluation.reward_model_eval:main", "evaluate a reward model on pairwise data"),
    (("eval", "compare"), "raylign.evaluation.alignment_report:main", "held-out reward, reference PPL and win rate vs the start policy"),
    (("eval", "policy"), "raylign.evaluation.policy_eval:main", "policy: held-out reward, reference perplexity, DPO pair accuracy"),
    (("eval", "cut"), "raylign.evaluation.cut_eval:main", "CUT: held-out judged-bad token probability before vs after"),
    (("eval", "rejudge"), "raylign.evaluation.alignment_report:rejudge_main", "a saved compare report's win rates under another judge"),
    (("eval", "judges"), "raylign.evaluation.judge_agreement:main", "agreement of pairwise annotators with reference judgments"),
    (("annotate",), "raylign.feedback.cli:main", "label pairs with a pool of annotators (reward models, LLM judges)"),
    (("eval", "fluency"), "raylign.evaluation.fluency:main", "reference perplexity of AlpacaEval outputs files (fluency beside a win rate)"),
    (("eval", "leaderboard"), "raylign.evaluation.leaderboard_cli:main", "AlpacaEval win rates (LC too) from annotations or outputs"),
    (("generate", "best-of-n"), "raylign.generation.cli:best_of_n", "best-of-n batch inference (n samples, reward argmax) to AlpacaEval outputs"),
    (("generate", "outputs"), "raylign.generation.cli:outputs", "one response per prompt to AlpacaEval outputs (for the leaderboard)"),
    (("generate", "samples"), "raylign.generation.cli:samples", "n responses per prompt as AlpacaFarm multi-sample lists (to annotate)"),
    (("synth", "almost"), "raylign.feedback.almost:main", "ALMoST synthetic comparisons: generated prompts, rubric-ranked responses"),
    (("serve", "rm"), "raylign.serving.reward_app:main", "serve a reward model over HTTP with Ray Serve"),
    (("bench", "engine"), "raylign.benchmarks.engine_bench:main", "benchmark sampling, streaming overlap and weight sync"),
    (("bench", "serve"), "raylign.benchmarks.serve_bench:main", "load test of the reward endpoint (1 and 2 replicas)"),
    (("bench", "corpus"), "raylign.benchmarks.corpus_bench:main", "driver memory of the prompt stream: small vs 10M-prompt corpus"),
    (("bench", "loop"), "raylign.benchmarks.loop_bench:main", "online GRPO seconds per iteration vs TRL's GRPOTrainer"),
    (("bench",), "raylign.benchmarks.suite:main", "the whole benchmark suite (every part, machine, runs/bench/)"),
    (("bench", "all"), "raylign.benchmarks.suite:main", "same as `raylign bench`"),
    (("bench", "sampling"), "raylign.benchmarks.sampling_bench:main", "sampler actors vs raw vLLM vs transformers generate"),
    (("bench", "sync"), "raylign.benchmarks.sync_bench:main", "weight-sync seconds and GB/s per transport and model size"),
    (("bench", "project"), "raylign.benchmarks.projection:main", "projected iteration time of a 7B policy on 8 and 32 GPUs"),
    (("model", "prepare"), "raylign.models.cli:prepare", "convert the default model (or check a local one)"),
    (("data", "check"), "raylign.data.cli:check", "read a data file through an adapter and report"),
]


def _usage() -> str:
    lines = ["usage: raylign <command> [args...]", "", "commands:"]
    for words, _, text in COMMANDS:
        lines.append(f"  {' '.join(words):<20} {text}")
    lines += ["", "Run `raylign <command> --help` for a command's options."]
    return "\n".join(lines)


def _find(argv: list[str]):
    for words, target, _ in sorted(COMMANDS, key=lambda c: -len(c[0])):
        if tuple(argv[: len(words)]) == words:
            return words, target
    return None, None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    words, target = _find(argv)
    if target is None:
        groups = sorted({w[0] for w, _, _ in COMMANDS})
        print(f"raylign: unknown command '{' '.join(argv[:2])}' (commands: {', '.join(groups)})\n", file=sys.stderr)
        print(_usage(), file=sys.stderr)
        return 2
    module_name, func_name = target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    from raylign.config import ConfigError
    from raylign.data.readers import DataError
    from raylign.models.local import ModelNotFoundError

    # SIGTERM (a scheduler, `kill`, `ray job stop`) unwinds like Ctrl-C, so runs close their
    # logs and actors on the way out; commands may install their own handler (serve).
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return int(func(argv[len(words) :]) or 0)
    except (ConfigError, DataError, ModelNotFoundError) as err:
        print(f"raylign {' '.join(words)}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nraylign {' '.join(words)}: interrupted. A training run continues from its last resumable "
              "checkpoint (<output_dir>/latest, every save_every steps) with engine.resume=true.", file=sys.stderr)
        return 130


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def recipe_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The shared shape of recipe commands: --config FILE plus key.sub=value overrides."""
    parser = argparse.ArgumentParser(prog=f"raylign {prog}", description=description)
    parser.add_argument("--config", "-c", help="recipe YAML (see jobs/)")
    parser.add_argument("overrides", nargs="*", help="overrides such as sampling.num_samples=4")
    return parser



def run_recipe(argv: list[str], prog: str, description: str, config_cls, run):
    """The shared body of recipe commands: parse, load and validate the recipe, print it, run it."""
    from raylign.config import dump_config, load_config

    args = recipe_parser(prog, description).parse_args(argv)
    config = load_config(config_cls, args.config, args.overrides)
    print(dump_config(config), flush=True)
    return run(config)

if __name__ == "__main__":
    sys.exit(main())
