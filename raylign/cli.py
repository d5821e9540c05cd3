"""`raylign` command line: one entry point, subcommands that each own their arguments.

Subcommands are listed here (the `train` ones come from the method registry,
`raylign.launch.methods`) and imported only when used, so `raylign --help` stays fast and a
missing GPU package never breaks an unrelated command.
"""

from __future__ import annotations

import importlib
import signal
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    words: tuple[str, ...]
    target: str  # "module:function"; the function takes the remaining argv (after `bound`)
    help: str
    bound: tuple[str, ...] = ()  # leading arguments it is called with (the method of `train <name>`)


# (words, "module:function", help), grouped as `raylign --help` prints them; `train` from the registry
OTHER_COMMANDS: list[tuple[tuple[str, ...], str, str]] = [
    (("smoke",), "raylign.smoke:main", "start Ray, load a model in a sampler actor and generate"),
    (("generate", "best-of-n"), "raylign.generation.cli:best_of_n", "best-of-n batch inference (n samples, reward argmax) to AlpacaEval outputs"),
    (("generate", "outputs"), "raylign.generation.cli:outputs", "one response per prompt to AlpacaEval outputs (for the leaderboard)"),
    (("generate", "samples"), "raylign.generation.cli:samples", "n responses per prompt as AlpacaFarm multi-sample lists (to annotate)"),
    (("annotate",), "raylign.feedback.cli:main", "label pairs with a pool of annotators (reward models, LLM judges)"),
    (("annotate", "rank"), "raylign.feedback.rank:main", "rank k responses per prompt from several sources by an annotator (offline RRHF's files)"),
    (("annotate", "hack-pairs"), "raylign.feedback.hack_pairs:main", "a policy's top-scored samples the hack rules flag, as rejected pairs for `train rm`"),
    (("annotate", "judgments"), "raylign.feedback.judgments:main", "write CUT judgments of outputs with an LLM judge (sampler actors or an HTTP endpoint)"),
    (("synth", "almost"), "raylign.feedback.almost:main", "ALMoST synthetic comparisons: generated prompts, rubric-ranked responses"),
    (("study", "alpacafarm"), "raylign.studies.alpacafarm:main", "AlpacaFarm's simulated study: SFT, annotators, RM, every method, leaderboards (resumable)"),
    (("study", "almost"), "raylign.studies.almost:main", "ALMoST's chain: synthetic comparisons, RM, RMSP demonstrations, SFT, RL, evaluation (resumable)"),
    (("study", "cut-online"), "raylign.studies.cut_online:main", "CUT online: answer, judge in words, train on the judgments, repeat (resumable by iteration)"),
    (("eval", "compare"), "raylign.evaluation.alignment_report:main", "held-out reward, reference PPL and win rate vs the start policy"),
    (("eval", "rejudge"), "raylign.evaluation.alignment_report:rejudge_main", "a saved compare report's win rates under another judge"),
    (("eval", "policy"), "raylign.evaluation.policy_eval:main", "policy: held-out reward, reference perplexity, DPO pair accuracy"),
    (("eval", "rm"), "raylign.evaluation.reward_model_eval:main", "evaluate a reward model on pairwise data"),
    (("eval", "hacks"), "raylign.evaluation.hacks:main", "how often a reward model prefers rule-made hacks to the good answer, per family"),
    (("eval", "cut"), "raylign.evaluation.cut_eval:main", "CUT: held-out judged-bad token probability before vs after"),
    (("eval", "judges"), "raylign.evaluation.judge_agreement:main", "agreement of pairwise annotators with reference judgments"),
    (("eval", "leaderboard"), "raylign.evaluation.leaderboard_cli:main", "AlpacaEval win rates (LC too) from annotations or outputs"),
    (("eval", "fluency"), "raylign.evaluation.fluency:main", "reference perplexity of AlpacaEval outputs files (fluency beside a win rate)"),
    (("eval", "verifiable"), "raylign.evaluation.verifiable:main", "held-out accuracy on problems with checkable answers (pass@1, pass@k)"),
    (("serve", "rm"), "raylign.serving.reward_app:main", "serve a reward model over HTTP with Ray Serve"),
    (("bench",), "raylign.benchmarks.suite:main", "the whole benchmark suite (every part, machine, runs/bench/)"),
    (("bench", "all"), "raylign.benchmarks.suite:main", "same as `raylign bench`"),
    (("bench", "engine"), "raylign.benchmarks.engine_bench:main", "benchmark sampling, streaming overlap and weight sync"),
    (("bench", "sampling"), "raylign.benchmarks.sampling_bench:main", "sampler actors vs raw vLLM vs transformers generate"),
    (("bench", "sync"), "raylign.benchmarks.sync_bench:main", "weight-sync seconds and GB/s per transport and model size"),
    (("bench", "loop"), "raylign.benchmarks.loop_bench:main", "online GRPO seconds per iteration vs TRL's GRPOTrainer"),
    (("bench", "train"), "raylign.benchmarks.train_bench:main", "offline trainer throughput (RM, DPO, SFT) vs TRL"),
    (("bench", "serve"), "raylign.benchmarks.serve_bench:main", "load test of the reward endpoint (1 and 2 replicas)"),
    (("bench", "ensemble"), "raylign.benchmarks.ensemble_bench:main", "reward-model ensemble: shared frozen trunk vs every member in full"),
    (("bench", "corpus"), "raylign.benchmarks.corpus_bench:main", "driver memory of the prompt stream: small vs 10M-prompt corpus"),
    (("bench", "project"), "raylign.benchmarks.projection:main", "projected iteration time of a 7B policy on 8 and 32 GPUs"),
    (("model", "prepare"), "raylign.models.cli:prepare", "convert the default model, build a shipped reward model, or check a local one"),
    (("model", "shrink"), "raylign.models.cli:shrink", "a smaller model: the bottom N blocks of a larger one (ALMoST's smaller generator)"),
    (("data", "check"), "raylign.data.cli:check", "read a data file through an adapter and report"),
    (("data", "arithmetic"), "raylign.data.cli:arithmetic", "integer-arithmetic problems with answers (train / test)"),
]

