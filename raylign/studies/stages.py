"""A study: a chain of stages run in one process (one Ray job), each stage's outputs kept on disk.

A stage is done when its outputs exist and its record in `<study dir>/stages.json` carries the
fingerprint of its settings and of every stage before it; a rerun of the same command skips the
done stages and starts at the first that is not (the one that failed or was killed). Changing a
stage's settings reruns it and everything after it. Stages run raylign commands in-process, so
the whole chain shares one Ray cluster (the local one, or the one `ray job submit` placed it in).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from raylign.config import InputPath, StrictModel


class StageFailed(RuntimeError):
    pass


class StageRecipe(StrictModel):
    """A stage's command settings: a shipped recipe and key.sub=value overrides laid over it."""

    recipe: InputPath
    overrides: list[str] = []


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[], dict | None]  # does the work; returns a small summary (or None)
    outputs: tuple[Path, ...]  # what must exist once it has run
    settings: dict = field(default_factory=dict)  # what its outputs depend on besides earlier stages


def command(*argv: str) -> Callable[[], dict]:
    """A stage body that runs one `raylign ...` command in this process and fails on its exit code."""

    def run() -> dict:
        from raylign.cli import main

        code = main(list(argv))
        if code:
            raise StageFailed(f"`raylign {' '.join(argv)}` exited with {code}")
        return {"command": "raylign " + " ".join(argv)}

    return run


def number(value, spec: str = ".1f") -> str:
    """A report figure for a table; n/a where the report has none (e.g. an LC win rate whose
    length model could not be fitted on few instructions)."""
    return "n/a" if value is None else format(value, spec)


def fingerprint(settings: dict, previous: str) -> str:
    text = json.dumps(settings, sort_keys=True, default=str) + previous
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _write(path: Path, records: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(records, indent=1))
    os.replace(tmp, path)


def run_stages(stages: list[Stage], folder: Path, log: Callable[[str], None] = print) -> dict:
    """Run the stages that are not done, in order; returns every stage's record."""
    folder.mkdir(parents=True, exist_ok=True)
    state_file = folder / "stages.json"
    records = json.loads(state_file.read_text()) if state_file.exists() else {}
    previous, ran = "", False  # once a stage runs, every later one runs again on its new outputs
    for index, stage in enumerate(stages, start=1):
        mark = fingerprint(stage.settings, previous)
        previous = mark
        record = records.get(stage.name)
        missing = [p for p in stage.outputs if not Path(p).exists()]
        if not ran and record and record.get("fingerprint") == mark and not missing:
            log(f"[study] {index}/{len(stages)} {stage.name}: done ({record['seconds']:.0f} s, kept)")
            continue
        log(f"[study] {index}/{len(stages)} {stage.name}: running")
        ran, started = True, time.time()
        try:
            summary = stage.run() or {}
        except BaseException as err:
            records[stage.name] = {"fingerprint": None, "failed": f"{type(err).__name__}: {err}"}
            _write(state_file, records)
            raise
        missing = [str(p) for p in stage.outputs if not Path(p).exists()]
        if missing:
            raise StageFailed(f"stage {stage.name} finished without writing {', '.join(missing)}")
        records[stage.name] = {"fingerprint": mark, "seconds": round(time.time() - started, 1), "summary": summary}
        _write(state_file, records)
    return records
