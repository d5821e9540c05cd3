"""CUT on the offline trainer: 2 Ray Train workers, tiny model, LoRA; the loss falls, the
LoRA-targeted weights (only those) change, and the held-out report comes out."""

from __future__ import annotations

import gzip
import json

import pytest
import torch

from raylign.launch.recipes import recipe_class
from tests.helpers import train_offline

pytestmark = [pytest.mark.integration, pytest.mark.slow]

JUDGED = [
    ("What is the capital of France?", "The capital of France is Lyon.", "Wrong: the capital is Paris."),
    ("Add 2 and 3.", "2 and 3 make 6.", "Incorrect, 2 + 3 = 5."),
    ("Write a short poem about the sea.", "The sky is blue.", "Not a poem and not about the sea."),
    ("Name a fruit.", "A carrot is a fruit.", "A carrot is a vegetable."),
]
GOOD = [
    ("Say hello.", "Hello! How can I help you?"),
    ("Give me a recipe.", "Mix flour, water, salt and yeast, then bake for an hour."),
]


def _write_judgments(path, copies: int = 4):
    with gzip.open(path, "wt") as handle:
        for copy in range(copies):
            for i, (q, a, j) in enumerate(JUDGED):
                handle.write(json.dumps({"id": copy, "instruction": f"{q} ({copy})", "input": "", "output": a,
                                         "judgment": j}) + "\n")
            for q, a in GOOD:
                handle.write(json.dumps({"instruction": f"{q} ({copy})", "input": "", "output": a,
                                         "judgment": None}) + "\n")
    return path


def test_cut_trains_with_two_workers_and_lowers_judged_bad_tokens(ray_cluster, tiny_model_dir, tmp_path):
    from raylign.config import load_config
    from raylign.evaluation.cut_eval import heldout_rows

    data = _write_judgments(tmp_path / "judgments.jsonl.gz")
    start_dir = tiny_model_dir
    config = load_config(recipe_class("cut"), None, [
        f"model={start_dir}", f"output_dir={tmp_path / 'run'}", f"data.path={data}", f"data.test_path={data}",
        "data.validation_fraction=0.2", "data.max_length=96", "cut.max_response_tokens=32", "cut.downsample=0.5",
        "lora.r=8", "lora.alpha=16", "lora.dropout=0", "optim.lr=1e-2", "optim.schedule=constant",
        "optim.warmup_ratio=0",
        "epochs=6", "batch_size=2", "grad_accum=1", "eval_every=0", "log_every=1", "num_workers=2",
        "cpus_per_worker=1", "keep_best=false", "eval_at_start=true", "heldout.negatives=16", "heldout.positives=8",
        "heldout.batch_size=8",
    ])
    summary = train_offline("cut", config)

    # the Ray Data downsampling keeps exactly what the in-memory one keeps on the train split
    from raylign.algorithms.cut_data import downsample_positives, load_judgments
    from raylign.data.splits import split_of

    train_rows = [r for r in load_judgments(data) if split_of(r["prompt_id"], 0.0, 0.2, 0) == "train"]
    expected = downsample_positives(train_rows, 0.5, config.cut.seed)
    assert summary["counts"]["train"]["judgments"] == len(expected) < len(train_rows)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [x for x in lines if x["split"] == "train"]
    assert len(train) >= 10 and all(k in train[0] for k in ("align_p_nll", "align_n_nll", "misalign_loss"))
    assert sum(x["loss"] for x in train[-3:]) / 3 < 0.8 * sum(x["loss"] for x in train[:3]) / 3
    assert summary["test_loss"] < summary["start_test_loss"]

    # merged LoRA weights differ from the starting model's
    from transformers import AutoModelForCausalLM

    start = AutoModelForCausalLM.from_pretrained(start_dir).state_dict()
    final = AutoModelForCausalLM.from_pretrained(tmp_path / "run").state_dict()
    assert start.keys() == final.keys()
    changed = [k for k in start if not torch.equal(start[k], final[k])]
    assert changed and all("mlp" in k for k in changed)  # LoRA targets: gate/up/down projections only
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").exists()

    heldout = summary["heldout"]
    assert heldout["negatives"] == 16 and heldout["before"]["judged_bad_tokens"] > 0
    before, after = heldout["before"], heldout["after"]
    # A random tiny model's flags are noise and its p are ~1/vocab, where -log(1 - p) has no force:
    # the drop of judged-bad tokens is the default-model recipe's measurement (docs/cut.md). Here:
    # the report is complete and the trained model fits the judged responses' other tokens better.
    assert after["judged_bad_tokens"] == before["judged_bad_tokens"]  # the same start-model flags
    assert after["other_negative_logprob"] > before["other_negative_logprob"]
    assert after["positive_nll"] < before["positive_nll"]
    assert len(heldout_rows(data, 16, 8)) == 24
