"""Observability for training loops: a JSONL log, one console line, Ray gauges, a PNG curve.

The JSONL file is the source of truth (it survives the cluster and is trivial to
re-plot); Ray gauges mirror the latest values onto the Ray Dashboard / Prometheus
while a job runs; the console line is for whoever is watching `ray job logs -f`.
"""

from __future__ import annotations

import json
import math
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterable

from tqdm import tqdm

_GAUGES: dict[str, Any] = {}  # one gauge per metric name per process, shared by loggers (runs differ by tag)
_GAUGES_LOCK = threading.Lock()


def sanitize_metric_name(name: str) -> str:
    """Prometheus-safe suffix: every character outside [a-zA-Z0-9_] becomes '_'."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", str(name))


def _to_number(value: Any) -> float | None:
    """float(value) for numbers, 0-d tensors and numpy scalars; None for anything else."""
    if isinstance(value, bool):
        return float(value)
    try:
        return float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError, RuntimeError):
        return None


def _ray_ready() -> bool:
    # Never import ray just to find out it is not running (the import costs seconds).
    ray = sys.modules.get("ray")
    return bool(ray is not None and ray.is_initialized())


def read_metrics(path: str | Path) -> list[dict]:
    """All records of a metrics.jsonl (or the directory holding one), in file order."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    records = []
    with path.open() as fh:
        for line in fh:
            line = line.strip()
            if line:
                records.append(json.loads(line))
    return records


def progress(total: int, desc: str, **kwargs) -> tqdm:
    """A tqdm bar on stderr. mininterval=1 keeps non-TTY logs (CI, `ray job logs`)
    to at most one refresh a second instead of one line per update."""
    options = {"total": total, "desc": desc, "mininterval": 1, "file": sys.stderr, "dynamic_ncols": True}
    options.update(kwargs)
    return tqdm(**options)


def drop_metrics_after(path: str | Path, step: int) -> int:
    """Remove the records of steps after `step` from a metrics.jsonl (a resumed run trains
    them again); returns how many were dropped. Lines that are not JSON are dropped too."""
    path = Path(path)
    if not path.exists():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1  # a line cut short by the interruption
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), (int, float)) and record["step"] > step:
            dropped += 1
        else:
            kept.append(line)
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    tmp.replace(path)
    return dropped


def last_logged_step(path: str | Path) -> int:
    """The highest step recorded in a metrics.jsonl, 0 when none: a run stopped between its
    checkpoint and the checkpoint step's row has one row fewer than the checkpoint's step."""
    path = Path(path)
    steps = [0]
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), (int, float)):
                steps.append(int(record["step"]))
    return max(steps)


def running_mean(values, window: int) -> list[float]:
    """Trailing mean over the last `window` values (fewer at the start)."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def trend_summary(records: list[dict], key: str = "reward_mean") -> str | None:
    """'first quarter -> last quarter' of a metric: the rising (or flat) curve in one line."""
    values = [r[key] for r in records if isinstance(r.get(key), (int, float))]
    if len(values) < 4:
        return None
    quarter = max(1, len(values) // 4)
    first, last = values[:quarter], values[-quarter:]
    return (f"{key}: first {quarter} steps {sum(first) / quarter:.3f} -> last {quarter} steps "
            f"{sum(last) / quarter:.3f} ({len(values)} steps)")


class MetricsLogger:
    """Append-only metrics for one run: out_dir/metrics.jsonl, stdout, Ray gauges."""

    def __init__(self, out_dir: str | Path, run_name: str, ray_metrics: bool = True):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.run_name = run_name
        self.ray_metrics = ray_metrics
        self.path = self.out_dir / "metrics.jsonl"
        self._fh = self.path.open("a", buffering=1)
        self._ray_warned = False

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """Record `metrics` at `step`. Non-finite numbers are written as null so the
        file stays strict JSON; values that are not numbers are kept as given (str())."""
        record: dict[str, Any] = {"step": int(step), "time": round(time.time(), 3)}
        numbers: dict[str, float] = {}
        for key, value in metrics.items():
            if key in ("step", "time"):
                continue
            number = _to_number(value)
            if number is None:
                record[key] = value if isinstance(value, (str, list, dict)) or value is None else str(value)
            elif math.isfinite(number):
                record[key] = numbers[key] = number
            else:
                record[key] = None
        if self._fh.closed:
            raise RuntimeError(f"MetricsLogger for {self.path} is closed")
        self._fh.write(json.dumps(record) + "\n")
        shown = " ".join(f"{k}={v:.4g}" for k, v in numbers.items())
        tqdm.write(f"[{self.run_name}] step {int(step)} {shown}".rstrip(), file=sys.stdout)
        if self.ray_metrics and numbers and _ray_ready():
            self._set_gauges(numbers)

    def _set_gauges(self, numbers: dict[str, float]) -> None:
        try:
            from ray.util.metrics import Gauge

            for key, value in numbers.items():
                name = "raylign_" + sanitize_metric_name(key)
                with _GAUGES_LOCK:
                    gauge = _GAUGES.get(name)
                    if gauge is None:
                        gauge = _GAUGES[name] = Gauge(name, description=f"raylign metric {key}", tag_keys=("run",))
                gauge.set(value, tags={"run": self.run_name})
        except Exception as err:  # metrics must never kill a training run
            if not self._ray_warned:
                self._ray_warned = True
                print(f"[{self.run_name}] Ray metrics disabled: {err!r}", file=sys.stderr)
            self.ray_metrics = False

    def plot(self, keys: Iterable[str] = ("reward_mean", "reward_max"),
             filename: str = "reward_curve.png") -> Path | None:
        """PNG of `keys` against step from the JSONL; keys never logged are skipped.
        Returns None when none of them has a value. Uses the Agg canvas directly, so no
        global matplotlib backend is switched and no display is needed."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        if not self._fh.closed:
            self._fh.flush()
        records = read_metrics(self.path) if self.path.exists() else []
        series = {}
        for key in keys:
            points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
            if points:
                series[key] = points
        if not series:
            return None
        fig = Figure(figsize=(6, 4), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        for key, points in series.items():
            steps, values = zip(*points)
            ax.plot(steps, values, marker="o" if len(points) < 30 else None, label=key, alpha=0.6)
            if len(points) >= 6:  # per-step means are noisy at small batches: show the trend
                window = max(3, len(points) // 5)
                smooth = running_mean(values, window)
                ax.plot(steps, smooth, linewidth=2.5, label=f"{key} (running mean of {window})")
        ax.set_xlabel("step")
        ax.set_title(self.run_name)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        out = self.out_dir / filename
        fig.savefig(out, format="png")
        return out

    def drop_after(self, step: int) -> None:
        """Forget the records of steps after `step` (they are about to be logged again)."""
        self._fh.close()
        drop_metrics_after(self.path, step)
        self._fh = self.path.open("a", buffering=1)

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self) -> "MetricsLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
