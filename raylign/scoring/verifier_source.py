"""`reward.kind: verifier`: checks as a reward source, run as parallel Ray tasks with a time limit.

A step's responses are cut into chunks of `rows_per_task`, each verified in a Ray task on a
fraction of a CPU, so the checks run beside sampling and training instead of in the stage that
calls them. Every check call has a time limit (`timeout_s`, an alarm inside the task) and a whole
task that overruns its budget is cancelled; a check that raises or overruns scores 0
(`on_error: zero`, counted in the log) or ends the run naming the check, the row and the error
(`on_error: raise`).
"""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager

from raylign.scoring.base import RewardSource
from raylign.scoring.verifiers import VerifierConfig, check_function, verify

log = logging.getLogger(__name__)


class VerifierError(RuntimeError):
    """A check raised or overran its time limit with `on_error: raise`."""


class _TimeLimit(Exception):
    pass


@contextmanager
def time_limit(seconds: float):
    """Interrupt the block after `seconds` (an alarm in the main thread; elsewhere no limit, and the
    task's own budget is the backstop)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def alarm(signum, frame):
        raise _TimeLimit()

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def verify_rows(items: list[tuple[str, str, str]], config: VerifierConfig) -> list[tuple[float, str | None]]:
    """(score, error or None) for each (row id, response, answer); never raises for a check."""
    try:  # import custom checks before any call's clock starts: a cold worker's import is not a slow check
        for name in config.checks:
            check_function(name)
    except Exception:  # noqa: BLE001 - each row reports the failure below
        pass
    out = []
    for row_id, response, answer in items:
        try:
            with time_limit(config.timeout_s):
                out.append((float(verify(response, answer, config)), None))
        except _TimeLimit:
            out.append((0.0, f"row {row_id}: a check took longer than reward.verifier.timeout_s={config.timeout_s:g}"))
        except Exception as err:  # a custom check's own failure: reported, scored by on_error
            out.append((0.0, f"row {row_id}: a check raised {type(err).__name__}: {err}"))
    return out


class VerifierRewardSource(RewardSource):
    def __init__(self, config: VerifierConfig):
        self.config = config

    def score(self, rows: list[dict]) -> list[float]:
        field = self.config.answer_field
        items = []
        for i, row in enumerate(rows):
            if row.get(field) in (None, ""):
                raise VerifierError(f"row {row.get('prompt_id', i)} has no '{field}': a verifier needs prompts with "
                                    "known answers (data format gsm8k, or rows with 'prompt' and 'answer')")
            items.append((str(row.get("prompt_id", i)), row["response"], str(row[field])))
        results = self._run(items)
        errors = [error for _, error in results if error]
        if errors and self.config.on_error == "raise":
            raise VerifierError(f"{errors[0]} (reward.verifier.on_error=raise; 'zero' scores it 0 instead)")
        if errors:
            log.warning("verifier: %d of %d responses scored 0 after an error, e.g. %s", len(errors), len(items),
                        errors[0])
        return [score for score, _ in results]

    def _run(self, items: list[tuple[str, str, str]]) -> list[tuple[float, str | None]]:
        """Chunks in parallel Ray tasks when Ray runs (in this process otherwise)."""
        import ray

        size = self.config.rows_per_task
        chunks = [items[i: i + size] for i in range(0, len(items), size)]
        if not ray.is_initialized():
            return [result for chunk in chunks for result in verify_rows(chunk, self.config)]
        task = ray.remote(verify_rows).options(num_cpus=self.config.num_cpus, max_retries=0)
        refs = [task.remote(chunk, self.config) for chunk in chunks]
        budget = self.config.timeout_s * size + 30.0  # every call at its limit, plus a task's start
        ready, late = ray.wait(refs, num_returns=len(refs), timeout=budget)
        results = []
        for ref, chunk in zip(refs, chunks):
            if ref in ready:
                results.extend(ray.get(ref))
            else:
                ray.cancel(ref, force=True)
                results.extend((0.0, f"row {row_id}: its verifier task overran {budget:.0f} s and was stopped")
                               for row_id, _, _ in chunk)
        return results
