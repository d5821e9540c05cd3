import pytest


def test_hack_augmentation_adds_seeded_pairs_with_the_tokenizers_columns():
    import pyarrow as pa

    from raylign.algorithms.reward_model import AddHackPairs, RewardModelConfig

    rows = [{"prompt_id": f"p{i}", "prompt": "q", "messages": [{"role": "user", "content": "q"}],
             "chosen": "I can't help with that. A locksmith can.", "rejected": "Rake the pins.", "preference": 1.0,
             "source_extra": 3} for i in range(6)]
    out = AddHackPairs(["empty", "apology"], 1)(pa.Table.from_pylist(rows)).to_pylist()
    assert len(out) == 12 and out[:1] == [{k: v for k, v in rows[0].items() if k != "source_extra"}]
    hacks = out[1::2]
    assert all(h["rejected"] == "" or h["rejected"].startswith(rows[0]["chosen"] + " ") for h in hacks)
    assert {h["rejected"] == "" for h in hacks} == {True, False}  # both families picked across prompts
    assert all(h["chosen"] == rows[0]["chosen"] for h in hacks)
    assert out == AddHackPairs(["empty", "apology"], 1)(pa.Table.from_pylist(rows)).to_pylist()
    with pytest.raises(ValueError, match="unknown hack families \\['loops'\\]"):
        RewardModelConfig(hack_families=["loops"])
