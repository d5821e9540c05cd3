"""Leaderboard figures: hand-computed values, and equality with the `alpaca-eval` package's own functions."""

import json
import math

import pytest

from raylign.evaluation.leaderboard import (
    leaderboard,
    length_controlled_winrate,
    read_annotations,
    winrate,
)
from raylign.evaluation.leaderboard_cli import main as leaderboard_main
from raylign.evaluation.leaderboard_cli import pair_outputs


def test_winrate_by_hand():
    # 1 = baseline wins, 2 = model wins, 1.5 and the legacy 0 are ties, None is not annotated.
    out = winrate([1, 2, 1.5, 1.75, None, 0])
    # p - 1 over the valid rows: 0, 1, 0.5, 0.75, 0.5 -> mean 0.55; deviations^2 sum 0.55 -> sem sqrt(0.55/4/5)
    assert out["win_rate"] == pytest.approx(55.0)
    assert out["standard_error"] == pytest.approx(100 * math.sqrt(0.55 / 4 / 5))
    assert (out["n_wins"], out["n_wins_base"], out["n_draws"], out["n_total"]) == (2, 1, 2, 5)
    assert out["discrete_win_rate"] == pytest.approx(60.0)  # 1.75 rounds to a win


def test_ties_count_half():
    assert winrate([1.5, 1.5, 2, 1])["win_rate"] == pytest.approx(50.0)
    assert winrate([2, 2, 2, 1.5])["win_rate"] == pytest.approx(87.5)


def test_length_controlled_recovers_the_equal_length_rate():
    """Soft preferences drawn from the GLM itself: sigmoid(w * tanh(dlen / std) + b) with a strong
    length effect w; at equal length the model wins sigmoid(b) of the time, whatever w did raw."""
    import random
    import statistics

    rng = random.Random(0)
    model_len = [rng.randint(50, 3000) for _ in range(400)]
    base_len = [rng.randint(50, 1000) for _ in range(400)]  # the model is longer on average
    deltas = [b - m for m, b in zip(model_len, base_len)]
    std = statistics.stdev(deltas)
    for bias in (0.0, 1.0):
        prefs = [1 + 1 / (1 + math.exp(-(-2.0 * math.tanh(d / std) + bias))) for d in deltas]
        raw = winrate(prefs)["win_rate"]
        lc = length_controlled_winrate(prefs, model_len, base_len)
        assert lc == pytest.approx(100 / (1 + math.exp(-bias)), abs=0.5)
        assert raw > lc + 5  # the raw rate rewards the extra length


def test_bad_annotation_names_file_and_field(tmp_path):
    from raylign.data.readers import DataError

    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps({"output_1": "a", "output_2": "b", "generator_1": "x", "preference": 1}) + "\n")
    with pytest.raises(DataError, match=r"a.jsonl:1: missing field 'generator_2'"):
        read_annotations(path)
    path.write_text(json.dumps({"output_1": "a", "output_2": "b", "generator_1": "x", "generator_2": "y", "preference": "2"}) + "\n")
    with pytest.raises(DataError, match="preference"):
        read_annotations(path)


# --- against the alpaca-eval package ------------------------------------------------------


@pytest.fixture(scope="module")
def gpt4_pairs(shared_data):
    return read_annotations(shared_data / "alpaca_eval_gpt4_pairs.jsonl.gz")


@pytest.fixture
def alpaca_eval_glm(monkeypatch, tmp_path):
    """alpaca_eval's GLM module with its hub download replaced by a local, neutral file.

    The package fetches per-instruction difficulties and gamed-baseline annotations from a hub;
    raylign never downloads, so the comparison uses its `length_controlled_minimal` GLM, which
    reads neither (the file only has to exist and cover the row indices).
    """
    pd = pytest.importorskip("pandas")
    glm = pytest.importorskip("alpaca_eval.metrics.glm_winrate")
    path = tmp_path / "df_gamed.csv"
    pd.DataFrame(
        {"index": range(5000), "instruction_difficulty": 0.0, "model": "none", "preference": 0.5,
         "std_delta_len": 0.0, "not_gamed_baseline": False}
    ).to_csv(path, index=False)
    monkeypatch.setattr(glm, "hf_hub_download", lambda **kwargs: str(path))
    return glm


