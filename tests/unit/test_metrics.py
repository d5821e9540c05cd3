"""MetricsLogger: JSONL, console line, PNG curve, Ray gauges (faked: no Ray started here)."""

from __future__ import annotations

import json
import sys
import types

import pytest

from raylign import metrics as metrics_mod
from raylign.metrics import MetricsLogger, progress, read_metrics, sanitize_metric_name

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_jsonl_written_and_readable(tmp_path, capsys):
    logger = MetricsLogger(tmp_path / "run", "rrhf-test", ray_metrics=True)  # Ray not initialised: must be fine
    logger.log(0, {"reward_mean": 0.5, "loss": 2.0})
    logger.log(1, {"reward_mean": 0.75, "reward_max": 1.5, "accuracy": float("nan"), "tag": "x"})
    logger.close()
    logger.close()  # idempotent

    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])  # strict JSON per line
    assert first["step"] == 0 and first["reward_mean"] == 0.5 and first["loss"] == 2.0
    assert isinstance(first["time"], float)
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert records == read_metrics(tmp_path / "run")
    assert [r["step"] for r in records] == [0, 1]
    assert records[1]["reward_max"] == 1.5
    assert records[1]["accuracy"] is None  # NaN -> null keeps the file strict JSON
    assert records[1]["tag"] == "x"
    assert "NaN" not in lines[1]

    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == "[rrhf-test] step 0 reward_mean=0.5 loss=2"
    assert out[1].startswith("[rrhf-test] step 1 ") and "reward_max=1.5" in out[1]


def test_log_appends_across_loggers_and_accepts_tensors(tmp_path):
    import torch

    with MetricsLogger(tmp_path, "a", ray_metrics=False) as logger:
        logger.log(0, {"loss": torch.tensor(3.0)})
    with MetricsLogger(tmp_path, "a", ray_metrics=False) as logger:
        logger.log(1, {"loss": 1})
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path)] == [(0, 3.0), (1, 1.0)]
    with pytest.raises(RuntimeError):
        logger.log(2, {"loss": 0.0})


def test_plot_writes_png_and_skips_missing_keys(tmp_path):
    logger = MetricsLogger(tmp_path, "plot", ray_metrics=False)
    for step in range(5):
        logger.log(step, {"reward_mean": step * 0.1, "loss": 1.0 / (step + 1)})
    path = logger.plot(keys=("reward_mean", "reward_max"))  # reward_max never logged
    assert path == tmp_path / "reward_curve.png"
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1000
    assert logger.plot(keys=("nothing_here",), filename="none.png") is None
    assert not (tmp_path / "none.png").exists()
    logger.close()


def test_sanitize_metric_name():
    assert sanitize_metric_name("reward/mean-1.5 x") == "reward_mean_1_5_x"
    assert sanitize_metric_name("ok_Name9") == "ok_Name9"


def test_ray_gauges_with_a_fake_ray(tmp_path, monkeypatch):
    """The gauge path, without starting Ray: a stand-in `ray` that reports itself initialised."""
    created: dict[str, "FakeGauge"] = {}

    class FakeGauge:
        def __init__(self, name, description="", tag_keys=()):
            assert name not in created, "gauges must be created once per name"
            self.name, self.tag_keys, self.values = name, tuple(tag_keys), []
            created[name] = self

        def set(self, value, tags=None):
            self.values.append((value, dict(tags or {})))

    fake_ray = types.ModuleType("ray")
    fake_ray.is_initialized = lambda: True
    fake_util = types.ModuleType("ray.util")
    fake_metrics = types.ModuleType("ray.util.metrics")
    fake_metrics.Gauge = FakeGauge
    fake_ray.util, fake_util.metrics = fake_util, fake_metrics
    for name, module in (("ray", fake_ray), ("ray.util", fake_util), ("ray.util.metrics", fake_metrics)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(metrics_mod, "_GAUGES", {})

    with MetricsLogger(tmp_path, "run-1", ray_metrics=True) as logger:
        logger.log(0, {"reward/mean": 0.25, "bad": float("inf")})
        logger.log(1, {"reward/mean": 0.5})
    assert set(created) == {"raylign_reward_mean"}  # non-finite values are not exported
    gauge = created["raylign_reward_mean"]
    assert gauge.tag_keys == ("run",)
    assert gauge.values == [(0.25, {"run": "run-1"}), (0.5, {"run": "run-1"})]

    with MetricsLogger(tmp_path, "off", ray_metrics=False) as logger:
        logger.log(2, {"reward/mean": 9.0})
    assert len(gauge.values) == 2


def test_ray_gauge_failure_does_not_break_logging(tmp_path, monkeypatch, capsys):
    fake_ray = types.ModuleType("ray")
    fake_ray.is_initialized = lambda: True
    monkeypatch.setitem(sys.modules, "ray", fake_ray)
    # no ray.util: the import fails even when an earlier test imported the real one
    monkeypatch.setitem(sys.modules, "ray.util", None)
    monkeypatch.setitem(sys.modules, "ray.util.metrics", None)
    with MetricsLogger(tmp_path, "r", ray_metrics=True) as logger:
        logger.log(0, {"x": 1.0})
        logger.log(1, {"x": 2.0})
        assert logger.ray_metrics is False
    assert [r["x"] for r in read_metrics(tmp_path)] == [1.0, 2.0]
    assert capsys.readouterr().err.count("Ray metrics disabled") == 1


def test_progress_bar_counts(capsys):
    bar = progress(3, "sampling")
    for _ in range(3):
        bar.update(1)
    assert bar.n == 3 and bar.total == 3 and bar.mininterval == 1
    bar.close()
    assert "sampling" in capsys.readouterr().err


def test_running_mean_and_trend_summary():
    from raylign.metrics import running_mean, trend_summary

    assert running_mean([1.0, 2.0, 3.0, 4.0], 2) == [1.0, 1.5, 2.5, 3.5]
    assert running_mean([2.0, 4.0, 6.0], 5) == [2.0, 3.0, 4.0]
    records = [{"step": i + 1, "reward_mean": v} for i, v in enumerate([0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4])]
    assert trend_summary(records) == "reward_mean: first 2 steps 0.100 -> last 2 steps 1.300 (8 steps)"
    assert trend_summary(records[:3]) is None  # too short to call a trend


def test_plot_draws_a_running_mean(tmp_path):
    from raylign.metrics import MetricsLogger

    with MetricsLogger(tmp_path, "t", ray_metrics=False) as logger:
        for step in range(1, 9):
            logger.log(step, {"reward_mean": step * 0.1})
        assert logger.plot().read_bytes().startswith(PNG_MAGIC)
