"""The trainer's GPU path, run for real where a CUDA GPU and DeepSpeed are present (skipped
elsewhere, so CI on the CPU machine skips them): the process group is NCCL, the policy is
a DeepSpeed ZeRO-2 engine built from the shipped `cluster/deepspeed_zero2.json`.

- a DeepSpeed step over several uneven micro-batches takes exactly the plain torch step
  (every micro-batch's gradient counts, normalised by the global weight);
- every online method prepares and steps under DeepSpeed bf16 on the GPU;
- a DeepSpeed checkpoint (the engine's own files beside the HF weights) resumes the
  optimizer: the step after a resume is the step the uninterrupted run takes.

One GPU means a world of one rank here; data-parallel equivalence across ranks is
tests/integration/test_ddp_gradients.py (gloo, CPU).
"""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.gpu

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)
deepspeed = pytest.importorskip("deepspeed")

from raylign.algorithms.base import TrainContext, policy_of  # noqa: E402
from raylign.engine.config import TrainerConfig  # noqa: E402
from raylign.engine.policy_trainer import (  # noqa: E402
    _build,
    train_on_units,
    update_plan,
)
from raylign.engine.trainer_checkpoint import (  # noqa: E402
    DEEPSPEED_DIR,
    DEEPSPEED_TAG,
    ResumePoint,
    load_resumable,
    write_all_ranks,
)
from raylign.training.rng_state import gather_rng  # noqa: E402
from tests.helpers import MAX_LENGTH, ONLINE_CASES, free_port, online_case  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SHIPPED_CONFIG = str(REPO / "cluster" / "deepspeed_zero2.json")


