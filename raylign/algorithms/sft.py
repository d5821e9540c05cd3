"""SFT (`raylign train sft`): chat-templated demonstrations, prompt tokens masked, on the offline trainer.

Data: Alpaca / AlpacaFarm JSON (`instruction`, `input`, `output`), messages JSONL (the
last assistant turn is the target), HH transcripts (the chosen reply), CUT rows judged
acceptable, HF `datasets` folders. A Ray Data stage encodes each row with the chat
template, or LMFlow's HH markers under `data.prompt_format: hh_markers` (`raylign.models.chat`), into {input_ids, response_mask, position_ids}; with
`sft.packing` a second stage concatenates rows of a block into sequences of up to
`max_length` tokens, positions restarting per example (the examples of a pack attend to
earlier ones: plain causal attention, as TRL's packing without flash-attention).
Loss: summed response-token NLL divided by the global response-token count (`core.sequence_nll`).

    raylign train sft --config jobs/sft_alpaca.yaml [key.sub=value ...]
"""

from __future__ import annotations

import torch

from raylign.algorithms.core import sequence_nll
from raylign.algorithms.objective import OfflineObjective
from raylign.config import StrictModel
from raylign.models.chat import PROMPT_FORMATS


def fit_demonstration(prompt: list[int], response: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """Cut an over-long demonstration: the response loses its end first (the instruction is what
    the response must be learned from), down to half of max_length; then the prompt keeps its end."""
    if len(prompt) + len(response) <= max_length:
        return prompt, response
    prompt = prompt[-max(max_length - len(response), max_length // 2):]
    return prompt, response[: max_length - len(prompt)]


class SFTConfig(StrictModel):
    packing: bool = False  # concatenate examples into max_length sequences (fewer pad tokens)


class TokenizeDemonstrations:
    """Ray Data stage: SFT rows -> input_ids, response_mask, position_ids, length."""

    def __init__(self, model_path: str, max_length: int, over_long: str, prompt_format: str = "chat"):
        self.model_path, self.max_length, self.over_long = model_path, max_length, over_long
        self.prompt_format = prompt_format

    def __call__(self, table):
        import pyarrow as pa

        from raylign.models.chat import encode_row, load_tokenizer

        tokenizer = load_tokenizer(self.model_path)
        cols = {"input_ids": [], "response_mask": [], "position_ids": [], "length": []}
        for row in table.to_pylist():
            prompt, (response,) = encode_row(tokenizer, row, ("response",), self.max_length, self.prompt_format)
            if len(prompt) + len(response) > self.max_length and self.over_long == "drop":
                continue
            prompt, response = fit_demonstration(prompt, response, self.max_length)
            ids = prompt + response
            cols["input_ids"].append(ids)
            cols["response_mask"].append([0] * max(len(prompt), 1) + [1] * (len(ids) - max(len(prompt), 1)))
            cols["position_ids"].append(list(range(len(ids))))
            cols["length"].append(len(ids))
        ints = pa.list_(pa.int32())
        return pa.table({k: pa.array(v, ints if k != "length" else pa.int32()) for k, v in cols.items()})


class PackRows:
    """Ray Data stage: greedily concatenate token rows into sequences of at most max_length."""

    def __init__(self, max_length: int):
        self.max_length = max_length

    def __call__(self, table):
        import pyarrow as pa

        packs: list[dict] = []
        current = {"input_ids": [], "response_mask": [], "position_ids": []}
        for row in table.to_pylist():
            if current["input_ids"] and len(current["input_ids"]) + row["length"] > self.max_length:
                packs.append(current)
                current = {"input_ids": [], "response_mask": [], "position_ids": []}
            for key in current:
                current[key] = current[key] + list(row[key])
        if current["input_ids"]:
            packs.append(current)
        ints = pa.list_(pa.int32())
        out = {k: pa.array([p[k] for p in packs], ints) for k in ("input_ids", "response_mask", "position_ids")}
        out["length"] = pa.array([len(p["input_ids"]) for p in packs], pa.int32())
        return pa.table(out)


class SFTObjective(OfflineObjective):
    name = "sft"
    config_class = SFTConfig
    section = "sft"
    recipe_defaults = {"data": {"format": "alpaca"}, "optim": {"lr": 2e-5}}
    row_kind = "sft"
    unit = "examples"
    prompt_formats = PROMPT_FORMATS

    def prepare_dataset(self, ds, model_path: str):
        data = self.config.data
        tokens = ds.map_batches(TokenizeDemonstrations(model_path, data.max_length, data.over_long,
                                                       data.prompt_format), batch_format="pyarrow", batch_size=64)
        if self.config.sft.packing:
            tokens = tokens.map_batches(PackRows(data.max_length), batch_format="pyarrow", batch_size=256)
        return tokens

    def collate(self, rows: list[dict]) -> dict:
        width = max(r["length"] for r in rows)
        batch = {k: torch.zeros((len(rows), width), dtype=torch.long)
                 for k in ("input_ids", "response_mask", "position_ids", "attention_mask")}
        batch["input_ids"].fill_(self.pad_id)
        for i, r in enumerate(rows):
            n = r["length"]
            for key in ("input_ids", "response_mask", "position_ids"):
                batch[key][i, :n] = torch.tensor(r[key], dtype=torch.long)
            batch["attention_mask"][i, :n] = 1
        return batch

    def weight(self, rows: list[dict]) -> float:
        # position 0 of each row predicts nothing, so it never counts (see pack_prompt_responses)
        return float(sum(sum(r["response_mask"][1:]) for r in rows))

    def loss(self, module, data):
        device = next(module.parameters()).device
        ids = data["input_ids"].to(device)
        logits = module(input_ids=ids, attention_mask=data["attention_mask"].to(device),
                        position_ids=data["position_ids"].to(device), use_cache=False).logits[:, :-1].float()
        targets = ids[:, 1:]
        picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
        mask = data["response_mask"][:, 1:].to(device)
        return sequence_nll(picked, mask)
