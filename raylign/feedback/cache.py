"""On-disk cache of judgments, so a rerun (or a repeated pair) costs nothing.

One SQLite file; the key is a hash of the annotator's fingerprint and the pair exactly
as the annotator saw it (after order swapping). Several Ray Data workers may write at
once: SQLite's WAL mode and a busy timeout serialise them. The connection is opened
lazily per process, so the cache pickles into Ray Data stages.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from pathlib import Path


def default_cache_dir() -> Path:
    from raylign.models.local import cache_root

    return cache_root() / "annotations"


def pair_hash(fingerprint: str, pair: dict) -> str:
    digest = hashlib.sha256(fingerprint.encode())
    for field in ("instruction", "input", "output_1", "output_2"):
        digest.update(b"\x1e" + (pair.get(field) or "").encode("utf-8"))
    return digest.hexdigest()


class AnnotationCache:
    def __init__(self, directory: str | Path | None = None):
        self.path = Path(directory or default_cache_dir()) / "annotations.sqlite"
        self._conn = None
        self._pid = None

    def __getstate__(self):
        return {"path": self.path, "_conn": None, "_pid": None}

    def _db(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, timeout=60)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS judgments (key TEXT PRIMARY KEY, annotator TEXT, preference REAL, at REAL)"
            )
            self._pid = os.getpid()
        return self._conn

    def get_many(self, fingerprint: str, pairs: list[dict]) -> list[float | None]:
        keys = [pair_hash(fingerprint, p) for p in pairs]
        found: dict[str, float] = {}
        db = self._db()
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(db.execute(f"SELECT key, preference FROM judgments WHERE key IN ({marks})", chunk).fetchall())
        return [found.get(k) for k in keys]

    def put_many(self, fingerprint: str, pairs: list[dict], preferences: list[float]) -> None:
        now = time.time()
        rows = [(pair_hash(fingerprint, p), fingerprint, float(v), now) for p, v in zip(pairs, preferences)]
        with self._db() as db:
            db.executemany("INSERT OR REPLACE INTO judgments VALUES (?, ?, ?, ?)", rows)

    def count(self, fingerprint: str | None = None) -> int:
        if fingerprint is None:
            return self._db().execute("SELECT COUNT(*) FROM judgments").fetchone()[0]
        return self._db().execute("SELECT COUNT(*) FROM judgments WHERE annotator = ?", (fingerprint,)).fetchone()[0]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
