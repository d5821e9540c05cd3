"""Which prompts train at which step, served from a window over a streamed corpus.

Step s trains on corpus rows s*P .. s*P+P-1 (P = prompts_per_step), counted through the
corpus again and again as epochs, so a run, a resumed run and a rerun see the same prompts
at every step. The rows are read forward in file order (Ray Data with `preserve_order`)
by one `StepPromptServer` actor; the engine's stream asks it for one step at a time. Its
window holds at most `keep_rows` rows behind the step asked for, so neither it nor the
driver ever holds a large corpus; a corpus that fits the window is read once and kept.
"""

from __future__ import annotations

import bisect
from typing import Callable, Iterable, Iterator

from raylign.data.prompt_corpus import ERROR_COLUMN
from raylign.data.readers import DataError

KEEP_ROWS = 100_000  # rows a server keeps behind the step it serves (a smaller corpus is kept whole)


def _row(chunk, index: int) -> dict:
    """Row `index` of a chunk: a list of dicts (in-memory prompts) or a pyarrow table (Ray Data)."""
    return chunk[index] if isinstance(chunk, list) else chunk.slice(index, 1).to_pylist()[0]


class StepPrompts:
    """The rows of each training step, from `open_pass()`: a fresh iterator over the corpus as
    chunks of rows, in the same order every call. Steps may be asked for in any order; the
    usual forward order reads the corpus once per epoch."""

    def __init__(self, open_pass: Callable[[], Iterator], prompts_per_step: int, name: str = "prompts",
                 keep_rows: int = KEEP_ROWS):
        if prompts_per_step < 1:
            raise ValueError(f"prompts_per_step must be >= 1, got {prompts_per_step}")
        self.open_pass, self.per_step, self.name, self.keep_rows = open_pass, prompts_per_step, name, keep_rows
        self.size: int | None = None  # rows in the corpus, known once a pass has ended
        self.passes = 0  # passes opened (a corpus that fits the window is read once)
        self._chunks: Iterator | None = None
        self._starts: list[int] = []  # corpus index of each kept chunk's first row
        self._kept: list = []
        self._end = 0  # corpus index after the last row read in this pass

    @property
    def kept_rows(self) -> int:
        return self._end - (self._starts[0] if self._starts else self._end)

    def rows(self, step: int) -> list[dict]:
        """The step's prompts, each tagged with its step (`batch_index`), its identity in the run
        (`prompt_uid`: a prompt twice in one step forms two groups) and the step's size."""
        base = step * self.per_step
        return [{**self._at(base + j), "batch_index": step, "prompt_uid": f"{step}:{j}",
                 "step_prompts": self.per_step} for j in range(self.per_step)]

    def _at(self, position: int) -> dict:
        index = position if self.size is None else position % self.size
        if self._chunks is None or index < (self._starts[0] if self._starts else self._end):
            self._open()
        while index >= self._end:
            chunk = next(self._chunks, None)
            if chunk is None:  # the pass ended: the corpus size is known from now on
                if self._end == 0:
                    raise DataError(f"{self.name}: no prompts to train on")
                if self.size is not None:  # a later pass ended before a row the first one had
                    raise DataError(f"{self.name}: changed while training ({self._end} rows, "
                                    f"{self.size} the first time it was read)")
                self.size = self._end
                index = position % self.size
                if index < (self._starts[0] if self._starts else self._end):
                    self._open()
                continue
            if len(chunk):
                self._keep(chunk, index)
        i = bisect.bisect_right(self._starts, index) - 1
        return _row(self._kept[i], index - self._starts[i])

    def _open(self):
        self._chunks, self._starts, self._kept, self._end = iter(self.open_pass()), [], [], 0
        self.passes += 1

    def _keep(self, chunk, index: int):
        self._starts.append(self._end)
        self._kept.append(chunk)
        self._end += len(chunk)
        # drop whole chunks that end more than keep_rows before the row asked for
        while len(self._starts) > 1 and self._starts[1] <= index - self.keep_rows:
            self._starts.pop(0)
            self._kept.pop(0)


def assign_steps(prompts: list[dict], prompts_per_step: int, first_step: int, last_step: int) -> list[dict]:
    """Every row of steps first_step .. last_step-1 at once (small prompt lists, tests)."""
    steps = StepPrompts(lambda: iter([prompts]), prompts_per_step)
    return [row for step in range(first_step, last_step) for row in steps.rows(step)]


def _corpus_passes(corpus) -> Callable[[], Iterable]:
    """`open_pass` for a `PromptCorpus`: each call executes its Ray Data pipeline afresh."""
    import ray.data

    context = ray.data.DataContext.get_current()  # this actor's own context
    context.execution_options.preserve_order = True  # the same rows at the same steps, every pass
    context.enable_progress_bars = False
    context.issue_detectors_config.detectors = []
    # Small blocks and a small budget: the server reads a few steps ahead, not the corpus (a
    # Parquet row group or a JSON chunk would otherwise be one block, all of it read ahead).
    context.target_max_block_size = 2 * 2**20
    context.execution_options.resource_limits = ray.data.ExecutionResources(object_store_memory=64 * 2**20)
    corpus = corpus.check() if corpus.format == "auto" else corpus

    def open_pass():
        for table in corpus.dataset().iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1):
            if ERROR_COLUMN in table.column_names:  # a bad record (data.on_error=raise)
                raise DataError(table.column(ERROR_COLUMN)[0].as_py())
            yield table.drop_columns([c for c in ("path",) if c in table.column_names])

    return open_pass


class StepPromptServer:
    """Ray actor around `StepPrompts` for a `PromptCorpus` or an in-memory list of prompts.

    Its answers depend only on (corpus, step), so Ray may restart it and retry a call."""

    def __init__(self, prompts, prompts_per_step: int):
        if isinstance(prompts, list):
            self.steps = StepPrompts(lambda: iter([prompts]), prompts_per_step)
        else:
            self.steps = StepPrompts(_corpus_passes(prompts), prompts_per_step, prompts.name)

    def rows(self, step: int) -> list[dict]:
        return self.steps.rows(step)

    def stats(self) -> dict:
        """For `raylign bench corpus`: what the server holds and its process's resident memory."""
        import resource

        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * resource.getpagesize()
        return {"kept_rows": self.steps.kept_rows, "corpus_rows": self.steps.size, "passes": self.steps.passes, "rss_bytes": rss}


def start_step_server(prompts, prompts_per_step: int):
    """One server actor per run; it needs no CPU of its own (its Ray Data tasks ask for a token one)."""
    import ray

    actor = ray.remote(num_cpus=0, max_restarts=3, max_task_retries=3)(StepPromptServer)
    return actor.remote(prompts, prompts_per_step)


def fetch_steps(server, step: int) -> list[dict]:
    """One step's rows from the server; a data error inside it surfaces as itself, one line."""
    import ray

    try:
        return ray.get(server.rows.remote(step))
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, DataError):  # not the actor's traceback around it
            raise DataError(str(err.cause)) from None
        raise


def step_rows_stage(batch, server):
    """Ray Data stage: a block of step numbers -> those steps' prompt rows."""
    import pyarrow as pa

    rows = [row for step in batch.column("step").to_pylist() for row in fetch_steps(server, step)]
    return pa.Table.from_pylist(rows)
