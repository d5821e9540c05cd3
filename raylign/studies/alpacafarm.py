"""`raylign study alpacafarm`: AlpacaFarm's simulated study as one resumable Ray job.

    raylign study alpacafarm --config jobs/study/alpacafarm.yaml [key.sub=value ...]

Stages (each one's outputs kept under `output_dir`; a rerun starts at the first stage not done):
  roles -> sft (SFT on the SFT split) -> pairs (the SFT model answers the preference split twice)
  -> labels (the simulated annotator pool, with training noise) -> rm (the reward model, from the
  SFT model) -> one stage per method (best-of-n, expert iteration, PPO, DPO, Quark, GRPO, ...
  against that reward model on the unlabeled split) -> outputs of every policy on the evaluation
  instructions -> leaderboards against the reference under each evaluator (the simulated
  evaluator without noise, and a second one sharing no training labels with the annotators) ->
  PPO's over-optimisation curve (its snapshots) -> the starting model's perplexity and rep-4 of
  every output (fluency) -> the study's table (study.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from raylign.config import InputPath, ModelName, OutputDir, StrictModel
from raylign.studies.cli import resuming, study_main
from raylign.studies.roles import RoleSplit, write_roles
from raylign.studies.stages import Stage, StageRecipe, command

Kind = Literal["best_of_n", "expert_iteration", "online", "dpo"]


class MethodEntry(StrictModel):
    kind: Kind
    recipe: InputPath | None = None  # online / dpo: the method's recipe (the study sets model, data, reward)
    command: str | None = None  # the `raylign train <command>`; default: the entry's name
    overrides: list[str] = []
    n: int = Field(4, ge=2)  # best_of_n / expert_iteration: samples per instruction
    snapshot_every: int | None = Field(None, ge=1)  # online: policy snapshots for the over-optimisation curve


class JudgeRM(StageRecipe):
    """A second evaluator trained here on GPT-4 pairs the simulated annotator never saw."""

    rows_from: int = Field(2600, ge=0)  # jobs/rm_alpaca.yaml trains alpaca-rm-smollm2 on the file's first 2,600


class AlpacaFarmStudy(StrictModel):
    model: ModelName = "SmolLM2-135M-Instruct"
    output_dir: OutputDir = "runs/alpacafarm"
    pairs: InputPath = "../shared/data/alpaca_eval_gpt4_pairs.jsonl.gz"
    roles: RoleSplit = RoleSplit()
    sft: StageRecipe
    generate: StageRecipe  # sampling settings for pairs, best-of-n and evaluation outputs
    annotate: StageRecipe  # the simulated annotator pool (training noise on)
    reward_model: StageRecipe
    methods: dict[str, MethodEntry]
    reference: str = "sft"  # the leaderboards' baseline: "sft" (the SFT model's outputs) or "pairs_output_1"
    evaluators: dict[str, str] = {"simulated": "rm:alpaca-rm-smollm2"}  # name -> annotator spec (no noise)
    judge_rm: JudgeRM | None = None  # trained, it is the evaluator named "second"
    curve_method: str | None = "ppo"  # the method whose snapshots draw the over-optimisation curve
    ray_address: str | None = None


class Plan:
    """The study's paths and stages, from its config."""

    def __init__(self, config: AlpacaFarmStudy):
        self.config = config
        self.root = Path(config.output_dir)
        self.roles = self.root / "roles"
        self.outputs = self.root / "outputs"

    def policy(self, name: str) -> Path:
        """Where a trained method's final policy lands."""
        entry = self.config.methods[name]
        if entry.kind == "online":
            return self.root / name / "final"
        if entry.kind == "expert_iteration":
            return self.root / name / "model"
        return self.root / name

    def outputs_file(self, name: str) -> Path:
        return self.outputs / f"{name}.json"

    def generate(self, name: str, words: str, model: str, data: Path, output: Path, *extra: str) -> Stage:
        config = self.config
        argv = ["generate", words, "--config", config.generate.recipe, *config.generate.overrides,
                f"model={model}", f"data.path={data}", "data.split=all", "data.limit=null", f"output={output}", *extra]
        return Stage(name, command(*argv), (output,), {"argv": argv})

    def stages(self) -> list[Stage]:
        config, root, roles = self.config, self.root, self.roles
        sft = root / "sft"
        stages = [
            Stage("roles", lambda: write_roles(config.pairs, config.roles, roles, self.judge_rows_from()),
                  (roles / "roles.json",), {"pairs": config.pairs, "roles": config.roles.model_dump(),
                                            "judge_rows_from": self.judge_rows_from()}),
            Stage("sft", *self._train(["train", "sft", "--config", config.sft.recipe, *config.sft.overrides,
                                       f"model={config.model}", f"data.path={roles / 'sft.jsonl'}",
                                       "data.format=alpaca", f"output_dir={sft}"], sft / "config.json")),
            self.generate("pairs", "samples", str(sft), roles / "preference.jsonl", root / "pairs.json",
                          "sampling.num_samples=2", "generator=sft"),
            Stage("labels", *self._train(["annotate", "--config", config.annotate.recipe, *config.annotate.overrides,
                                          f"data={root / 'pairs.json'}", f"output={root / 'labels.jsonl'}"],
                                         root / "labels.jsonl")),
            Stage("rm", *self._train(["train", "rm", "--config", config.reward_model.recipe,
                                      *config.reward_model.overrides, f"model={sft}",
                                      f"data.path={root / 'labels.jsonl'}", "data.format=alpaca_eval",
                                      f"output_dir={root / 'rm'}", "rm.export_delta=null"],
                                     root / "rm" / "config.json")),
        ]
        for name in config.methods:
            stages += self._method(name)
        for name in ("sft", *[n for n, m in config.methods.items() if m.kind != "best_of_n"]):
            model = sft if name == "sft" else self.policy(name)
            stages.append(self.generate(f"outputs_{name}", "outputs", str(model), roles / "eval.jsonl",
                                        self.outputs_file(name),
                                        f"generator={name}", "sampling.seed=1"))
        stages += self._evaluation()
        return stages

    def _train(self, argv: list[str], output: Path) -> tuple:
        return command(*argv), (output,), {"argv": argv}

    def _method(self, name: str) -> list[Stage]:
        config, entry, root = self.config, self.config.methods[name], self.root
        sft, rm = root / "sft", root / "rm"
        if entry.kind == "best_of_n":  # no training: n samples of the SFT model, the RM's best, on eval
            out = self.outputs_file(name)
            return [self.generate(name, "best-of-n", str(sft), self.roles / "eval.jsonl", out,
                                  f"sampling.num_samples={entry.n}", f"reward.model={rm}", f"generator={name}")]
        if entry.kind == "expert_iteration":  # best-of-n on the unlabeled split, then SFT on the picks
            picks = root / name / "best_of_n.json"
            return [self.generate(f"{name}_picks", "best-of-n", str(sft), self.roles / "unlabeled.jsonl", picks,
                                  f"sampling.num_samples={entry.n}", f"reward.model={rm}", f"generator={name}"),
                    Stage(name, *self._train(["train", "sft", "--config", config.sft.recipe, *config.sft.overrides,
                                              f"model={sft}", f"data.path={picks}", "data.format=alpaca",
                                              f"output_dir={self.policy(name)}", *entry.overrides],
                                             self.policy(name) / "config.json"))]
        words = ["train", entry.command or name.replace("_", "-"), "--config", str(entry.recipe)]
        if entry.kind == "dpo":  # the simulated preference labels themselves
            argv = [*words, *entry.overrides, f"model={sft}", f"data.path={root / 'labels.jsonl'}",
                    "data.format=alpaca_eval", f"output_dir={self.policy(name)}"]
            return [Stage(name, *self._train(argv, self.policy(name) / "config.json"))]
        argv = [*words, *entry.overrides, f"model={sft}", f"data.path={self.roles / 'unlabeled.jsonl'}",
                "data.kind=prompt", "data.split=all", "data.format=alpaca", "reward.kind=actor", f"reward.model={rm}",
                f"engine.output_dir={root / name}"]
        if entry.snapshot_every:
            argv.append(f"engine.trainer.snapshot_every={entry.snapshot_every}")
        return [Stage(name, resuming(argv, root / name), (self.policy(name) / "config.json",), {"argv": argv})]

    def judge_rows_from(self) -> int | None:
        return self.config.judge_rm.rows_from if self.config.judge_rm else None

    def evaluators(self) -> dict[str, str]:
        judge = {"second": f"rm:{self.root / 'judge_rm'}"} if self.config.judge_rm else {}
        return {**self.config.evaluators, **judge}

    def _evaluation(self) -> list[Stage]:
        from raylign.studies.report import curve_stage, fluency_stage, leaderboard_stage, table_stage

        stages = []
        if self.config.judge_rm:
            judge, out = self.config.judge_rm, self.root / "judge_rm"
            stages.append(Stage("judge_rm", *self._train(
                ["train", "rm", "--config", judge.recipe, *judge.overrides, f"data.path={self.roles / 'judge_pairs.jsonl'}",
                 "data.format=alpaca_eval", "data.test_fraction=0.0", f"output_dir={out}", "rm.export_delta=null"],
                out / "config.json")))
        stages += [leaderboard_stage(self, evaluator, spec) for evaluator, spec in self.evaluators().items()]
        curve = self.config.curve_method
        if curve and curve in self.config.methods and self.config.methods[curve].snapshot_every:
            stages.append(curve_stage(self, curve))
        stages += [fluency_stage(self), table_stage(self)]
        return stages

    def reference_file(self) -> Path:
        if self.config.reference == "sft":
            return self.outputs_file("sft")
        if self.config.reference == "pairs_output_1":
            return self.roles / "reference_outputs.json"
        return Path(self.config.reference)


def main(argv: list[str]) -> int:
    return study_main(argv, "alpacafarm", __doc__, AlpacaFarmStudy, lambda config: Plan(config).stages(),
                      lambda config: Path(config.output_dir))
