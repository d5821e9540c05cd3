"""`raylign bench ensemble` on the tiny RM: both passes run and their scores agree."""

import json

from raylign.benchmarks.ensemble_bench import main


def test_shared_trunk_and_member_by_member_score_alike(tiny_reward_model_dir, tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"question {i}?", "chosen": f"answer {i}.", "rejected": "no"}) + "\n"
                            for i in range(40)))
    out = tmp_path / "ensemble.json"
    assert main(["--model", str(tiny_reward_model_dir), "--members", "2", "--top-layers", "1", "--data", str(data),
                 "--pairs", "6", "--train-steps", "1", "--repeats", "1", "--max-length", "64", "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["members"] == 2 and report["max_score_difference"] < 1e-5
    assert len(report["score_seconds"]["shared"]) == 1 and len(report["train_seconds"]["full"]) == 1
