"""A resumed Quark run gets its reward pool back as it was at the checkpoint's step."""

import json

import pytest
import ray

from raylign.algorithms.quark import QuarkAlgorithm, QuarkConfig
from raylign.engine.config import EngineConfig, TrainerConfig
from raylign.engine.loop import run_engine
from raylign.sampling.base import SamplingConfig
from raylign.scoring.reference import ReferenceConfig, create_reference
from tests.helpers import PreferShort, prompt_rows

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MAX_LENGTH = 64
PROMPTS = prompt_rows(["capital of France?", "write a poem", "hello"])
ROWS_PER_STEP = 2 * 2  # prompts_per_step x num_samples


def _run(tiny_model_dir, output_dir, steps: int, resume: bool):
    algorithm = QuarkAlgorithm(QuarkConfig(num_quantiles=2, pool_size=64), MAX_LENGTH)  # a new driver's
    model_path = algorithm.prepare_model(str(tiny_model_dir), str(output_dir))
    sampling = SamplingConfig(backend="hf", num_samples=2, max_new_tokens=6, num_samplers=1, num_cpus_per_sampler=0.25)
    reference = create_reference(ReferenceConfig(num_cpus=0.1), model_path, MAX_LENGTH, True)
    engine = EngineConfig(num_iterations=steps, prompts_per_step=2, pipeline="sequential", output_dir=str(output_dir),
                          resume=resume, trainer=TrainerConfig(num_workers=1, cpus_per_worker=0.5, optim={"lr": 5e-3},
                                                               max_length=MAX_LENGTH, save_every=2))
    try:
        run_engine(engine, model_path, PROMPTS, sampling, PreferShort(), algorithm, run_name="quark-resume",
                   reference=reference)
    finally:
        ray.kill(reference)
    return algorithm, [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def test_resumed_quark_run_has_its_pool_back(ray_cluster, tiny_model_dir, tmp_path):
    output_dir = tmp_path / "run"
    _, first = _run(tiny_model_dir, output_dir, steps=3, resume=False)
    assert [m["pool_size"] for m in first] == [ROWS_PER_STEP, 2 * ROWS_PER_STEP, 3 * ROWS_PER_STEP]
    saved = json.loads((output_dir / "algorithm_state" / "step_2.json").read_text())["pool"]["rows"]
    assert len(saved) == 2 * ROWS_PER_STEP  # the pool as step 2 was about to be selected
    assert not (output_dir / "algorithm_state" / "step_1.json").exists()  # older than the checkpoint: pruned

    resumed, second = _run(tiny_model_dir, output_dir, steps=4, resume=True)  # continues at step 2
    assert [m["step"] for m in second] == [1, 2, 3, 4]
    # with an empty pool step 3 would hold one step's rows
    assert [m["pool_size"] for m in second[2:]] == [3 * ROWS_PER_STEP, 4 * ROWS_PER_STEP]
    assert resumed.pool.rows[:len(saved)] == saved
    # the trainer took the same step from Ray Train's storage of the run (same name and folder)
    (resume,) = [json.loads(line) for line in (output_dir / "resumes.jsonl").read_text().splitlines()]
    assert resume == {**resume, "step": 2, "policy_version": 2, "source": "ray.train.get_checkpoint()"}
