"""Judgment writers: a judge that reads one response and writes what is wrong with it, or says it
is acceptable, the language feedback CUT trains on (rows {instruction, input, output, judgment},
judgment None = acceptable; Xu et al. 2023).

Two writers share one interface, `judge(rows) -> list[str | None]`: a local model generating
greedily on the sampler actors (vLLM or transformers), and any OpenAI-compatible chat endpoint.
`write_judgments` runs a writer over a file of outputs as a Ray Data job, and `main` is
`raylign annotate judgments`:

    raylign annotate judgments --data outputs.json --judge judgment:SmolLM2-135M-Instruct \\
        --output runs/judged.jsonl [--limit N] [--in-process]
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

from raylign.feedback.judges import OnEndpoint, OnSamplers, _chat_url
from raylign.feedback.templates import MAX_JUDGMENT_CHARS, get_judgment_template, parse_judgment
from raylign.sampling.base import SamplingConfig

CUT_FIELDS = ("instruction", "input", "output", "judgment", "judge")


def judgment_sampling(**overrides) -> SamplingConfig:
    """Sampler settings for writing judgments: greedy, one sample, room for a response and a judgment."""
    settings = dict(num_samplers=1, num_cpus_per_sampler=0.5, num_samples=1, temperature=0.0,
                    max_new_tokens=256, max_prompt_tokens=1536)
    settings.update(overrides)
    settings.setdefault("vllm_max_model_len", settings["max_prompt_tokens"] + settings["max_new_tokens"])
    return SamplingConfig(**settings)


class JudgmentWriter:
    """Rows {instruction, input?, output} in, one judgment per row out (None: acceptable), in order."""

    name: str = "judgment"

    def __init__(self, template: str, max_chars: int = MAX_JUDGMENT_CHARS):
        self.template = get_judgment_template(template)
        self.max_chars = max_chars

    def prepare(self) -> JudgmentWriter:
        """Start what the writer shares across Ray Data actors (sampler actors); once, in the driver."""
        return self

    def replies(self, rows: list[dict]) -> list[str]:
        """The judge's raw reply text per row."""
        raise NotImplementedError

    def judge(self, rows: Sequence[dict]) -> list[str | None]:
        rows = list(rows)
        return [parse_judgment(text, self.max_chars) for text in self.replies(rows)] if rows else []

    def close(self) -> None:
        pass


class SamplerJudgmentWriter(OnSamplers, JudgmentWriter):
    """A local model writing judgments greedily on sampler actors (its own, or shared via `samplers`)."""

    def __init__(self, model: str = "SmolLM2-135M-Instruct", template: str = "judgment",
                 sampling: SamplingConfig | None = None, samplers: list | None = None, name: str | None = None,
                 max_chars: int = MAX_JUDGMENT_CHARS):
        JudgmentWriter.__init__(self, template, max_chars)
        self._use_samplers(model, sampling or judgment_sampling(), samplers)
        self.name = name or f"judgment:{model}@{template}"

    def replies(self, rows: list[dict]) -> list[str]:
        import ray

        self.prepare()
        prompts = [{"messages": self.template.messages(row), "judgment_row": i} for i, row in enumerate(rows)]
        count = len(self._samplers)
        calls = [s.generate.remote(prompts[k::count], 1) for k, s in enumerate(self._samplers) if prompts[k::count]]
        texts: dict[int, str] = {}
        for part in ray.get(calls):
            for rollout in part:
                texts[rollout["judgment_row"]] = rollout["response"]
        if len(texts) != len(rows):  # a sampler skipped a prompt (over_long_prompt: reject)
            missing = [i for i in range(len(rows)) if i not in texts]
            raise RuntimeError(f"{self.name}: no judgment came back for rows {missing[:10]} (prompts too long?)")
        return [texts[i] for i in range(len(rows))]



class HttpJudgmentWriter(OnEndpoint, JudgmentWriter):
    """An OpenAI-compatible `/v1/chat/completions` endpoint writing judgments (vLLM, llama.cpp, a hosted
    API); the key comes from `api_key` or the environment variable `api_key_env`. Timeouts, dropped
    connections, 429 and 5xx are retried with exponential backoff; any other error status fails at once."""

    RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})

    def __init__(self, url: str, model: str, template: str = "judgment", api_key: str | None = None,
                 api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 120.0, max_workers: int = 4,
                 retries: int = 3, backoff_s: float = 1.0, max_tokens: int = 256, name: str | None = None,
                 max_chars: int = MAX_JUDGMENT_CHARS):
        super().__init__(template, max_chars)
        self.url = _chat_url(url)
        self.model = model
        self.api_key = api_key
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.max_workers = max_workers
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_tokens = max_tokens
        self.name = name or f"judgment-http:{model}@{template}"
        self._client = None

    def body(self, row: dict) -> dict:
        return {"model": self.model, "messages": self.template.messages(row), "max_tokens": self.max_tokens,
                "temperature": 0.0}

    def _request(self, row: dict) -> dict:
        import httpx

        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                response = self.client.post(self.url, json=self.body(row))
            except (httpx.TimeoutException, httpx.TransportError) as err:
                problem = f"{type(err).__name__}: {err}"
                continue
            if response.status_code == 200:
                return response.json()
            problem = f"answered {response.status_code}: {response.text[:300]}"
            if response.status_code not in self.RETRY_STATUS:
                break
        raise RuntimeError(f"judgment writer {self.url} {problem} (after {attempt + 1} tries)")

    @staticmethod
    def reply_text(reply: dict) -> str:
        """The first choice's message text ('' when the endpoint sent none)."""
        choices = reply.get("choices")
        if not choices:
            raise RuntimeError(f"judgment writer: a reply without choices: {json.dumps(reply)[:300]}")
        return (choices[0].get("message") or {}).get("content") or ""

    def replies(self, rows: list[dict]) -> list[str]:
        with ThreadPoolExecutor(max_workers=max(1, self.max_workers)) as pool:
            return [self.reply_text(reply) for reply in pool.map(self._request, rows)]



