"""The rollout row: every column a row of the online engine can carry, its type, and who writes it.

Rows stay plain dicts (Ray Data moves them as pyarrow tables), so this module is their schema:
`Rollout` types them for readers and editors, `COLUMNS` says which stage writes each column,
and `undeclared_columns` lets a test catch a stage that starts writing a column nobody
declared. The stages, in order: the prompt adapters (`raylign.data.adapters`), the step server
(`raylign.data.step_prompts`), the method's prompt stage (`Algorithm.prepare_prompt`), the
sampler actor (`raylign.sampling.actor`), the sample and score stages (`raylign.engine.stages`),
then the method's `select` and `prepare` on the units it trains.
"""

from __future__ import annotations

from typing import Any, NamedTuple, TypedDict


class Column(NamedTuple):
    name: str
    type: str
    writer: str
    doc: str


COLUMNS: tuple[Column, ...] = (
    # the prompt
    Column("prompt_id", "str", "adapters", "hash of the prompt text: the split and the caches key on it"),
    Column("prompt", "str", "adapters", "the prompt as plain text (a multi-turn dialogue as a transcript)"),
    Column("messages", "list[dict]", "adapters", "the chat turns before the response"),
    Column("chosen", "str", "adapters", "preference rows: the dataset's preferred answer"),
    Column("rejected", "str", "adapters", "preference rows: the dataset's other answer"),
    Column("preference", "float", "adapters", "preference rows: 1 (chosen better) .. 2, AlpacaEval style"),
    Column("answer", "str", "adapters", "verifiable tasks: the known final answer a verifier checks"),
    Column("task", "str", "adapters", "verifiable tasks: which task (add, sub, mul, gsm8k), for per-task figures"),
    Column("problem", "str", "adapters", "generated tasks: the problem's identity, whatever its wording"),
    # the step it trains in
    Column("batch_index", "int", "step_prompts", "the training step"),
    Column("prompt_uid", "str", "step_prompts", "the prompt's identity in the run ('step:j'): groups key on it"),
    Column("step_prompts", "int", "step_prompts", "prompts in the step, to tell a whole step"),
    # the method's prompt stage
    Column("prompt_prefix_ids", "list[int]", "prepare_prompt", "control tokens before the chat (Quark)"),
    Column("candidates", "list[str]", "prepare_prompt", "answers given with the prompt, ranked beside the samples (RRHF)"),
    # the sampler
    Column("prompt_token_ids", "list[int]", "sampler", "the encoded prompt (prefix included)"),
    Column("response", "str", "sampler", "the response text"),
    Column("response_token_ids", "list[int]", "sampler", "the response's tokens (EOS included when it stopped)"),
    Column("logprobs", "list[float]", "sampler", "the sampler's log-prob of each response token (empty for dataset rows)"),
    Column("finish_reason", "str", "sampler", "stop | length | dataset"),
    Column("policy_version", "int", "sampler", "the weights that produced it (staleness is measured against it)"),
    Column("sample_index", "int", "sampler", "which of the prompt's k responses"),
    Column("sampler", "str", "sampler", "the sampler actor's name"),
    Column("source", "str", "sampler", "policy (sampled) | dataset (a given candidate)"),
    # the sample stage
    Column("sample_seconds", "float", "sample_stage", "wall time of the step's sampling call"),
    Column("part", "str", "sample_stage", "the sampling call that made it (a step may be sampled in parts)"),
    Column("rows_in_batch", "int", "sample_stage", "rows that call made"),
    Column("part_prompts", "int", "sample_stage", "prompts that call was given"),
    Column("sampler_retries", "int", "sample_stage", "sampler shares generated again after a sampler died"),
    # the score stage
    Column("reward", "float", "score_stage", "the reward source's score"),
    Column("ref_logprobs", "list[float] | None", "score_stage", "the frozen reference's log-prob of each response token"),
    Column("score_seconds", "float", "score_stage", "wall time of the step's scoring call"),
)

BY_NAME = {column.name: column for column in COLUMNS}


class Rollout(TypedDict, total=False):
    """A rollout row as the method's `select` receives it (see `COLUMNS` for who writes what)."""

    prompt_id: str
    prompt: str
    messages: list[dict]
    chosen: str
    rejected: str
    preference: float
    answer: str
    task: str
    problem: str
    batch_index: int
    prompt_uid: str
    step_prompts: int
    prompt_prefix_ids: list[int]
    candidates: list[str]
    prompt_token_ids: list[int]
    response: str
    response_token_ids: list[int]
    logprobs: list[float]
    finish_reason: str
    policy_version: int
    sample_index: int
    sampler: str
    source: str
    sample_seconds: float
    part: str
    rows_in_batch: int
    part_prompts: int
    sampler_retries: int
    reward: float
    ref_logprobs: list[float] | None
    score_seconds: float


def written_by(writer: str) -> set[str]:
    """The columns a stage writes."""
    return {column.name for column in COLUMNS if column.writer == writer}


def undeclared_columns(row: dict[str, Any], extra: set[str] = frozenset()) -> set[str]:
    """Columns of `row` that `COLUMNS` does not declare (beyond a prompt file's own `extra` fields)."""
    return set(row) - set(BY_NAME) - set(extra)
