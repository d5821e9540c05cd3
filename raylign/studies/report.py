"""The AlpacaFarm study's evaluation stages: leaderboards, PPO's over-optimisation curve, the table.

The curve follows AlpacaFarm's figure: as PPO trains, the reward the study's own reward model
gives the policy's answers keeps rising with KL from the start, while the win rate under the
evaluator rises, then falls once the policy exploits the reward model.
"""

from __future__ import annotations

import json
from pathlib import Path

from raylign.studies.stages import Stage, command, number


def leaderboard_file(plan, evaluator: str) -> Path:
    return plan.root / "leaderboard" / evaluator / "results.json"


def compared(plan) -> list[str]:
    """The policies ranked against the reference (the SFT start too when the reference is another system)."""
    names = list(plan.config.methods)
    return names if plan.config.reference == "sft" else ["sft", *names]


def leaderboard_stage(plan, evaluator: str, spec: str) -> Stage:
    out = leaderboard_file(plan, evaluator)
    argv = ["eval", "leaderboard", "--model-outputs", *[str(plan.outputs_file(n)) for n in compared(plan)],
            "--reference-outputs", str(plan.reference_file()), "--annotator", spec, "--output", str(out)]
    return Stage(f"leaderboard_{evaluator}", command(*argv), (out,), {"argv": argv})


def fluency_stage(plan) -> Stage:
    """The starting model's perplexity of every method's outputs and the reference's, with rep-4:
    the fluency figure beside each win rate (a win by degenerate text shows here)."""
    out = plan.root / "leaderboard" / "fluency.json"
    files = [str(plan.outputs_file(n)) for n in compared(plan)] + [str(plan.reference_file())]
    argv = ["eval", "fluency", *dict.fromkeys(files), "--reference", str(plan.config.model), "--output", str(out)]
    return Stage("fluency", command(*argv), (out,), {"argv": argv})


def _fluency(plan) -> dict[str, dict]:
    path = plan.root / "leaderboard" / "fluency.json"
    return {Path(row["outputs"]).resolve(): row for row in json.loads(path.read_text())} if path.exists() else {}


def _kl_at(metrics_file: Path, step: int) -> float:
    for line in metrics_file.read_text().splitlines():
        row = json.loads(line)
        if row.get("step") == step and "kl" in row:
            return float(row["kl"])
    raise ValueError(f"{metrics_file}: no 'kl' logged at step {step}")


def _mean_reward(outputs_file: Path, reward_model: Path) -> float:
    from raylign.scoring.base import RewardConfig
    from raylign.scoring.sources import make_reward_source

    rows = json.loads(outputs_file.read_text())
    source = make_reward_source(RewardConfig(kind="actor", model=str(reward_model), max_length=256))
    try:
        scores = source.score([{"messages": [{"role": "user", "content": r["instruction"]}], "response": r["output"]}
                               for r in rows])
    finally:
        source.close()
    return sum(scores) / len(scores)


def curve_stage(plan, method: str) -> Stage:
    folder = plan.root / "curve"
    png = folder / f"{method}_overoptimization.png"

    def run() -> dict:
        snapshots = sorted((plan.root / method / "snapshots").glob("step_*"))
        if not snapshots:
            raise RuntimeError(f"{plan.root / method}/snapshots is empty: the method ran without snapshot_every")
        names = []
        for snapshot in snapshots:
            name = f"{method}_{snapshot.name}"
            out = plan.outputs_file(name)
            if not out.exists():
                command("generate", "outputs", "--config", plan.config.generate.recipe, *plan.config.generate.overrides,
                        f"model={snapshot}", f"data.path={plan.roles / 'eval.jsonl'}", "data.split=all",
                        "data.limit=null", f"generator={name}", "sampling.seed=1", f"output={out}")()
            names.append(name)
        spec = next(iter(plan.evaluators().values()))
        board = folder / "leaderboard.json"
        command("eval", "leaderboard", "--model-outputs", *[str(plan.outputs_file(n)) for n in names],
                "--reference-outputs", str(plan.reference_file()), "--annotator", spec, "--output", str(board))()
        wins = {row["name"]: row for row in json.loads(board.read_text())}
        points = [{"step": int(s.name.split("_")[1]), "kl": _kl_at(plan.root / method / "metrics.jsonl",
                                                                     int(s.name.split("_")[1])),
                   "rm_reward": _mean_reward(plan.outputs_file(n), plan.root / "rm"),
                   "win_rate": wins[n]["win_rate"], "standard_error": wins[n]["standard_error"]}
                  for s, n in zip(snapshots, names)]
        (folder / "points.json").write_text(json.dumps(points, indent=1))
        draw_curve(points, png, method, spec)
        return {"points": len(points)}

    return Stage("curve", run, (png,), {"method": method, "evaluators": plan.evaluators()})


