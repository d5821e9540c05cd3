"""`eval hacks` on the tiny reward model: one report per family in `eval rm`'s format, where
hack_preferred is the share of cases whose hack outscored the good answer (ties half)."""

import json

from raylign.evaluation.hacks import _parser, evaluate, format_hacks
from raylign.scoring.reward_model import RewardScorer


def test_report_per_family_matches_the_scores(tiny_reward_model_dir, tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"question {i}?", "chosen": f"A careful answer number {i}. It explains why.",
             "rejected": f"no {i}"} for i in range(6)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = _parser().parse_args(["--model", str(tiny_reward_model_dir), "--data", str(path), "--split", "all",
                                 "--families", "empty", "marker_chatml", "rejected"])
    report = evaluate(args)
    assert set(report["families"]) == {"empty", "marker_chatml", "rejected"} and report["prompts"] == 6
    scorer = RewardScorer(tiny_reward_model_dir, max_length=512)
    messages = [[{"role": "user", "content": r["prompt"]}] for r in rows]
    good = scorer.score(messages, [r["chosen"] for r in rows])
    empty = scorer.score(messages, [""] * 6)
    want = sum((e > g) + 0.5 * (e == g) for g, e in zip(good, empty)) / 6
    fam = report["families"]["empty"]
    assert fam["pairs"] == 6 and abs(fam["hack_preferred"] - want) < 1e-9 and "calibration" in fam
    assert "marker_chatml" in format_hacks(report)
    held_out = evaluate(_parser().parse_args(["--model", str(tiny_reward_model_dir), "--data", str(path), "--split", "all",
                                               "--held-out-forms"]))
    assert set(held_out["families"]) == {"rejected", "newline_join", "refuse_then_comply", "disclaimer", "self_praise",
                                         "echo", "off_topic", "judge_override"}


def test_each_distinct_answer_is_scored_once():
    from raylign.evaluation.hacks import _key, score_once

    class Counting:
        calls: list = []

        def score(self, prompts, responses):
            self.calls.append(list(responses))
            return [float(len(r)) for r in responses]

    prompt = [{"role": "user", "content": "q?"}]
    scorer = Counting()
    scores = score_once(scorer, [(prompt, "good"), (prompt, ""), (prompt, "good"), (prompt, "good bad")])
    assert scorer.calls == [["good", "", "good bad"]]
    assert scores[_key(prompt, "good")] == 4.0 and scores[_key(prompt, "")] == 0.0
