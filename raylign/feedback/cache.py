"""On-disk caches of judgments and of generated responses, so a rerun costs nothing.

One SQLite file each; a judgment's key is a hash of the annotator's fingerprint and the pair
exactly as the annotator saw it (after order swapping), a response's a hash of the generator's
fingerprint (model, sampling settings) and the text it completed. Several Ray Data workers
may write at once: SQLite's WAL mode and a busy timeout serialise them. The connection is
opened lazily per process, so a cache pickles into Ray Data stages.
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


class _SqliteCache:
    """A lazily opened, per-process SQLite connection to `directory/filename` with one table."""

    filename = ""
    schema = ""

    def __init__(self, directory: str | Path | None = None):
        self.path = Path(directory or default_cache_dir()) / self.filename
        self._conn = None
        self._pid = None

    def __getstate__(self):
        return {"path": self.path, "_conn": None, "_pid": None}

    def _db(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, timeout=60)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(self.schema)
            self._pid = os.getpid()
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class AnnotationCache(_SqliteCache):
    filename = "annotations.sqlite"
    schema = "CREATE TABLE IF NOT EXISTS judgments (key TEXT PRIMARY KEY, annotator TEXT, preference REAL, at REAL)"

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


def text_hash(fingerprint: str, text: str) -> str:
    return hashlib.sha256(fingerprint.encode() + b"\x1e" + text.encode("utf-8")).hexdigest()


class ResponseCache(_SqliteCache):
    """Generated text by (generator fingerprint, the text it completed)."""

    filename = "responses.sqlite"
    schema = "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, generator TEXT, response TEXT, at REAL)"

    def get_many(self, fingerprint: str, texts: list[str]) -> list[str | None]:
        keys = [text_hash(fingerprint, t) for t in texts]
        found: dict[str, str] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(self._db().execute(f"SELECT key, response FROM responses WHERE key IN ({marks})", chunk).fetchall())
        return [found.get(k) for k in keys]

    def put_many(self, fingerprint: str, texts: list[str], responses: list[str]) -> None:
        now = time.time()
        rows = [(text_hash(fingerprint, t), fingerprint, r, now) for t, r in zip(texts, responses)]
        with self._db() as db:
            db.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?)", rows)
