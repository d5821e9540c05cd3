"""RAFT degenerate filter, best-sample selection and SFT loss."""

from __future__ import annotations

import pytest

from raylign.algorithms.raft import RAFTConfig, is_degenerate, select_best
from raylign.config import ConfigError, build_config

CFG = RAFTConfig()
OK_IDS = [11, 12, 13, 2]


def _row(uid, reward, response="A fine answer.", ids=None, finish="stop", name=None):
    return {"prompt_uid": uid, "reward": reward, "response": response,
            "response_token_ids": list(OK_IDS if ids is None else ids), "finish_reason": finish,
            "name": name or f"{uid}:{reward}"}


@pytest.mark.parametrize("text, ids, finish, reason", [
    ("A fine answer.", OK_IDS, "stop", None),
    ("   \n", OK_IDS, "stop", "empty"),
    ("", [2], "stop", "empty"),
    ("Hi", [2], "stop", "too_short"),  # one token (EOS) < min_response_tokens = 2
    ("Sure.<|im_end|>", OK_IDS, "stop", "chat_marker"),
    ("Sure. <|im_start|>user", OK_IDS, "stop", "chat_marker"),
    ("Sure.\n\nHuman: and you?", OK_IDS, "stop", "chat_marker"),
    ("Sure.\nAssistant: again", OK_IDS, "stop", "chat_marker"),
    ("A cut-off answ", OK_IDS, "length", None),  # truncation allowed by default
    ("la la la", [5, 6, 7, 8] * 5, "stop", "repetition"),  # a 4-gram 5 times > 4
    ("la la la", [5, 6, 7, 8] * 4, "stop", None),  # exactly 4 times is allowed
])
def test_is_degenerate(text, ids, finish, reason):
    assert is_degenerate(text, ids, finish, CFG) == reason


def test_is_degenerate_options():
    strict = RAFTConfig(reject_truncated=True, max_repeated_ngram=1, ngram_size=2, min_response_tokens=5)
    assert is_degenerate("A cut-off answ", [1, 2, 3, 4, 5], "length", strict) == "truncated"
    assert is_degenerate("ok", [1, 2, 3, 4], "stop", strict) == "too_short"
    assert is_degenerate("ab ab", [1, 2, 1, 2, 9], "stop", strict) == "repetition"  # (1, 2) twice
    off = RAFTConfig(max_repeated_ngram=None, reject_markers=[])
    assert is_degenerate("Human: hi", [7] * 50, "stop", off) is None


def test_select_best_local():
    rows = [
        _row("p1", 0.5, name="p1-ok"),
        _row("p1", 3.0, response="x <|im_start|>", name="p1-best-but-degenerate"),
        _row("p2", 1.0, response="", name="p2-empty"),
        _row("p1", 0.9, name="p1-best"),
        _row("p3", 2.0, name="p3-first"),
        _row("p3", 2.0, name="p3-tie"),
        _row("p2", 9.0, ids=[2], name="p2-short"),
    ]
    kept, stats = select_best(rows, RAFTConfig(mode="local"))
    assert [r["name"] for r in kept] == ["p1-best", "p3-first"]
    assert kept[0] is rows[3]
    assert stats["num_samples"] == 7 and stats["num_prompts"] == 3
    assert stats["num_valid"] == 4 and stats["num_degenerate"] == 3 and stats["num_kept"] == 2
    assert stats["degenerate_chat_marker"] == 1 and stats["degenerate_empty"] == 1
    assert stats["degenerate_too_short"] == 1 and stats["degenerate_repetition"] == 0
    assert stats["prompts_without_valid"] == 1
    assert stats["kept_reward_mean"] == pytest.approx((0.9 + 2.0) / 2)


def test_min_reward_keeps_only_samples_that_reach_it():
    """Expert iteration on a checked answer: a prompt with no correct sample trains on nothing."""
    rows = [_row("p1", 0.0, name="p1-wrong"), _row("p1", 1.0, name="p1-right"),
            _row("p2", 0.0, name="p2-wrong"), _row("p2", 0.0, name="p2-wrong-too"),
            _row("p3", 1.0, response="", name="p3-right-but-empty")]
    kept, stats = select_best(rows, RAFTConfig(min_reward=1.0))
    assert [r["name"] for r in kept] == ["p1-right"]
    assert stats["num_below_min_reward"] == 3 and stats["num_degenerate"] == 1 and stats["num_valid"] == 4
    assert stats["prompts_without_valid"] == 2
    assert select_best(rows[2:4], RAFTConfig(min_reward=0.5))[0] == []
    assert [r["name"] for r in select_best(rows, RAFTConfig())[0]] == ["p1-right", "p2-wrong"]


def test_select_best_top_fraction():
    rows = [_row(f"p{i % 3}", float(r), name=f"r{i}") for i, r in enumerate([3, 9, 1, 7, 5, 9, 0, 2, 4, 6])]
    rows.append(_row("p0", 100.0, response="Human: hack", name="degenerate"))
    kept, stats = select_best(rows, RAFTConfig(mode="top", top_fraction=0.25))
    # 10 valid, int(0.25 * 10) = 2 kept: the two 9s, the earlier row first
    assert [r["name"] for r in kept] == ["r1", "r5"]
    assert stats["num_kept"] == 2 and stats["num_degenerate"] == 1
    kept_min, _ = select_best(rows, RAFTConfig(mode="top", top_fraction=0.01))
    assert [r["name"] for r in kept_min] == ["r1"]  # at least one


def test_select_best_nothing_valid():
    kept, stats = select_best([_row("p", 1.0, response="")], RAFTConfig(mode="top"))
    assert kept == [] and stats["num_kept"] == 0 and stats["kept_reward_mean"] == 0.0
    kept, _ = select_best([], CFG)
    assert kept == []


def test_raft_config():
    cfg = RAFTConfig()
    assert (cfg.mode, cfg.top_fraction, cfg.min_response_tokens, cfg.reject_truncated) == ("local", 0.125, 2, False)
    assert "<|im_start|>" in cfg.reject_markers and "Human:" in cfg.reject_markers
    with pytest.raises(ConfigError):
        build_config(RAFTConfig, {"mode": "global"})
    with pytest.raises(ValueError, match="top_fraction"):
        select_best([_row("p", 1.0)], RAFTConfig(mode="top", top_fraction=0.0))