def draw_curve(points: list[dict], png: Path, method: str, evaluator: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kl = [p["kl"] for p in points]
    fig, left = plt.subplots(figsize=(6, 4))
    left.plot(kl, [p["rm_reward"] for p in points], "o-", color="tab:blue", label="study RM reward")
    left.set_xlabel("KL(policy || start), mean per token")
    left.set_ylabel("reward under the study's reward model", color="tab:blue")
    right = left.twinx()
    right.errorbar(kl, [p["win_rate"] for p in points], yerr=[p["standard_error"] for p in points], fmt="s--",
                   color="tab:red", capsize=3)
    right.set_ylabel(f"win rate vs reference ({evaluator})", color="tab:red")
    for p in points:
        left.annotate(str(p["step"]), (p["kl"], p["rm_reward"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    left.set_title(f"{method}: reward model vs evaluator as training goes on")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    plt.close(fig)


def table(plan) -> str:
    """The paper's kind of table: each method's win rate against the reference under each evaluator."""
    boards = {name: {row["name"]: row for row in json.loads(leaderboard_file(plan, name).read_text())}
              for name in plan.evaluators()}
    first = next(iter(boards))
    order = sorted(compared(plan), key=lambda n: -boards[first].get(n, {}).get("win_rate", -1.0))
    fluency = _fluency(plan)
    header = ("| method | " + " | ".join(f"win rate ± se ({e}) | LC ({e})" for e in boards)
              + " | avg length | reference PPL | rep-4 |")
    lines = [f"Reference: {plan.reference_file()}; {plan.config.roles.eval_limit or 'all'} evaluation instructions.", "",
             header, "|" + "---|" * (4 + 2 * len(boards))]

    def fluent(path: Path) -> str:
        row = fluency.get(Path(path).resolve())
        return f"{row['reference_ppl']:.2f} | {row['repeated_4grams']:.0%}" if row else " | "

    for name in order:
        cells = []
        for board in boards.values():
            row = board.get(name)
            cells += ([f"{row['win_rate']:.1f} ± {row['standard_error']:.1f}",
                       number(row.get("length_controlled_winrate"))] if row else ["", ""])
        length = boards[first].get(name, {}).get("avg_length", "")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {length} | {fluent(plan.outputs_file(name))} |")
    lines.append("| reference | " + " | ".join(["(baseline)", ""] * len(boards)) + f" | | {fluent(plan.reference_file())} |")
    return "\n".join(lines) + "\n"


def table_stage(plan) -> Stage:
    out = plan.root / "study.md"

    def run() -> dict:
        text = table(plan)
        curve = plan.root / "curve" / "points.json"
        if curve.exists():
            text += "\nOver-optimisation curve (step, KL, study-RM reward, win rate):\n\n" + "\n".join(
                f"- step {p['step']}: KL {p['kl']:.4f}, reward {p['rm_reward']:.3f}, win {p['win_rate']:.1f} ± "
                f"{p['standard_error']:.1f}" for p in json.loads(curve.read_text())) + "\n"
        out.write_text(text)
        return {"table": str(out)}

    return Stage("table", run, (out,), {"evaluators": plan.evaluators(), "methods": list(plan.config.methods)})
