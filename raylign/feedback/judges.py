"""LLM judges: a judging template answered by a local model on the sampler actors, or by any
OpenAI-compatible chat endpoint.

Both read the preference from the judge's probabilities of the two labels,
preference = 1 + P(label_2) / (P(label_1) + P(label_2)), not from parsed text alone:
a soft value keeps the judge's confidence, and a judge that would answer something
else still ranks the two labels. The HTTP judge falls back to parsing the reply when
the endpoint returns no log-probs for either label.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor

from raylign.feedback.annotators import Annotator
from raylign.feedback.templates import get_template, parse_label
from raylign.sampling.base import SamplingConfig


def preference_from_logprobs(logprob_1: float, logprob_2: float) -> float:
    """1 + P(label_2) renormalised over the two labels; -inf for a label means probability 0."""
    if logprob_1 == logprob_2:
        return 1.5
    top = max(logprob_1, logprob_2)
    p1, p2 = math.exp(logprob_1 - top), math.exp(logprob_2 - top)
    return 1.0 + p2 / (p1 + p2)


def judge_sampling(**overrides) -> SamplingConfig:
    """Sampler settings for judging: one sampler, prompts long enough for two outputs."""
    settings = dict(num_samplers=1, num_cpus_per_sampler=0.5, max_prompt_tokens=2000, vllm_max_model_len=2048,
                    temperature=0.0, max_new_tokens=1)
    settings.update(overrides)
    return SamplingConfig(**settings)


class OnSamplers:
    """A model answering on sampler actors: its own group (started by `prepare`, stopped by
    `close`), or the loop's (`samplers=`), which it never stops."""

    def _use_samplers(self, model: str, sampling: SamplingConfig, samplers: list | None) -> None:
        self.model, self.sampling = model, sampling
        self._samplers = list(samplers) if samplers is not None else None
        self._group = None  # the sampler group this object started (and stops)

    def prepare(self):
        if self._samplers is None:
            from raylign.models.registry import resolve_model
            from raylign.sampling.actor import create_samplers

            self._group = create_samplers(str(resolve_model(self.model)), self.sampling)
            self._samplers = list(self._group)
        return self

    def __getstate__(self):
        return {**self.__dict__, "_group": None}  # a pickled copy uses the samplers, never stops them

    def close(self) -> None:
        if self._group is not None:
            self._group.shutdown()
            self._group = None
            self._samplers = None


class SamplerJudge(OnSamplers, Annotator):
    """A local model judging on sampler actors (its own, or the loop's via `samplers`)."""

    def __init__(self, model: str = "SmolLM2-135M-Instruct", template: str = "pairwise",
                 sampling: SamplingConfig | None = None, samplers: list | None = None, name: str | None = None):
        self._use_samplers(model, sampling or judge_sampling(), samplers)
        self.template = get_template(template)
        self.name = name or f"judge:{model}@{template}"

    def fingerprint(self) -> str:
        settings = {"model": self.model, "template": self.template.name, "backend": self.sampling.backend,
                    "dtype": self.sampling.dtype, "max_prompt_tokens": self.sampling.max_prompt_tokens}
        return "judge:" + hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:24]

    def preferences(self, pairs: list[dict]) -> list[float]:
        import ray

        if not pairs:
            return []
        self.prepare()
        rows = [{"messages": self.template.messages(p)} for p in pairs]
        count = len(self._samplers)
        chunks = [rows[i::count] for i in range(count)]  # round-robin over the samplers
        refs = [s.label_logprobs.remote(chunk, list(self.template.labels)) for s, chunk in zip(self._samplers, chunks) if chunk]
        results = ray.get(refs)
        logprobs = [None] * len(rows)
        for offset, part in enumerate(results):
            for k, value in enumerate(part):
                logprobs[offset + k * count] = value
        return [preference_from_logprobs(lp[0], lp[1]) for lp in logprobs]


def share_samplers(annotators) -> None:
    """Judges on the same model and sampler settings (several templates) share one sampler group."""
    groups: dict = {}
    for judge in annotators:
        if isinstance(judge, SamplerJudge) and judge._samplers is None:
            key = (judge.model, judge.sampling.model_dump_json())
            if key in groups:
                judge._samplers = groups[key]._samplers
            else:
                judge.prepare()
                groups[key] = judge


class OnEndpoint:
    """An OpenAI-compatible endpoint's client: opened on first use in each process (httpx clients
    do not pickle), with the API key from `api_key` or the environment variable `api_key_env`."""

    _client = None

    @property
    def client(self):
        if self._client is None:
            import httpx

            key = self.api_key or os.environ.get(self.api_key_env)
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            self._client = httpx.Client(timeout=self.timeout_s, headers=headers)
        return self._client

    def __getstate__(self):
        return {**self.__dict__, "_client": None}

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _chat_url(url: str) -> str:
    base = url.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    return base + ("/chat/completions" if base.endswith("/v1") else "/v1/chat/completions")


class HttpJudge(OnEndpoint, Annotator):
    """An OpenAI-compatible `/v1/chat/completions` endpoint as the judge (vLLM, llama.cpp, a
    hosted API). The key comes from `api_key` or the environment variable `api_key_env`."""

    def __init__(self, url: str, model: str, template: str = "pairwise", api_key: str | None = None,
                 api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 120.0, max_workers: int = 4,
                 top_logprobs: int = 20, max_tokens: int = 4, name: str | None = None):
        self.url = _chat_url(url)
        self.model = model
        self.template = get_template(template)
        self.api_key = api_key
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.max_workers = max_workers
        self.top_logprobs = top_logprobs
        self.max_tokens = max_tokens
        self.name = name or f"http:{model}@{template}"
        self.unparsed = 0
        self._client = None

    def fingerprint(self) -> str:
        settings = {"url": self.url, "model": self.model, "template": self.template.name}
        return "http:" + hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:24]

    def _request(self, pair: dict) -> dict:
        body = {"model": self.model, "messages": self.template.messages(pair), "max_tokens": self.max_tokens,
                "temperature": 0.0, "logprobs": True, "top_logprobs": self.top_logprobs}
        response = self.client.post(self.url, json=body)
        if response.status_code != 200:
            raise RuntimeError(f"judge {self.url} answered {response.status_code}: {response.text[:300]}")
        return response.json()

    def read_preference(self, reply: dict) -> float:
        """The label probabilities at the first answer position that ranks either label,
        else the label the text names, else 1.5 (counted in `unparsed`)."""
        labels = self.template.labels
        choice = (reply.get("choices") or [{}])[0]
        for position in (choice.get("logprobs") or {}).get("content") or []:
            found = [-math.inf, -math.inf]
            for entry in position.get("top_logprobs") or [position]:
                token = str(entry.get("token", "")).strip()
                if token in labels:
                    k = labels.index(token)
                    found[k] = _logaddexp(found[k], float(entry["logprob"]))
            if found != [-math.inf, -math.inf]:
                return preference_from_logprobs(*found)
        text = (choice.get("message") or {}).get("content") or ""
        parsed = parse_label(text, labels)
        if parsed is None:
            self.unparsed += 1
            return 1.5
        return 1.0 + parsed

    def preferences(self, pairs: list[dict]) -> list[float]:
        with ThreadPoolExecutor(max_workers=max(1, self.max_workers)) as pool:
            replies = list(pool.map(self._request, pairs))
        return [self.read_preference(reply) for reply in replies]



def _logaddexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    top = max(a, b)
    return top + math.log(math.exp(a - top) + math.exp(b - top))
