"""The AlpacaFarm study's plan: data roles drawn per instruction (evaluation = the simulated
annotator's held-out split), and stages whose commands validate before anything runs."""

import gzip
import json

import pytest

from raylign.config import ConfigError, load_config
from raylign.data.adapters import alpaca_prompt, prompt_id
from raylign.data.splits import split_of
from raylign.studies.alpacafarm import AlpacaFarmStudy, Plan
from raylign.studies.cli import validate
from raylign.studies.roles import RoleSplit, write_roles


@pytest.fixture()
def pairs(tmp_path):
    rows = [{"instruction": f"Task {i}", "output_1": f"gpt4 answer {i}", "output_2": f"other {i}.{j}",
             "generator_1": "gpt4", "generator_2": f"sys{j}", "preference": 1.2}
            for i in range(120) for j in range(2)]
    path = tmp_path / "pairs.jsonl.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_roles_are_disjoint_and_evaluation_is_the_annotators_test_split(pairs, tmp_path):
    split = RoleSplit(eval_limit=None)
    counts = write_roles(str(pairs), split, tmp_path / "roles", judge_rows_from=100)
    assert sum(counts[r] for r in ("eval", "sft", "preference", "unlabeled")) == 120
    by_role = {r: {row["instruction"] for row in _read(tmp_path / "roles" / f"{r}.jsonl")}
               for r in ("eval", "sft", "preference", "unlabeled")}
    assert all(by_role[a].isdisjoint(by_role[b]) for a in by_role for b in by_role if a < b)
    held_out = {f"Task {i}" for i in range(120)
                if split_of(prompt_id(alpaca_prompt(f"Task {i}", None)), 0.2, 0.08, 0) == "test"}
    assert by_role["eval"] == held_out
    sft = _read(tmp_path / "roles" / "sft.jsonl")
    assert all(row["output"] == "gpt4 answer " + row["instruction"].split()[-1] for row in sft)
    reference = json.loads((tmp_path / "roles" / "reference_outputs.json").read_text())
    assert {r["instruction"] for r in reference} == held_out and {r["generator"] for r in reference} == {"gpt4"}
    judge = _read(tmp_path / "roles" / "judge_pairs.jsonl")  # rows 100.. of the file, never an eval instruction
    assert judge and all(r["instruction"] not in held_out for r in judge)
    assert all(int(r["instruction"].split()[-1]) >= 50 for r in judge)
    # the same draw again, whatever the order of the file
    again = write_roles(str(pairs), split, tmp_path / "again")
    assert {k: v for k, v in again.items()} == {k: v for k, v in counts.items() if k != "judge_pairs"}


def test_role_fractions_must_sum_to_one():
    with pytest.raises(ValueError, match="must be 1"):
        RoleSplit(sft=0.5, preference=0.5, unlabeled=0.5)


def test_the_shipped_study_plans_every_method_and_validates():
    config = load_config(AlpacaFarmStudy, "jobs/study/alpacafarm.yaml")
    stages = Plan(config).stages()
    names = [s.name for s in stages]
    assert len(names) == len(set(names))
    assert names[:5] == ["roles", "sft", "pairs", "labels", "rm"]
    for method in ("best_of_n", "expert_iteration", "ppo", "dpo", "quark", "grpo"):
        assert method in names
    assert names[-4:] == ["leaderboard_second", "curve", "fluency", "table"]
    validate(stages)
    ppo = next(s for s in stages if s.name == "ppo").settings["argv"]
    assert "engine.trainer.snapshot_every=4" in ppo and "reward.model=runs/alpacafarm/rm" in ppo


def test_a_misspelt_override_fails_before_anything_runs(tmp_path):
    config = load_config(AlpacaFarmStudy, "jobs/study/alpacafarm.yaml")
    config.methods["ppo"].overrides.append("engine.num_iteration=3")
    with pytest.raises(ConfigError, match="study stage 'ppo'.*num_iteration"):
        validate(Plan(config).stages())


def test_table_ranks_methods_and_sets_fluency_beside_each_win_rate(tmp_path):
    import json
    from types import SimpleNamespace

    from raylign.studies.report import table

    outputs = tmp_path / "outputs"
    plan = SimpleNamespace(
        root=tmp_path, config=SimpleNamespace(methods={"ppo": None, "dpo": None}, reference="sft",
                                              roles=SimpleNamespace(eval_limit=64)),
        evaluators=lambda: {"simulated": "rm:x"}, outputs_file=lambda n: outputs / f"{n}.json",
        reference_file=lambda: outputs / "sft.json")
    board = tmp_path / "leaderboard" / "simulated" / "results.json"
    board.parent.mkdir(parents=True)
    board.write_text(json.dumps([
        {"name": "ppo", "win_rate": 55.0, "standard_error": 4.0, "length_controlled_winrate": 52.0, "avg_length": 300},
        {"name": "dpo", "win_rate": 61.0, "standard_error": 4.5, "length_controlled_winrate": None, "avg_length": 280}]))
    (tmp_path / "leaderboard" / "fluency.json").write_text(json.dumps([
        {"outputs": str(outputs / "ppo.json"), "reference_ppl": 9.5, "repeated_4grams": 0.31},
        {"outputs": str(outputs / "sft.json"), "reference_ppl": 7.25, "repeated_4grams": 0.05}]))
    lines = table(plan).splitlines()
    assert lines[2].endswith("| avg length | reference PPL | rep-4 |")
    assert lines[4].startswith("| dpo | 61.0 ± 4.5 |") and lines[4].endswith("| 280 |  |  |")
    assert lines[5] == "| ppo | 55.0 ± 4.0 | 52.0 | 300 | 9.50 | 31% |"
    assert lines[6] == "| reference | (baseline) |  | | 7.25 | 5% |"