@pytest.fixture(scope="module", autouse=True)
def nccl_world():
    """A one-rank NCCL process group, as Ray Train sets up for a `use_gpu` worker."""
    port = free_port()
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "LOCAL_RANK": "0",
           "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # what DeepSpeed reads; a later Ray cluster must not inherit it
    torch.cuda.set_device(0)
    torch.distributed.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1,
                                         device_id=torch.device("cuda", 0))
    yield
    torch.distributed.destroy_process_group()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def make_rows(vocab: int, prompts: int = 3, samples: int = 4, seed: int = 0) -> list[dict]:
    """Rollout rows as the engine hands them to `select`: token ids, reward, the samplers'
    and the reference's log-probs, the text and finish reason the filters read."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for p in range(prompts):
        prompt = torch.randint(5, vocab, (3 + p,), generator=generator).tolist()
        for s in range(samples):
            length = 3 + (p + 2 * s) % 5
            response = torch.randint(5, vocab, (length,), generator=generator).tolist()
            rows.append({
                "prompt_uid": f"{seed}:{p}", "prompt_id": f"p{p}", "prompt": f"prompt {p}",
                "prompt_token_ids": prompt, "response_token_ids": response,
                "response": f"answer {p}-{s} " + "word " * length, "finish_reason": "stop",
                "reward": float((p * 7 + s * 3) % 5) + 0.1 * s, "source": "policy", "policy_version": 0,
                "logprobs": (-1.0 - 0.1 * torch.rand(length, generator=generator)).tolist(),
                "ref_logprobs": (-1.0 - 0.1 * torch.rand(length, generator=generator)).tolist(),
            })
    return rows


def methods():
    from raylign.algorithms.rrhf import RRHFAlgorithm, RRHFConfig

    cases = {case: (lambda case=case: online_case(case)[0]) for case in ONLINE_CASES}
    return {"rrhf": lambda: RRHFAlgorithm(RRHFConfig()), **cases}


def trainer_config(**overrides) -> dict:
    settings = {"use_gpu": True, "optim": {"lr": 1e-3}, "max_length": MAX_LENGTH, "micro_batch_size": 2,
                "deepspeed_config": SHIPPED_CONFIG, **overrides}
    return {"trainer": TrainerConfig(**settings)}


def snapshot(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().float().cpu().clone() for k, v in policy_of(module).state_dict().items()}


def step(module, optimizer, algorithm, units, cfg, pad_id: int, seed=0) -> dict:
    context = TrainContext(pad_id, MAX_LENGTH)
    plan = update_plan(cfg["trainer"], algorithm)
    return train_on_units(module, optimizer, algorithm, copy.deepcopy(units), None, context, plan,
                          cfg["trainer"].deepspeed_config is not None, 1.0, seed)


def test_deepspeed_step_equals_the_torch_step_over_uneven_micro_batches(tiny_model_dir, tmp_path):
    """SGD lr 1 in fp32: the parameter change is minus the gradient, so the two paths must
    agree on the gradient summed over 3 micro-batches (weights 2, 2, 1) / the global weight."""
    from transformers import AutoModelForCausalLM

    from raylign.algorithms.rrhf import RRHFAlgorithm, RRHFConfig
    from raylign.models.chat import load_tokenizer

    pad_id = load_tokenizer(str(tiny_model_dir)).pad_token_id
    algorithm = RRHFAlgorithm(RRHFConfig())
    units, _ = algorithm.select(make_rows(vocab=300, prompts=5), 1)
    fp32_zero2 = tmp_path / "zero2_fp32.json"
    fp32_zero2.write_text(json.dumps({"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
                                      "gradient_clipping": 0.0, "zero_optimization": {"stage": 2},
                                      "zero_allow_untested_optimizer": True}))
    deltas = {}
    for path in ("torch", "deepspeed"):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).cuda()
        before = snapshot(model)
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        module = model
        if path == "deepspeed":
            module, optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=str(fp32_zero2))
        metrics = train_on_units(module, optimizer, algorithm, copy.deepcopy(units), None, TrainContext(pad_id, MAX_LENGTH),
                                 (1, 1, 2), path == "deepspeed", 1e9, 0)
        assert metrics["micro_steps"] == 3 and metrics["global_weight"] == 5, (path, metrics)
        after = snapshot(module)
        deltas[path] = {k: before[k] - after[k] for k in before}
    moved = 0
    for name, delta in deltas["torch"].items():
        assert torch.allclose(delta, deltas["deepspeed"][name], atol=1e-5, rtol=1e-4), name
        moved += int(delta.abs().max() > 0)
    assert moved > 10


@pytest.mark.parametrize("method", list(methods()))
def test_every_online_method_steps_under_deepspeed_bf16(tiny_model_dir, tmp_path, method):
    algorithm = methods()[method]()
    model_path = algorithm.prepare_model(str(tiny_model_dir), str(tmp_path / "run"))
    cfg = trainer_config()
    module, optimizer, tokenizer, trainable = _build(cfg, model_path, algorithm)
    assert isinstance(module, deepspeed.DeepSpeedEngine) and trainable > 0
    assert next(module.parameters()).dtype == torch.bfloat16 and next(module.parameters()).is_cuda
    units, _ = algorithm.select(make_rows(vocab=len(tokenizer)), 1)
    assert units
    before = snapshot(module)
    metrics = step(module, optimizer, algorithm, units, cfg, tokenizer.pad_token_id)
    assert math.isfinite(metrics["loss"]) and math.isfinite(metrics["grad_norm"]), metrics
    after = snapshot(module)
    assert any(not torch.equal(before[k], after[k]) for k in before), "the step changed no weight"
    if method.startswith("ppo"):
        assert math.isfinite(metrics["kl"]) and "value_loss" in metrics


def test_deepspeed_checkpoint_resumes_the_optimizer(tiny_model_dir, tmp_path):
    """PPO (policy + value head under one engine): step 1, checkpoint, step 2; a new engine
    loaded from the checkpoint takes the same step 2. A new engine that does not load the
    optimizer state (fresh Adam moments) lands elsewhere, so the comparison has teeth."""
    from transformers import AutoModelForCausalLM

    from raylign.algorithms.ppo import PPOAlgorithm, PPOConfig

    def fresh(path):
        algorithm = PPOAlgorithm(PPOConfig(kl_coef=0.05), MAX_LENGTH)
        module, optimizer, tokenizer, _ = _build(cfg, str(path), algorithm)
        return algorithm, module, optimizer, tokenizer

    cfg = trainer_config(epochs=1)
    algorithm, module, optimizer, tokenizer = fresh(tiny_model_dir)
    first, _ = algorithm.select(make_rows(vocab=len(tokenizer), seed=1), 1)
    second, _ = algorithm.select(make_rows(vocab=len(tokenizer), seed=2), 2)
    pad_id = tokenizer.pad_token_id
    step(module, optimizer, algorithm, first, cfg, pad_id, seed=1)

    folder = tmp_path / "latest"
    state = {"step": 1, "policy_version": 1}
    write_all_ranks(folder, module, optimizer, tokenizer, state, gather_rng(), deepspeed=True, rank=0)
    assert (folder / DEEPSPEED_DIR / DEEPSPEED_TAG).is_dir() and (folder / "trainer_extra.pt").exists()
    saved = snapshot(module)
    reloaded = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.bfloat16).state_dict()
    assert all(torch.equal(saved[k], reloaded[k].float()) for k in saved)  # plain HF weights, as trained

    uninterrupted = step(module, optimizer, algorithm, second, cfg, pad_id, seed=2)
    target = snapshot(module)
    del module, optimizer

    resumed_alg, resumed, resumed_opt, _ = fresh(folder)
    load_resumable(ResumePoint(folder, state, "latest/"), resumed, resumed_opt, True, 0, 1)
    assert resumed.global_steps == 1  # the engine's own step counter came back
    again = step(resumed, resumed_opt, resumed_alg, second, cfg, pad_id, seed=2)
    got = snapshot(resumed)
    del resumed, resumed_opt

    cold_alg, cold, cold_opt, _ = fresh(folder)  # same weights, optimizer state not loaded
    step(cold, cold_opt, cold_alg, second, cfg, pad_id, seed=2)
    cold_weights = snapshot(cold)

    def distance(a, b):
        return max(float((a[k] - b[k]).abs().max()) for k in a)

    assert again["loss"] == pytest.approx(uninterrupted["loss"], rel=1e-3, abs=1e-4)
    resumed_gap, cold_gap = distance(got, target), distance(cold_weights, target)
    assert resumed_gap < 0.1 * cold_gap, (resumed_gap, cold_gap)
