"""`raylign study cut-online`: CUT as its paper reports it best, online, as one resumable Ray job.

    raylign study cut-online --config jobs/study/cut_online.yaml [--plan] [key.sub=value ...]

Each iteration i (a stage each, so a killed run resumes at the iteration and step it was in):
  outputs_i    the current policy answers batch i of the training instructions (`generate outputs`)
  judged_i     a judge writes a judgment of each answer, or "acceptable" (`annotate judgments`)
  cut_i        CUT on those judgments from the current policy: Align-P on the acceptable answers,
               Align-N and Misalign on the judged ones (`train cut`, LoRA merged)
  eval_i       held-out: the judged-bad token probability on judgments the policy never trained on
               (`eval cut`, against the starting model)
  heldout_i, winrate_i   the policy answers held-out instructions, and an evaluator that is not the
               judgment writer compares them with the start's answers (`eval leaderboard`)
then `study.md`, one row per iteration.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pydantic import Field, field_validator

from raylign.config import InputPath, ModelName, OutputDir, StrictModel
from raylign.studies.cli import study_main
from raylign.studies.stages import Stage, StageRecipe, command, number


class CutOnlineStudy(StrictModel):
    model: ModelName = "SmolLM2-135M-Instruct"
    output_dir: OutputDir = "runs/cut_online"
    instructions: InputPath = "../shared/data/alpaca_eval_instructions.jsonl.gz"
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)  # held-out instructions (seeded hash, as the RMs' split)
    iterations: int = Field(3, ge=1)
    per_iteration: int = Field(64, ge=1)  # training instructions answered and judged each iteration
    generate: StageRecipe  # sampling settings of the policy's answers
    judge: str = "judgment:SmolLM2-135M-Instruct"  # a `judgment:` / `judgment-http:` spec
    cut: StageRecipe  # `train cut` recipe
    heldout_judgments: list[InputPath] = ["../shared/data/cut_judgments_iter3.jsonl.gz"]
    eval_limit: int = Field(64, ge=1)
    evaluator: str = "rm:alpaca-rm-smollm2"  # compares the last policy with the start: not the judgment writer
    ray_address: str | None = None

    @field_validator("judge")
    @classmethod
    def _judge_writes_judgments(cls, spec: str) -> str:
        from raylign.feedback.config import parse_judgment_spec

        parse_judgment_spec(spec)
        return spec


def write_batches(config: CutOnlineStudy, folder: Path) -> dict:
    """The training instructions cut into one file per iteration, and the held-out ones."""
    from raylign.data.prompt_list import PromptListConfig, read_prompts

    def rows(split: str) -> list[dict]:
        found = read_prompts(PromptListConfig(path=config.instructions, split=split,
                                              test_fraction=config.test_fraction))
        return [{"instruction": r["instruction"], "input": r.get("input") or "", "dataset": r.get("dataset")}
                for r in found]

    train, test = rows("train"), rows("test")[: config.eval_limit]
    need = config.iterations * config.per_iteration
    if len(train) < need:
        raise ValueError(f"{config.instructions}: {len(train)} training instructions, the study needs "
                         f"iterations x per_iteration = {need}")
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(config.iterations):
        chunk = train[i * config.per_iteration : (i + 1) * config.per_iteration]
        (folder / f"batch_{i + 1}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chunk))
    (folder / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    return {"train": len(train), "heldout": len(test)}


def plan(config: CutOnlineStudy) -> list[Stage]:
    root = Path(config.output_dir)
    batches = root / "batches"

    def step(name: str, argv: list[str], output: Path) -> Stage:
        return Stage(name, command(*argv), (output,), {"argv": argv})

    def generate(name: str, model: str, data: Path, output: Path) -> Stage:
        return step(name, ["generate", "outputs", "--config", config.generate.recipe, *config.generate.overrides,
                           f"model={model}", f"data.path={data}", "data.split=all", "data.limit=null",
                           f"generator={name}", f"output={output}"], output)

    final = root / "heldout_outputs"
    start_outputs = final / "start.json"
    stages = [Stage("batches", lambda: write_batches(config, batches), (batches / "heldout.jsonl",),
                    {"instructions": config.instructions, "test_fraction": config.test_fraction,
                     "iterations": config.iterations, "per_iteration": config.per_iteration}),
              generate("heldout_start", str(config.model), batches / "heldout.jsonl", start_outputs)]
    policy = str(config.model)
    for i in range(1, config.iterations + 1):
        it = root / f"iter_{i}"
        stages += [
            generate(f"outputs_{i}", policy, batches / f"batch_{i}.jsonl", it / "outputs.json"),
            step(f"judged_{i}", ["annotate", "judgments", "--data", str(it / "outputs.json"), "--judge", config.judge,
                                 "--output", str(it / "judged.jsonl")], it / "judged.jsonl"),
            cut_stage(f"cut_{i}", ["train", "cut", "--config", config.cut.recipe, *config.cut.overrides,
                                   f"model={policy}", f"data.path={it / 'judged.jsonl'}", "data.format=cut",
                                   f"output_dir={it / 'policy'}"], policy, it),
            step(f"eval_{i}", ["eval", "cut", "--model", str(it / "policy"), "--start", str(config.model), "--data",
                               *config.heldout_judgments, "--output", str(it / "eval_cut.json")], it / "eval_cut.json"),
            generate(f"heldout_{i}", str(it / "policy"), batches / "heldout.jsonl", final / f"iter_{i}.json"),
            step(f"winrate_{i}", ["eval", "leaderboard", "--model-outputs", str(final / f"iter_{i}.json"),
                                  "--reference-outputs", str(start_outputs), "--annotator", config.evaluator,
                                  "--output", str(it / "leaderboard" / "results.json")],
                 it / "leaderboard" / "results.json"),
        ]
        policy = str(it / "policy")
    answers = [str(start_outputs)] + [str(final / f"iter_{i}.json") for i in range(1, config.iterations + 1)]
    fluency = ["eval", "fluency", *answers, "--reference", str(config.model), "--output", str(final / "fluency.json")]
    stages += [step("fluency", fluency, final / "fluency.json"),
               Stage("table", lambda: {"table": write_table(root, config.iterations)}, (root / "study.md",),
                     {"iterations": config.iterations})]
    return stages


def cut_stage(name: str, argv: list[str], previous: str, it: Path) -> Stage:
    """CUT on the iteration's judgments; when the judge found nothing wrong with any answer there
    is no contrast to learn (CUT keeps acceptable answers in proportion to judged ones), so the
    policy carries over unchanged (a link to the previous one) and the table says so."""
    run_cut = command(*argv)

    def run() -> dict:
        judged = [json.loads(line) for line in (it / "judged.jsonl").read_text().splitlines() if line.strip()]
        if any(r.get("judgment") not in (None, "") for r in judged):
            return {**run_cut(), "trained": True}
        from raylign.models.registry import resolve_model

        target = it / "policy"
        if target.is_symlink():
            target.unlink()
        elif target.exists():
            shutil.rmtree(target)  # what a killed attempt left
        target.symlink_to(Path(resolve_model(previous)).resolve(), target_is_directory=True)
        return {"trained": False, "reason": f"the judge found every one of {len(judged)} answers acceptable"}

    return Stage(name, run, (it / "policy" / "config.json",), {"argv": argv})


def restates_answer(row: dict) -> bool:
    """A judgment that opens by copying the answer it judges: what a weak judge writes instead of a critique."""
    answer, judgment = " ".join((row.get("output") or "").split()), " ".join((row.get("judgment") or "").split())
    return bool(answer) and judgment.startswith(answer[:40])


def write_table(root: Path, iterations: int) -> str:
    """study.md: a row per iteration, with the starting model's perplexity of the held-out answers and
    their repeated 4-grams beside the win rate (a win by degenerate text shows there)."""
    lines = ["| iteration | judged / answered | judgments restating the answer | CUT update | "
             "held-out judged-bad prob (start -> policy) | Δ ± se | win rate vs start ± se (held-out instructions) | "
             "LC | reference PPL | rep-4 | answer chars |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    records = json.loads((root / "stages.json").read_text()) if (root / "stages.json").exists() else {}
    fluency_file = root / "heldout_outputs" / "fluency.json"
    fluency = ({Path(r["outputs"]).name: r for r in json.loads(fluency_file.read_text())}
               if fluency_file.exists() else {})

    def fluent(name: str) -> str:
        row = fluency.get(name)
        return (f"{row['reference_ppl']:.2f} | {row['repeated_4grams']:.0%} | {row['avg_chars']:.0f}" if row
                else "n/a | n/a | n/a")

    lines.append(f"| start | | | | | | | | {fluent('start.json')} |")
    for i in range(1, iterations + 1):
        trained = records.get(f"cut_{i}", {}).get("summary", {}).get("trained", True)
        it = root / f"iter_{i}"
        judged = [json.loads(line) for line in (it / "judged.jsonl").read_text().splitlines()]
        report = json.loads((it / "eval_cut.json").read_text())
        before, after = report["before"], report["after"]
        (board,) = json.loads((it / "leaderboard" / "results.json").read_text())
        lines.append(f"| {i} | {sum(r['judgment'] is not None for r in judged)} / {len(judged)} | "
                     f"{sum(restates_answer(r) for r in judged)} | "
                     f"{'yes' if trained else 'none (nothing judged)'} | "
                     f"{before['judged_bad_prob']:.3f} -> {after['judged_bad_prob']:.3f} | "
                     f"{after['judged_bad_prob_change']:+.4f} ± {after['judged_bad_prob_change_se']:.4f} | "
                     f"{board['win_rate']:.1f} ± {board['standard_error']:.1f} | {number(board.get('length_controlled_winrate'))} | "
                     f"{fluent(f'iter_{i}.json')} |")
    out = root / "study.md"
    out.write_text("\n".join(lines) + "\n")
    return str(out)


def main(argv: list[str]) -> int:
    return study_main(argv, "cut-online", __doc__, CutOnlineStudy, plan, lambda config: Path(config.output_dir),
                      default_config="jobs/study/cut_online.yaml")