def test_winrates_equal_alpaca_eval(gpt4_pairs):
    winrate_module = pytest.importorskip("alpaca_eval.metrics.winrate")
    table = {e["name"]: e for e in leaderboard(gpt4_pairs, length_controlled=False)}
    assert len(table) == 30
    for name, mine in table.items():
        rows = [r for r in gpt4_pairs if r["generator_2"] == name]
        theirs = winrate_module.get_winrate(rows)
        for key in ("win_rate", "standard_error", "discrete_win_rate"):
            assert mine[key] == pytest.approx(float(theirs[key]), rel=1e-9, abs=1e-9), (name, key)
        for key in ("n_wins", "n_wins_base", "n_draws", "n_total"):
            assert mine[key] == int(theirs[key]), (name, key)
        assert mine["avg_length"] == int(sum(len(r["output_2"]) for r in rows) / len(rows))


def test_length_controlled_equals_alpaca_eval(gpt4_pairs, alpaca_eval_glm):
    pd = pytest.importorskip("pandas")
    names = ["gpt-3.5-turbo-0301", "falcon-40b-instruct", "FuseChat-Llama-3.2-1B-Instruct", "gpt4_0613_concise"]
    rows = [r for r in gpt4_pairs if r["generator_2"] in names]
    table = {e["name"]: e for e in leaderboard(rows)}
    for name in names:
        df = pd.DataFrame([r for r in rows if r["generator_2"] == name]).reset_index(drop=True)
        theirs = alpaca_eval_glm.get_length_controlled_winrate(
            df, glm_name="length_controlled_minimal", save_weights_dir=None, is_warn_extreme_changes=False
        )
        assert table[name]["length_controlled_winrate"] == pytest.approx(theirs["length_controlled_winrate"], rel=1e-6)
        assert table[name]["win_rate"] == pytest.approx(theirs["win_rate"], rel=1e-9)


def test_from_outputs_annotated_and_scored_like_alpaca_eval(shared_data, tmp_path, alpaca_eval_glm):
    """AlpacaFarm's pairs as two outputs files -> annotate with a reward function -> score -> files."""
    winrate_module = pytest.importorskip("alpaca_eval.metrics.winrate")
    pairs = json.loads((shared_data / "alpaca_farm_outputs_pairs.json").read_text())
    ref = [{"instruction": p["instruction"], "input": p["input"], "output": p["output_1"], "generator": "ref"} for p in pairs]
    model = [{"instruction": p["instruction"], "input": p["input"], "output": p["output_2"], "generator": "model"} for p in pairs]
    (tmp_path / "ref.json").write_text(json.dumps(ref))
    (tmp_path / "model.json").write_text(json.dumps(model))
    out = tmp_path / "lb" / "results.json"
    rc = leaderboard_main(
        ["--model-outputs", str(tmp_path / "model.json"), "--reference-outputs", str(tmp_path / "ref.json"),
         "--annotator", "fn:raylign.scoring.rule_rewards:concise", "--output", str(out)]
    )
    assert rc == 0
    annotations = json.loads((tmp_path / "lb" / "results_annotations.json").read_text())
    assert len(annotations) == len(pairs)
    for a in annotations:  # `concise` prefers answers nearer 30 words
        d1, d2 = (abs(len(a[k].split()) - 30) for k in ("output_1", "output_2"))
        assert a["preference"] == (1.5 if d1 == d2 else (2.0 if d2 < d1 else 1.0))
    [row] = json.loads(out.read_text())
    theirs = winrate_module.get_winrate(annotations)
    assert row["win_rate"] == pytest.approx(float(theirs["win_rate"]))
    assert row["n_total"] == len(pairs) and row["baseline"] == "ref"
    lc = alpaca_eval_glm.get_length_controlled_winrate(
        pd_frame(annotations), glm_name="length_controlled_minimal", save_weights_dir=None, is_warn_extreme_changes=False
    )
    assert row["length_controlled_winrate"] == pytest.approx(lc["length_controlled_winrate"], rel=1e-6)
    assert out.with_suffix(".csv").read_text().startswith("name,win_rate,standard_error")
    assert out.with_suffix(".png").stat().st_size > 1000
    # The written annotations read back through --annotations give the same table.
    again = tmp_path / "again.json"
    assert leaderboard_main(["--annotations", str(tmp_path / "lb" / "results_annotations.json"), "--output", str(again)]) == 0
    assert json.loads(again.read_text()) == [row]


def pd_frame(rows):
    import pandas as pd

    return pd.DataFrame(rows)


def test_missing_reference_names_the_row():
    from raylign.data.readers import DataError

    model = [{"instruction": "a", "input": "", "output": "x", "generator": "m", "source": "m.json[0]"}]
    with pytest.raises(DataError, match=r"m.json\[0\].*no reference output in ref.json"):
        pair_outputs(model, [{"instruction": "b", "input": "", "output": "y", "generator": "r"}], "ref.json")
