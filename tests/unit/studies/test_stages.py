"""The study runner: done stages are kept, a failed stage is where a rerun starts, and whatever
follows a stage that ran runs again; changed settings rerun that stage and the rest."""

import json

import pytest

from raylign.studies.stages import Stage, StageFailed, run_stages


def _stages(tmp_path, calls, fail=None, settings=None):
    def body(name):
        def run():
            calls.append(name)
            if name == fail:
                raise RuntimeError(f"{name} broke")
            (tmp_path / name).write_text("out")
            return {"wrote": name}
        return run

    names = ["a", "b", "c"]
    return [Stage(n, body(n), (tmp_path / n,), (settings or {}).get(n, {})) for n in names]


def test_a_rerun_starts_at_the_stage_that_failed(tmp_path):
    calls = []
    with pytest.raises(RuntimeError, match="b broke"):
        run_stages(_stages(tmp_path, calls, fail="b"), tmp_path / "study", log=lambda _: None)
    assert calls == ["a", "b"]
    state = json.loads((tmp_path / "study" / "stages.json").read_text())
    assert state["b"]["fingerprint"] is None and "b broke" in state["b"]["failed"]
    calls.clear()
    records = run_stages(_stages(tmp_path, calls), tmp_path / "study", log=lambda _: None)
    assert calls == ["b", "c"] and records["c"]["summary"] == {"wrote": "c"}
    calls.clear()
    run_stages(_stages(tmp_path, calls), tmp_path / "study", log=lambda _: None)
    assert calls == []  # everything done: nothing runs


def test_changed_settings_or_lost_outputs_rerun_that_stage_and_every_later_one(tmp_path):
    calls = []
    run_stages(_stages(tmp_path, calls), tmp_path / "study", log=lambda _: None)
    calls.clear()
    run_stages(_stages(tmp_path, calls, settings={"b": {"lr": 2}}), tmp_path / "study", log=lambda _: None)
    assert calls == ["b", "c"]
    calls.clear()
    (tmp_path / "a").unlink()
    run_stages(_stages(tmp_path, calls, settings={"b": {"lr": 2}}), tmp_path / "study", log=lambda _: None)
    assert calls == ["a", "b", "c"]


def test_a_stage_that_writes_nothing_fails(tmp_path):
    stage = Stage("quiet", lambda: None, (tmp_path / "never",))
    with pytest.raises(StageFailed, match="quiet finished without writing"):
        run_stages([stage], tmp_path / "study", log=lambda _: None)
