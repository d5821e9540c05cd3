"""transformers `generate` backend: slower than vLLM, but runs wherever torch does."""

from __future__ import annotations

import torch

from raylign.models.chat import load_tokenizer
from raylign.sampling.base import Sample, Sampler, SamplingConfig

_DTYPES = {"auto": torch.float32, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class HFSampler(Sampler):
    def __init__(self, model_path: str, config: SamplingConfig):
        super().__init__(model_path, config)
        from transformers import AutoModelForCausalLM

        self.tokenizer = load_tokenizer(str(model_path))
        self.device = "cuda" if torch.cuda.is_available() and config.num_gpus_per_sampler > 0 else "cpu"
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=_DTYPES[config.dtype]).to(self.device)
        self.model.eval()
        self._generator_seed = config.seed

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], num_samples: int | None = None) -> list[list[Sample]]:
        k = num_samples or self.config.num_samples
        pad = self.tokenizer.pad_token_id
        eos = self.tokenizer.eos_token_id
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, ids in enumerate(prompts):  # left padding: generation continues from the right edge
            input_ids[i, width - len(ids) :] = torch.tensor(ids)
            attention[i, width - len(ids) :] = 1
        self._generator_seed += 1
        torch.manual_seed(self._generator_seed)
        greedy = self.config.temperature <= 0
        out = self.model.generate(
            input_ids=input_ids.to(self.device),
            attention_mask=attention.to(self.device),
            max_new_tokens=self.config.max_new_tokens,
            min_new_tokens=self.config.max_new_tokens if self.config.ignore_eos else None,
            do_sample=not greedy,
            temperature=None if greedy else self.config.temperature,
            top_p=None if greedy else self.config.top_p,
            top_k=None,
            num_return_sequences=k,
            pad_token_id=pad,
            eos_token_id=eos,
            return_dict_in_generate=True,
            output_logits=True,
        )
        new_tokens = out.sequences[:, width:].cpu()
        # Raw logits (before temperature/top-p) give the model's own log-probs.
        logprobs = torch.stack(out.logits, dim=1).float().log_softmax(-1).cpu()
        chosen = logprobs.gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)
        results: list[list[Sample]] = [[] for _ in prompts]
        for row in range(new_tokens.shape[0]):
            tokens = new_tokens[row].tolist()
            finish = "length"
            if eos in tokens:
                tokens = tokens[: tokens.index(eos) + 1]
                finish = "stop"
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            results[row // k].append(Sample(text, tokens, chosen[row, : len(tokens)].tolist(), finish))
        return self._stamp(results)

    @torch.no_grad()
    def label_logprobs(self, prompts: list[list[int]], labels: list[list[int]], chunk: int = 8) -> list[list[float]]:
        # Left padding puts every label at the right edge, so only its positions need logits.
        pad = self.tokenizer.pad_token_id
        result = [[0.0] * len(labels) for _ in prompts]
        single = all(len(label) == 1 for label in labels)  # one forward pass ranks every label
        for j, label in enumerate(labels[:1] if single else labels):
            for start in range(0, len(prompts), chunk):
                seqs = [p + list(label) for p in prompts[start : start + chunk]]
                width = max(len(s) for s in seqs)
                ids = torch.full((len(seqs), width), pad, dtype=torch.long)
                mask = torch.zeros((len(seqs), width), dtype=torch.long)
                for i, seq in enumerate(seqs):
                    ids[i, width - len(seq) :] = torch.tensor(seq)
                    mask[i, width - len(seq) :] = 1
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
                logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                    position_ids=positions.to(self.device), logits_to_keep=len(label) + 1).logits
                logp = logits[:, :-1].float().log_softmax(-1).cpu()  # the predictions of the label tokens
                target = torch.tensor(list(label)).expand(len(seqs), -1).unsqueeze(-1)
                for i, value in enumerate(logp.gather(-1, target).squeeze(-1).sum(-1).tolist()):
                    result[start + i][j] = value
                if single:  # the prompt's last position predicts the label token: read all of them there
                    for k, other in enumerate(labels):
                        for i, value in enumerate(logp[:, 0, other[0]].tolist()):
                            result[start + i][k] = value
        return result

    def load_state_dict(self, state_dict: dict, version: int) -> None:
        missing, unexpected = self.model.load_state_dict(state_dict, strict=False)
        if unexpected:
            raise ValueError(f"weights do not fit the sampler's model: unexpected {unexpected[:5]}")
        if getattr(self.model.config, "tie_word_embeddings", False):
            self.model.tie_weights()
        self.policy_version = version
