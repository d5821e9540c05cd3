"""Annotator and annotation-job configs, and the short command-line specs that map onto them.

Specs (`--annotator`, repeatable; several make a pool):
  rm:NAME_OR_PATH            a reward model in a Ray actor (e.g. rm:alpaca-rm-smollm2)
  rm-http:URL                a `raylign serve rm` endpoint
  fn:MODULE:CALLABLE         a Python reward function rows -> scores (fn:raylign.feedback.annotators:length_reward)
  judge:MODEL[@TEMPLATE]     an LLM judge on vLLM sampler actors (judge:SmolLM2-135M-Instruct@pairwise)
  judge-hf:MODEL[@TEMPLATE]  the same on transformers sampler actors
  http:URL#MODEL[@TEMPLATE]  an OpenAI-compatible chat endpoint (http:http://127.0.0.1:8000/v1#my-model)

Judgment writers (`raylign annotate judgments --judge`; CUT's language feedback, not preferences):
  judgment:MODEL[@TEMPLATE]            greedy judgments from a local model on vLLM sampler actors
  judgment-hf:MODEL[@TEMPLATE]         the same on transformers sampler actors
  judgment-http:URL#MODEL[@TEMPLATE]   an OpenAI-compatible chat endpoint
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from raylign.config import ConfigError, InputPath, OutputFile, RayAddress, StrictModel
from raylign.feedback.annotators import Annotator, RewardAnnotator
from raylign.feedback.pool import PoolConfig
from raylign.sampling.base import SamplingConfig
from raylign.scoring.base import RewardConfig


class AnnotatorConfig(StrictModel):
    kind: Literal["reward", "judge", "http"]
    name: str | None = None
    reward: RewardConfig = RewardConfig(max_length=512)  # kind reward: any RewardSource
    model: str = "SmolLM2-135M-Instruct"  # judge: a local model; http: the endpoint's model name
    template: str = "pairwise"
    backend: Literal["vllm", "hf"] = "vllm"  # judge: the sampler backend
    num_samplers: int = 1
    num_cpus_per_sampler: float = 0.5
    max_prompt_tokens: int = 2000
    url: str | None = None  # http
    api_key_env: str = "OPENAI_API_KEY"
    max_workers: int = 4  # http: concurrent requests
    timeout_s: float = 120.0


class AnnotateConfig(StrictModel):
    data: InputPath  # pairs {instruction, input, output_1, output_2} or candidates {instruction, input, output: [...]}
    output: OutputFile = "annotations.jsonl"
    annotators: list[AnnotatorConfig]
    pool: PoolConfig = PoolConfig()
    cache: bool = True
    cache_dir: str | None = None  # default ~/.cache/raylign/annotations
    limit: int | None = None
    batch_size: int = 64  # pairs per Ray Data batch
    concurrency: int = 1  # Ray Data annotation actors
    num_cpus: float = 0.25  # per annotation actor (the judges' own actors hold the model)
    use_ray_data: bool = True
    ray_address: RayAddress | None = None


def parse_spec(spec: str) -> AnnotatorConfig:
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise ConfigError(f"annotator '{spec}': expected KIND:VALUE (rm:, rm-http:, fn:, judge:, judge-hf:, http:)")
    if kind == "rm":
        return AnnotatorConfig(kind="reward", name=spec, reward=RewardConfig(kind="actor", model=rest))
    if kind == "rm-http":
        return AnnotatorConfig(kind="reward", name=spec, reward=RewardConfig(kind="http", url=rest))
    if kind == "fn":
        return AnnotatorConfig(kind="reward", name=spec, reward=RewardConfig(kind="function", function=rest))
    if kind in ("judge", "judge-hf"):
        model, _, template = rest.partition("@")
        return AnnotatorConfig(kind="judge", name=spec, model=model, template=template or "pairwise",
                               backend="hf" if kind == "judge-hf" else "vllm")
    if kind == "http":
        url, sep2, model_template = rest.partition("#")
        if not sep2 or not model_template:
            raise ConfigError(f"annotator '{spec}': expected http:URL#MODEL[@TEMPLATE]")
        model, _, template = model_template.partition("@")
        return AnnotatorConfig(kind="http", name=spec, url=url, model=model, template=template or "pairwise")
    if kind in JUDGMENT_KINDS:
        raise ConfigError(f"annotator '{spec}' writes judgments, not preferences: use it as "
                          "`raylign annotate judgments --judge SPEC`")
    raise ConfigError(f"annotator '{spec}': unknown kind '{kind}' (rm, rm-http, fn, judge, judge-hf, http)")


def check_annotators(annotators: list[AnnotatorConfig | str], setting: str = "--annotator") -> None:
    """Preflight for annotator specs or configs: each parses, and the model or function it names
    exists (an `http:` endpoint is only reachable once asked)."""
    from raylign.preflight import check_model, check_reward

    for item in annotators:
        config = parse_spec(item) if isinstance(item, str) else item
        label = f"{setting} {config.name or config.kind}"
        if config.kind == "reward":
            check_reward(config.reward, label)
        elif config.kind == "judge":
            check_model(config.model, label)


def build_annotator(config: AnnotatorConfig) -> Annotator:
    from raylign.feedback.judges import HttpJudge, SamplerJudge, judge_sampling

    if config.kind == "reward":
        reward = config.reward
        if reward.kind == "actor" and reward.model and "max_length" not in reward.model_fields_set:
            # Score at the length the reward model was trained with (its raylign_rm.json).
            from raylign.models.registry import resolve_model
            from raylign.scoring.reward_model import trained_max_length

            reward = reward.model_copy(update={"max_length": trained_max_length(resolve_model(reward.model))})
        return RewardAnnotator(reward, name=config.name)
    if config.kind == "judge":
        sampling: SamplingConfig = judge_sampling(backend=config.backend, num_samplers=config.num_samplers,
                                                  num_cpus_per_sampler=config.num_cpus_per_sampler,
                                                  max_prompt_tokens=config.max_prompt_tokens,
                                                  vllm_max_model_len=config.max_prompt_tokens + 16)
        return SamplerJudge(config.model, config.template, sampling, name=config.name)
    if not config.url:
        raise ConfigError("annotator kind 'http' needs url (an OpenAI-compatible base URL)")
    return HttpJudge(config.url, config.model, config.template, api_key_env=config.api_key_env,
                     timeout_s=config.timeout_s, max_workers=config.max_workers, name=config.name)


JUDGMENT_KINDS = ("judgment", "judgment-hf", "judgment-http")
PAIRWISE_KINDS = ("rm", "rm-http", "fn", "judge", "judge-hf", "http")


class JudgmentWriterConfig(StrictModel):
    """A judgment writer: a local model on sampler actors, or an OpenAI-compatible endpoint."""

    kind: Literal["sampler", "http"]
    name: str | None = None
    model: str = "SmolLM2-135M-Instruct"  # sampler: a local model; http: the endpoint's model name
    template: str = "judgment"
    max_new_tokens: int = Field(256, ge=1)  # tokens of judgment text
    max_chars: int = Field(2048, ge=16)  # longer judgments are cut at a sentence or word end
    backend: Literal["vllm", "hf"] = "vllm"  # sampler
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    num_samplers: int = Field(1, ge=1)
    num_cpus_per_sampler: float = 0.5
    max_prompt_tokens: int = Field(1536, ge=16)
    url: str | None = None  # http
    api_key_env: str = "OPENAI_API_KEY"
    max_workers: int = Field(4, ge=1)  # http: concurrent requests per Ray Data actor
    timeout_s: float = Field(120.0, gt=0)
    retries: int = Field(3, ge=0)  # http: further tries after a timeout, a dropped connection, 429 or 5xx


class JudgmentsConfig(StrictModel):
    data: InputPath  # outputs {instruction, input?, output} (AlpacaEval outputs .json, .jsonl[.gz], ...)
    output: OutputFile = "judgments.jsonl"
    judge: JudgmentWriterConfig
    limit: int | None = None
    batch_size: int = Field(16, ge=1)  # rows per Ray Data batch
    concurrency: int = Field(1, ge=1)  # Ray Data judging actors
    num_cpus: float = 0.25  # per judging actor (the samplers hold the model)
    use_ray_data: bool = True
    ray_address: RayAddress | None = None


def parse_judgment_spec(spec: str) -> JudgmentWriterConfig:
    """`judgment:MODEL[@TEMPLATE]`, `judgment-hf:MODEL[@TEMPLATE]` or `judgment-http:URL#MODEL[@TEMPLATE]`."""
    from raylign.feedback.templates import JUDGMENT_TEMPLATES

    kind, sep, rest = spec.partition(":")
    if kind not in JUDGMENT_KINDS:
        hint = " (a pairwise annotator: use it with `raylign annotate --annotator`)" if kind in PAIRWISE_KINDS else ""
        raise ConfigError(f"judge '{spec}': expected judgment:MODEL[@TEMPLATE], judgment-hf:MODEL[@TEMPLATE] "
                          f"or judgment-http:URL#MODEL[@TEMPLATE]{hint}")
    url = None
    if kind == "judgment-http":
        url, sep2, rest = rest.partition("#")
        if not sep2 or not url.startswith(("http://", "https://")):
            raise ConfigError(f"judge '{spec}': expected judgment-http:URL#MODEL[@TEMPLATE] with an http(s) URL")
    model, at, template = rest.partition("@")
    if not sep or not model.strip():
        raise ConfigError(f"judge '{spec}': no model named (expected {kind}:...MODEL[@TEMPLATE])")
    if at and template not in JUDGMENT_TEMPLATES:
        raise ConfigError(f"judge '{spec}': unknown judgment template '{template}' "
                          f"(choose from {', '.join(sorted(JUDGMENT_TEMPLATES))})")
    return JudgmentWriterConfig(kind="http" if url else "sampler", name=spec, model=model.strip(),
                                template=template or "judgment", url=url,
                                backend="hf" if kind == "judgment-hf" else "vllm")



def check_judgment_writer(config: JudgmentWriterConfig, setting: str = "--judge") -> None:
    """Preflight: the template exists and a local model is found (an endpoint answers only once asked)."""
    from raylign.feedback.templates import JUDGMENT_TEMPLATES
    from raylign.preflight import check_model

    label = f"{setting} {config.name or config.kind}"
    if config.template not in JUDGMENT_TEMPLATES:
        raise ConfigError(f"{label}: unknown judgment template '{config.template}' "
                          f"(choose from {', '.join(sorted(JUDGMENT_TEMPLATES))})")
    if config.kind == "sampler":
        check_model(config.model, label)
    elif not config.url:
        raise ConfigError(f"{label}: kind 'http' needs url (an OpenAI-compatible base URL)")


def build_judgment_writer(config: JudgmentWriterConfig):
    from raylign.feedback.judgments import HttpJudgmentWriter, SamplerJudgmentWriter, judgment_sampling

    if config.kind == "sampler":
        sampling = judgment_sampling(backend=config.backend, dtype=config.dtype, num_samplers=config.num_samplers,
                                     num_cpus_per_sampler=config.num_cpus_per_sampler,
                                     max_prompt_tokens=config.max_prompt_tokens, max_new_tokens=config.max_new_tokens)
        return SamplerJudgmentWriter(config.model, config.template, sampling, name=config.name,
                                     max_chars=config.max_chars)
    if not config.url:
        raise ConfigError("judgment writer kind 'http' needs url (an OpenAI-compatible base URL)")
    return HttpJudgmentWriter(config.url, config.model, config.template, api_key_env=config.api_key_env,
                              timeout_s=config.timeout_s, max_workers=config.max_workers, retries=config.retries,
                              max_tokens=config.max_new_tokens, max_chars=config.max_chars, name=config.name)