# `raylign --help` order: the groups, each with its commands in table order
GROUPS = ["smoke", "train", "generate", "annotate", "synth", "study", "eval", "serve", "bench", "model", "data"]


def commands() -> list[Command]:
    """Every command: the table above plus one `train <name>` per registered method."""
    from raylign.launch.methods import METHODS

    table = [Command(words, target, text) for words, target, text in OTHER_COMMANDS]
    table += [Command(("train", m.name), "raylign.launch.train:main", f"{m.help} ({m.family})", (m.name,))
              for m in METHODS]
    return sorted(table, key=lambda c: GROUPS.index(c.words[0]))  # stable: table order within a group


def usage() -> str:
    lines = ["usage: raylign <command> [args...]", ""]
    group = None
    for command in commands():
        if command.words[0] != group:
            group = command.words[0]
            lines.append(f"{group}:")
        lines.append(f"  {' '.join(command.words):<20} {command.help}")
    lines += ["", "Run `raylign <command> --help` for a command's options."]
    return "\n".join(lines)


def find(argv: list[str]) -> Command | None:
    for command in sorted(commands(), key=lambda c: -len(c.words)):
        if tuple(argv[: len(command.words)]) == command.words:
            return command
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command = find(argv)
    if command is None:
        print(f"raylign: unknown command '{' '.join(argv[:2])}' (commands: {', '.join(GROUPS)})\n", file=sys.stderr)
        print(usage(), file=sys.stderr)
        return 2
    module_name, func_name = command.target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    from raylign.config import ConfigError
    from raylign.data.readers import DataError
    from raylign.models.local import ModelNotFoundError

    name = " ".join(command.words)
    # SIGTERM (a scheduler, `kill`, `ray job stop`) unwinds like Ctrl-C, so runs close their
    # logs and actors on the way out; commands may install their own handler (serve).
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return int(func([*command.bound, *argv[len(command.words):]]) or 0)
    except (ConfigError, DataError, ModelNotFoundError) as err:
        print(f"raylign {name}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nraylign {name}: interrupted. A training run continues from its last resumable "
              "checkpoint (<output_dir>/latest, every save_every steps) with engine.resume=true.", file=sys.stderr)
        return 130


def _interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
