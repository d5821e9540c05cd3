"""The deterministic held-out split and the soft labels of RM training data."""

import pytest

from raylign.config import ConfigError, load_config
from raylign.data.adapters import human_probability
from raylign.data.splits import select_split, split_of
from raylign.launch.recipes import recipe_class


def test_split_is_deterministic_disjoint_and_close_to_the_fractions():
    rows = [{"prompt_id": f"p{i}"} for i in range(4000)]
    parts = {s: select_split(rows, s, 0.2, 0.1, seed=0) for s in ("train", "validation", "test")}
    ids = [set(r["prompt_id"] for r in part) for part in parts.values()]
    assert sum(len(s) for s in ids) == 4000 and not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert len(parts["test"]) == pytest.approx(800, abs=80)
    assert len(parts["validation"]) == pytest.approx(320, abs=60)
    assert split_of("p7", 0.2, 0.1, 0) == split_of("p7", 0.2, 0.1, 0)
    # the test side does not move when only the validation share changes
    assert select_split(rows, "test", 0.2, 0.3, 0) == parts["test"]


def test_human_probability_from_soft_preferences():
    assert human_probability({"preference": 1.0}) == 1.0  # hard label (HH, generic)
    assert human_probability({"preference": 2.0}) == 1.0  # AlpacaEval: output_2 surely better
    assert human_probability({"preference": 1.25}) == pytest.approx(0.75)
    assert human_probability({"preference": 1.9}) == pytest.approx(0.9)


def test_recipe_rejects_unknown_keys(tmp_path):
    path = tmp_path / "rm.yaml"
    path.write_text("data:\n  max_lenght: 10\n")
    with pytest.raises(ConfigError, match="data.max_lenght"):
        load_config(recipe_class("rm"), path)


def test_shipped_recipe_loads():
    from pathlib import Path

    config = load_config(recipe_class("rm"), Path(__file__).parents[3] / "jobs" / "rm_hh.yaml", ["top_layers=2"])
    assert config.top_layers == 2 and config.data.on_error == "skip"
