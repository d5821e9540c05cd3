"""`raylign study almost`: ALMoST's chain, aligning with no human label, as one resumable Ray job.

    raylign study almost --config jobs/study/almost_study.yaml [--plan] [key.sub=value ...]

Stages (outputs kept under `output_dir`; a rerun starts at the first stage not done):
  comparisons (`synth almost`: synthetic prompts, responses from ranked generator configurations,
  the rubric's pairs; its `comparisons_responses.jsonl` holds each synthetic prompt once) -> rm (a reward model on them) -> rm_human (its accuracy on the human HH
  test pairs, which it never saw) -> rmsp (Reward-Model-guided Self-Play: n samples per synthetic
  prompt, the reward model's best, as a Ray Data job) -> sft (on those demonstrations) -> rl (GRPO
  or PPO from the SFT model against the synthetic reward model) -> compare (held-out HH prompts:
  the synthetic RM's reward, and the win rate against the start under a judge trained on human
  labels, not the synthetic RM) -> table (study.md).
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field

from raylign.config import InputPath, ModelName, OutputDir, StrictModel
from raylign.studies.cli import resuming, study_main
from raylign.studies.stages import Stage, StageRecipe, command


class AlmostStudy(StrictModel):
    model: ModelName = "SmolLM2-135M-Instruct"
    output_dir: OutputDir = "runs/almost_study"
    comparisons: StageRecipe  # `synth almost`
    reward_model: StageRecipe  # `train rm` on the comparisons
    rmsp: StageRecipe  # `generate best-of-n` with the synthetic RM on the synthetic prompts
    rmsp_n: int = Field(4, ge=2)
    sft: StageRecipe
    rl: StageRecipe  # an online recipe (grpo_*, ppo_*): its method comes from `rl_method`
    rl_method: str = "grpo"
    human_pairs: InputPath = "../shared/data/hh_rlhf_harmless.jsonl.gz"  # held-out HH: RM accuracy, eval prompts
    eval_limit: int = Field(64, ge=1)
    judge: str = "rm:hh-rm-smollm2"  # trained on human HH labels: shares nothing with the synthetic RM
    ray_address: str | None = None


def plan(config: AlmostStudy) -> list[Stage]:
    root = Path(config.output_dir)
    comparisons, rm, sft, rl = root / "comparisons.jsonl", root / "rm", root / "sft", root / "rl"

    def train(name: str, argv: list[str], output: Path) -> Stage:
        return Stage(name, command(*argv), (output,), {"argv": argv})

    rl_argv = ["train", config.rl_method, "--config", config.rl.recipe, *config.rl.overrides, f"model={sft}",
               f"data.path={config.human_pairs}", "data.kind=prompt", "data.split=train", "reward.kind=actor",
               f"reward.model={rm}", f"engine.output_dir={rl}"]
    compare_argv = ["eval", "compare", f"start={config.model}", f"sft={sft}", f"{config.rl_method}={rl / 'final'}",
                    "--data", config.human_pairs, "--split", "test", "--limit", str(config.eval_limit),
                    "--reward-model", str(rm), "--judge", config.judge, "--output", str(root / "compare.json")]
    human_argv = ["eval", "rm", "--model", str(rm), "--data", config.human_pairs, "--on-error", "skip",
                  "--split", "test", "--output", str(root / "rm_human.json")]
    return [
        train("comparisons", ["synth", "almost", "--config", config.comparisons.recipe, *config.comparisons.overrides,
                              f"model={config.model}", f"output={comparisons}"], comparisons),
        train("rm", ["train", "rm", "--config", config.reward_model.recipe, *config.reward_model.overrides,
                     f"model={config.model}", f"data.path={comparisons}", "data.format=generic",
                     f"output_dir={rm}", "rm.export_delta=null"], rm / "config.json"),
        train("rm_human", human_argv, root / "rm_human.json"),
        train("rmsp", ["generate", "best-of-n", "--config", config.rmsp.recipe, *config.rmsp.overrides,
                       f"model={config.model}", f"data.path={root / 'comparisons_responses.jsonl'}", "data.split=all",
                       "data.limit=null", "data.format=generic",
                       f"sampling.num_samples={config.rmsp_n}", f"reward.model={rm}", "generator=rmsp",
                       f"output={root / 'rmsp.json'}"], root / "rmsp.json"),
        train("sft", ["train", "sft", "--config", config.sft.recipe, *config.sft.overrides, f"model={config.model}",
                      f"data.path={root / 'rmsp.json'}", "data.format=alpaca", f"output_dir={sft}"], sft / "config.json"),
        Stage("rl", resuming(rl_argv, rl), (rl / "final" / "config.json",), {"argv": rl_argv}),
        train("compare", compare_argv, root / "compare.json"),
        Stage("table", lambda: {"table": write_table(root)}, (root / "study.md",), {"judge": config.judge}),
    ]


def write_table(root: Path) -> str:
    """The synthetic RM's accuracy on human labels, then `eval compare`'s rows (synthetic-RM reward,
    fluency, and the win rate against the start under the human-label judge)."""
    human = json.loads((root / "rm_human.json").read_text())
    report = json.loads((root / "compare.json").read_text())["report"]
    lines = [f"Synthetic reward model on held-out human HH pairs: accuracy {100 * human['accuracy']:.1f}% "
             f"({human['pairs']} pairs).", "",
             "| policy | synthetic-RM reward | Δ vs start ± paired se | reference PPL | tokens | rep-4 | "
             "win rate vs start ± se (judge) |", "|---|---|---|---|---|---|---|"]
    for e in report:
        delta = f"{e['reward_delta']:+.3f} ± {e['reward_delta_se']:.3f}" if e is not report[0] else ""
        win = f"{e['win_rate_vs_start']:.1f} ± {e['win_rate_se']:.1f}" if "win_rate_vs_start" in e else "(baseline)"
        lines.append(f"| {e['policy']} | {e['reward_mean']:.3f} | {delta} | {e['reference_ppl']:.2f} | "
                     f"{e['response_tokens_mean']:.1f} | {100 * e['repeated_4grams']:.0f}% | {win} |")
    out = root / "study.md"
    out.write_text("\n".join(lines) + "\n")
    return str(out)


def main(argv: list[str]) -> int:
    return study_main(argv, "almost", __doc__, AlmostStudy, plan, lambda config: Path(config.output_dir),
                      default_config="jobs/study/almost_study.yaml")
