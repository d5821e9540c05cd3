"""Offline RRHF (`raylign train rrhf-offline`): RRHF as its paper trains it, from ranked files.

The paper samples responses once (the initial model, other systems, the dataset's own
chosen/rejected), scores them once with a reward model, and trains on `{query, responses,
scores}` files. This objective reads such files (RRHF's released format, raylign's own from
`raylign annotate rank`, HH pairs as k = 2, AlpacaFarm candidate lists with scores) on the offline
trainer and applies the same pure `rrhf_loss` the online method uses; k may differ per query.

Ray Data stage: ranked rows -> prompt ids (chat template) and each response's ids (ending with
EOS), stored flat with their lengths so the rows stay plain int lists.

    raylign annotate rank --prompts prompts.jsonl --samples runs/samples.json --annotator rm:hh-rm-smollm2 --output ranked.jsonl
    raylign train rrhf-offline --config jobs/rrhf_offline_hh.yaml [key.sub=value ...]
"""

from __future__ import annotations

import torch
from pydantic import Field

from raylign.algorithms.objective import OfflineObjective
from raylign.algorithms.rrhf import rrhf_loss
from raylign.config import StrictModel
from raylign.models.sequences import pack_prompt_responses, token_logprobs


class RRHFOfflineConfig(StrictModel):
    rrhf_weight: float = Field(1.0, ge=0.0)
    length_penalty: float = 1.0
    # a query whose responses all score the same has no order to learn, and its SFT term would
    # fine-tune on an arbitrary one of them
    skip_tied_groups: bool = True
    # keep at most this many responses per query (the best and the worst first, then evenly
    # spaced ranks), so one query's forward pass stays bounded; None keeps every response
    max_responses: int | None = Field(None, ge=2)


def keep_ranks(scores: list[float], limit: int | None) -> list[int]:
    """Indices of the responses kept (in their file order): all, or `limit` spread over the ranking."""
    if limit is None or len(scores) <= limit:
        return list(range(len(scores)))
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    picks = {order[round(j * (len(order) - 1) / (limit - 1))] for j in range(limit)}
    return sorted(picks)


class TokenizeRankLists:
    """Ray Data stage: ranklist rows -> prompt_ids, response_ids (flat), response_lengths, scores, length."""

    def __init__(self, model_path: str, max_length: int, skip_tied: bool, max_responses: int | None):
        self.model_path, self.max_length = model_path, max_length
        self.skip_tied, self.max_responses = skip_tied, max_responses

    def __call__(self, table):
        import pyarrow as pa

        from raylign.models.chat import encode_row, load_tokenizer
        from raylign.models.sequences import fit_pair

        tokenizer = load_tokenizer(self.model_path)
        cols = {"prompt_ids": [], "response_ids": [], "response_lengths": [], "scores": [], "length": []}
        for row in table.to_pylist():
            scores = [float(s) for s in row["scores"]]
            if self.skip_tied and len(set(scores)) < 2:
                continue
            kept = keep_ranks(scores, self.max_responses)
            texts = {f"response_{i}": row["responses"][i] for i in kept}
            prompt, encoded = encode_row(tokenizer, {**row, **texts}, tuple(texts), self.max_length)
            responses = [fit_pair(prompt, ids, self.max_length)[1] for ids in encoded]
            cols["prompt_ids"].append(prompt)
            cols["response_ids"].append([t for r in responses for t in r])
            cols["response_lengths"].append([len(r) for r in responses])
            cols["scores"].append([scores[i] for i in kept])
            # the forward pass's cost: every response with its own copy of the prompt
            cols["length"].append(sum(min(self.max_length, len(prompt) + len(r)) for r in responses))
        ints = pa.list_(pa.int32())
        return pa.table({"prompt_ids": pa.array(cols["prompt_ids"], ints),
                         "response_ids": pa.array(cols["response_ids"], ints),
                         "response_lengths": pa.array(cols["response_lengths"], ints),
                         "scores": pa.array(cols["scores"], pa.list_(pa.float64())),
                         "length": pa.array(cols["length"], pa.int32())})


def split_responses(flat: list[int], lengths: list[int]) -> list[list[int]]:
    out, start = [], 0
    for n in lengths:
        out.append(list(flat[start : start + n]))
        start += n
    return out


class RRHFOfflineObjective(OfflineObjective):
    name = "rrhf-offline"
    config_class = RRHFOfflineConfig
    section = "rrhf"
    recipe_defaults = {"data": {"format": "auto"}, "optim": {"lr": 2e-5}}
    row_kind = "ranklist"
    unit = "queries"

    def prepare_dataset(self, ds, model_path: str):
        rrhf = self.config.rrhf
        return ds.map_batches(TokenizeRankLists(model_path, self.config.data.max_length, rrhf.skip_tied_groups,
                                                rrhf.max_responses), batch_format="pyarrow", batch_size=32)

    def collate(self, rows: list[dict]) -> dict:
        """Every response of the micro-batch's queries in one right-padded batch, query by query."""
        prompts, responses, groups = [], [], []
        for row in rows:
            split = split_responses(row["response_ids"], row["response_lengths"])
            prompts += [row["prompt_ids"]] * len(split)
            responses += split
            groups.append([float(s) for s in row["scores"]])
        batch = pack_prompt_responses(prompts, responses, self.pad_id, self.config.data.max_length)
        batch["groups"] = groups
        return batch

    def loss(self, module, data):
        logprobs = token_logprobs(module, data)
        mask = data["response_mask"].to(logprobs.device)
        rrhf, total, sums, start = self.config.rrhf, 0.0, {}, 0
        groups = data["groups"]
        for scores in groups:
            rows = slice(start, start + len(scores))
            start += len(scores)
            loss, metrics = rrhf_loss(logprobs[rows], mask[rows], torch.tensor([scores]), rrhf.rrhf_weight,
                                      rrhf.length_penalty)
            total = total + loss
            for key, value in metrics.items():
                if value == value:  # accuracy_of_order is NaN for a tied query
                    sums[key] = sums.get(key, 0.0) + float(value) / len(groups)
        return total, float(len(groups)), sums
