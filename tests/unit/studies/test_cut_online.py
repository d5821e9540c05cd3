"""Online CUT's plan: one stage per step of each iteration, each iteration training from the last
one's policy; instruction batches disjoint and held out by the seeded hash; the table's rows."""

import json

import pytest

from raylign.config import ConfigError, load_config
from raylign.data.adapters import prompt_id
from raylign.data.splits import split_of
from raylign.studies.cli import validate
from raylign.studies.cut_online import CutOnlineStudy, plan, write_batches, write_table


def test_each_iteration_trains_from_the_last_policy_and_validates():
    config = load_config(CutOnlineStudy, "jobs/study/cut_online.yaml")
    stages = plan(config)
    validate(stages)
    argv = {s.name: s.settings.get("argv", []) for s in stages}
    assert "model=SmolLM2-135M-Instruct" in argv["cut_1"]
    assert "model=runs/cut_online/iter_1/policy" in argv["cut_2"] and "model=runs/cut_online/iter_2/policy" in argv["cut_3"]
    assert "model=runs/cut_online/iter_1/policy" in argv["outputs_2"]
    assert argv["judged_2"][argv["judged_2"].index("--judge") + 1] == "judgment:SmolLM2-135M-Instruct"
    assert argv["winrate_3"][argv["winrate_3"].index("--annotator") + 1] == "rm:alpaca-rm-smollm2"
    assert [s.name for s in stages][-2:] == ["fluency", "table"]
    assert argv["fluency"][2:6] == ["runs/cut_online/heldout_outputs/start.json"] + [
        f"runs/cut_online/heldout_outputs/iter_{i}.json" for i in (1, 2, 3)]


def test_a_pairwise_judge_is_refused():
    with pytest.raises(ConfigError, match="judge"):
        load_config(CutOnlineStudy, "jobs/study/cut_online.yaml", ["judge=rm:alpaca-rm-smollm2"])


def test_batches_are_disjoint_training_instructions(tmp_path):
    path = tmp_path / "instructions.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"Do task {i}."}) + "\n" for i in range(60)))
    config = load_config(CutOnlineStudy, "jobs/study/cut_online.yaml",
                         [f"instructions={path}", "iterations=2", "per_iteration=10", "eval_limit=5"])
    counts = write_batches(config, tmp_path / "b")
    first, second = ([json.loads(x)["instruction"] for x in (tmp_path / "b" / f"batch_{i}.jsonl").read_text().splitlines()]
                     for i in (1, 2))
    held = [json.loads(x)["instruction"] for x in (tmp_path / "b" / "heldout.jsonl").read_text().splitlines()]
    assert len(first) == len(second) == 10 and not set(first) & set(second) and len(held) == 5
    assert all(split_of(prompt_id(h), 0.2, 0.0, 0) == "test" for h in held)
    assert not set(held) & (set(first) | set(second)) and counts["heldout"] == 5
    with pytest.raises(ValueError, match="needs iterations x per_iteration = 600"):
        write_batches(config.model_copy(update={"per_iteration": 300}), tmp_path / "c")


def test_table_rows(tmp_path):
    it = tmp_path / "iter_1"
    (it / "leaderboard").mkdir(parents=True)
    rows = [{"output": "Paris is the capital.", "judgment": "bad"}, {"output": "Yes.", "judgment": None},
            {"output": "No.", "judgment": None},
            {"output": "The answer  is 4.", "judgment": "The answer is 4.\nThe response is not acceptable."}]
    (it / "judged.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "heldout_outputs").mkdir()
    (tmp_path / "heldout_outputs" / "fluency.json").write_text(json.dumps(
        [{"outputs": "runs/x/heldout_outputs/start.json", "reference_ppl": 2.5, "repeated_4grams": 0.1, "avg_chars": 300.4},
         {"outputs": "runs/x/heldout_outputs/iter_1.json", "reference_ppl": 3.25, "repeated_4grams": 0.2, "avg_chars": 280.0}]))
    (it / "eval_cut.json").write_text(json.dumps({"before": {"judged_bad_prob": 0.25},
                                                  "after": {"judged_bad_prob": 0.2, "judged_bad_prob_change": -0.05,
                                                            "judged_bad_prob_change_se": 0.01}}))
    (it / "leaderboard" / "results.json").write_text(json.dumps([{"win_rate": 55.5, "standard_error": 3.0,
                                                                  "length_controlled_winrate": 52.0}]))
    write_table(tmp_path, 1)
    table = (tmp_path / "study.md").read_text()
    assert "| start | | | | | | | | 2.50 | 10% | 300 |" in table
    assert "| 1 | 2 / 4 | 1 | yes | 0.250 -> 0.200 | -0.0500 ± 0.0100 | 55.5 ± 3.0 | 52.0 | 3.25 | 20% | 280 |" in table


def test_an_iteration_with_nothing_judged_carries_the_policy_over(tmp_path):
    from raylign.studies.cut_online import cut_stage

    previous = tmp_path / "iter_1" / "policy"
    previous.mkdir(parents=True)
    (previous / "config.json").write_text("{}")
    it = tmp_path / "iter_2"
    it.mkdir()
    (it / "judged.jsonl").write_text(json.dumps({"judgment": None}) + "\n" + json.dumps({"judgment": ""}) + "\n")
    (it / "policy").mkdir()  # what a killed attempt left
    stage = cut_stage("cut_2", ["train", "cut", "--config", "never-run.yaml"], str(previous), it)
    assert stage.run() == {"trained": False, "reason": "the judge found every one of 2 answers acceptable"}
    assert (it / "policy").is_symlink() and (it / "policy" / "config.json").exists()
