"""The ALMoST study's plan validates, chains the synthetic RM through every later stage, and its
table reads the RM's human-label accuracy and `eval compare`'s rows."""

import json

from raylign.config import load_config
from raylign.studies.almost import AlmostStudy, plan, write_table
from raylign.studies.cli import validate


def test_the_shipped_study_plans_the_chain_and_validates():
    config = load_config(AlmostStudy, "jobs/study/almost_study.yaml")
    stages = plan(config)
    assert [s.name for s in stages] == ["comparisons", "rm", "rm_human", "rmsp", "sft", "rl", "compare", "table"]
    validate(stages)
    argv = {s.name: s.settings.get("argv", []) for s in stages}
    rm = "runs/almost_study/rm"
    assert f"reward.model={rm}" in argv["rmsp"] and f"reward.model={rm}" in argv["rl"]
    assert argv["compare"][argv["compare"].index("--judge") + 1] == "rm:hh-rm-smollm2"  # not the synthetic RM
    assert argv["rm_human"][argv["rm_human"].index("--split") + 1] == "test"


def test_table_reads_the_reports(tmp_path):
    (tmp_path / "rm_human.json").write_text(json.dumps({"accuracy": 0.5625, "pairs": 389}))
    start = {"policy": "start", "reward_mean": 0.1, "reference_ppl": 2.0, "response_tokens_mean": 40.0,
             "repeated_4grams": 0.1}
    rl = {**start, "policy": "grpo", "reward_mean": 0.3, "reward_delta": 0.2, "reward_delta_se": 0.05,
          "win_rate_vs_start": 55.0, "win_rate_se": 2.5}
    (tmp_path / "compare.json").write_text(json.dumps({"report": [start, rl]}))
    text = (tmp_path / "study.md").read_text() if write_table(tmp_path) else ""
    assert "accuracy 56.2% (389 pairs)" in text
    assert "| grpo | 0.300 | +0.200 ± 0.050 | 2.00 | 40.0 | 10% | 55.0 ± 2.5 |" in text
    assert "| start | 0.100 |  |" in text and "(baseline)" in text
