"""Every method's seeded 2-step run gives the per-step metrics recorded in golden.json
(see method_runs.py): a refactor that changes what a method computes fails here."""

from __future__ import annotations

import json
import math
import os

import pytest

from raylign.launch.methods import METHODS
from tests.invariant.method_runs import (
    GOLDEN,
    ONLINE,
    offline_recipes,
    online_recipe,
    read_steps,
    run_recipe_file,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RECORD = os.environ.get("RAYLIGN_RECORD_GOLDEN") == "1"
REL, ABS = 2e-3, 2e-4  # float noise of thread counts and reductions, far below any behaviour change


def check_or_record(name: str, steps: list[dict[str, float]]) -> None:
    golden = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    if RECORD:
        golden[name] = steps
        GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
        return
    assert name in golden, f"no golden run for {name}: record with RAYLIGN_RECORD_GOLDEN=1"
    expected = golden[name]
    assert len(steps) == len(expected), f"{name}: {len(steps)} steps, golden has {len(expected)}"
    for step, (got, want) in enumerate(zip(steps, expected), start=1):
        missing = sorted(set(want) - set(got))
        assert not missing, f"{name} step {step}: metrics no longer logged: {missing}"
        for key, value in want.items():
            assert math.isclose(got[key], value, rel_tol=REL, abs_tol=ABS), \
                f"{name} step {step}: {key} = {got[key]!r}, golden {value!r}"


OFFLINE = ["rm", "sft", "dpo", "rrhf-offline", "cut"]


def test_every_registered_method_has_a_golden_run():
    covered = {words[1] for words, _ in ONLINE.values()} | set(OFFLINE)
    assert {m.name for m in METHODS} <= covered


@pytest.mark.parametrize("name", list(ONLINE))
def test_online_method_matches_golden(ray_cluster, tiny_model_dir, tmp_path, name):
    words, method = ONLINE[name]
    out = tmp_path / "run"
    snapshots = ["engine.trainer.snapshot_every=1"] if name == "ppo" else []  # the over-optimisation curve's input
    assert run_recipe_file(words, online_recipe(str(tiny_model_dir), out, method), tmp_path, snapshots) == 0
    check_or_record(name, read_steps(out / "metrics.jsonl", offline=False))
    assert (out / "final" / "config.json").exists() and (out / "reward_curve.png").exists()
    if snapshots:
        assert sorted(p.name for p in (out / "snapshots").iterdir()) == ["step_0001", "step_0002"]
        assert (out / "snapshots" / "step_0001" / "model.safetensors").exists()
    if name == "grpo":  # the shipped Grafana dashboard plots only what a run exports
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert dashboard_metric_names() <= {k for row in rows for k in row}


def dashboard_metric_names() -> set[str]:
    """Metric keys the Grafana dashboard queries (as `ray_raylign_<key>`)."""
    import re
    from pathlib import Path

    dashboard = json.loads((Path(__file__).parents[2] / "cluster" / "grafana_raylign.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    names = {m for e in exprs for m in re.findall(r"ray_raylign_([a-zA-Z0-9_]+)", e)}
    assert names and all(p["type"] == "timeseries" for p in dashboard["panels"])
    return names



@pytest.mark.parametrize("name", OFFLINE)
def test_offline_method_matches_golden(ray_cluster, tiny_model_dir, tmp_path, name):
    words, recipe = offline_recipes(str(tiny_model_dir), tmp_path)[name]
    assert run_recipe_file(words, recipe, tmp_path / "recipe") == 0
    check_or_record(name, read_steps(tmp_path / name / "metrics.jsonl", offline=True))