class _JudgeBatch:
    """The Ray Data stage: a batch of outputs in, the same rows with their judgments out."""

    def __init__(self, writer: JudgmentWriter):
        self.writer = writer

    def __call__(self, batch):
        import pyarrow as pa

        rows = batch.to_pylist()
        judgments = self.writer.judge(rows)
        # None travels as "" (a column of only nulls would not unify with a string one across blocks)
        return pa.Table.from_pylist([{**r, "judgment": j or ""} for r, j in zip(rows, judgments)])


def judge_rows(rows: Sequence[dict], writer: JudgmentWriter, use_ray_data: bool = True, batch_size: int = 16,
               concurrency: int = 1, num_cpus: float = 0.25) -> list[dict]:
    """CUT rows {instruction, input, output, judgment, judge} in input order. With `use_ray_data` the
    writer runs in `concurrency` Ray Data actors, sharing what `prepare` starts here (the caller closes it)."""
    prepared = [{"instruction": r["instruction"], "input": r.get("input") or "", "output": r["output"], "_row": i}
                for i, r in enumerate(rows)]
    if not prepared:
        return []
    if use_ray_data:
        import ray.data

        writer.prepare()  # once, here: each actor's copy would otherwise start samplers of its own
        ds = ray.data.from_items(prepared, override_num_blocks=max(1, len(prepared) // batch_size))
        ds = ds.map_batches(_JudgeBatch, fn_constructor_kwargs={"writer": writer}, batch_size=batch_size,
                            batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=concurrency),
                            num_cpus=num_cpus)
        judged = sorted(ds.take_all(), key=lambda r: r["_row"])
    else:
        judged = [{**r, "judgment": j} for r, j in zip(prepared, writer.judge(prepared))]
    return [{"instruction": r["instruction"], "input": r["input"], "output": r["output"],
             "judgment": r["judgment"] or None, "judge": writer.name} for r in judged]


def write_judgments(rows: Sequence[dict], writer: JudgmentWriter, output_path: str | Path, use_ray_data: bool = True,
                    batch_size: int = 16, concurrency: int = 1, num_cpus: float = 0.25) -> list[dict]:
    """Judge `rows` and write them as CUT rows (JSONL, `judgment` null when acceptable); returns them."""
    from raylign.feedback.job import write_jsonl

    out = judge_rows(rows, writer, use_ray_data, batch_size, concurrency, num_cpus)
    write_jsonl(out, output_path)
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raylign annotate judgments",
                                     description="write CUT judgments of outputs with an LLM judge, as a Ray Data job")
    parser.add_argument("--data", required=True, help="outputs {instruction, input?, output} (.json, .jsonl[.gz], ...)")
    parser.add_argument("--judge", required=True, help="judgment:MODEL[@TEMPLATE], judgment-hf:MODEL[@TEMPLATE] "
                        "or judgment-http:URL#MODEL[@TEMPLATE] (templates: judgment, judgment_alpaca)")
    parser.add_argument("--output", default="judgments.jsonl", help="CUT rows (JSONL) to write")
    parser.add_argument("--limit", type=int, default=None, help="read at most N input records")
    parser.add_argument("--in-process", action="store_true", help="judge in this process, not as a Ray Data job")
    parser.add_argument("--ray-address", default=None)
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides (judge.max_new_tokens=128, concurrency=2)")
    return parser


def main(argv: list[str]) -> int:
    from raylign.config import apply_overrides, build_config
    from raylign.data.readers import read_outputs
    from raylign.feedback.config import (
        JudgmentsConfig,
        build_judgment_writer,
        check_judgment_writer,
        parse_judgment_spec,
    )
    from raylign.feedback.job import quiet_ray_data
    from raylign.preflight import check_config
    from raylign.runtime import init_ray

    args = _parser().parse_args(argv)
    tree = {"data": args.data, "output": args.output, "judge": parse_judgment_spec(args.judge).model_dump(),
            "limit": args.limit, "use_ray_data": not args.in_process, "ray_address": args.ray_address}
    config = build_config(JudgmentsConfig, apply_overrides(tree, args.overrides), "command line")
    check_config(config)
    check_judgment_writer(config.judge)
    rows = [{key: row[key] for key in ("instruction", "input", "output")}
            for row in read_outputs(config.data, config.limit)]
    started = time.time()
    init_ray(config.ray_address, quiet=True)
    quiet_ray_data()
    writer = build_judgment_writer(config.judge).prepare()
    try:
        out = write_judgments(rows, writer, config.output, config.use_ray_data, config.batch_size,
                              config.concurrency, config.num_cpus)
    finally:
        writer.close()
    judged = sum(r["judgment"] is not None for r in out)
    print(f"judged {len(out)} outputs in {time.time() - started:.1f}s with {writer.name} -> {config.output}")
    print(f"  with a judgment {judged}, acceptable {len(out) - judged}")
    return 0
