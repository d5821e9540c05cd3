"""LMFlow's two-stage HH reward model (jobs/sft_hh_lmflow.yaml -> jobs/rm_hh_lmflow.yaml): the
chain is wired, it holds out what jobs/rm_hh.yaml holds out, and it differs from the one-stage
recipe only where LMFlow does."""

from __future__ import annotations

from pathlib import Path

import pytest

from raylign.config import ConfigError, load_config
from raylign.launch.recipes import recipe_class_for

JOBS = Path(__file__).resolve().parents[3] / "jobs"
SPLIT = ("path", "format", "on_error", "test_fraction", "validation_fraction", "split_seed")


def _load(name: str):
    path = JOBS / name
    return load_config(recipe_class_for(path), path)


@pytest.fixture(scope="module")
def recipes():
    return _load("sft_hh_lmflow.yaml"), _load("rm_hh_lmflow.yaml"), _load("rm_hh.yaml")


def test_the_reward_model_starts_from_the_sft_stage_on_the_same_split(recipes):
    sft, rm, one_stage = recipes
    assert type(sft).__name__.startswith("SFT") and type(rm).__name__.startswith("RewardModel")
    assert rm.model == sft.output_dir == "runs/sft_hh_lmflow" and rm.output_dir == "runs/rm_hh_lmflow"
    for key in SPLIT:
        assert getattr(sft.data, key) == getattr(rm.data, key) == getattr(one_stage.data, key), key
    assert sft.data.prompt_format == rm.data.prompt_format == "chat"
    assert sft.max_steps is not None and sft.trainable == "top_layers"


def test_lmflow_settings_and_nothing_else_differs_from_the_one_stage_recipe(recipes):
    _, rm, one_stage = recipes
    assert (rm.epochs, rm.optim.schedule, rm.data.max_length, rm.data.over_long) == (1, "linear", 512, "drop")
    assert rm.optim.lr == one_stage.optim.lr and rm.rm.head_lr == one_stage.rm.head_lr
    assert rm.rm.export_delta is None  # never rewrites the shipped hh-rm-smollm2 delta
    same = ("trainable", "top_layers", "batch_size", "grad_accum", "bf16", "num_workers", "seed")
    assert [getattr(rm, k) for k in same] == [getattr(one_stage, k) for k in same]


def test_the_sft_stage_never_trains_on_a_held_out_reward_model_pair(recipes):
    from raylign.data.adapters import load_rows
    from raylign.data.bundled import BUNDLED_HH
    from raylign.data.splits import select_split

    sft, rm, _ = recipes

    def ids(kind, split, data):
        rows = load_rows(BUNDLED_HH, kind, "hh", None, "skip")
        return {r["prompt_id"] for r in select_split(rows, split, data.test_fraction, data.validation_fraction,
                                                     data.split_seed)}

    test_pairs = ids("preference", "test", rm.data)
    assert test_pairs and not test_pairs & ids("sft", "train", sft.data)


def test_before_the_sft_stage_runs_the_preflight_names_the_missing_folder(recipes, tmp_path, monkeypatch):
    from raylign.preflight import check_config

    _, rm, _ = recipes
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(ConfigError, match=r"^model: runs/sft_hh_lmflow does not exist .*run that first\)$"):
        check_config(rm)
