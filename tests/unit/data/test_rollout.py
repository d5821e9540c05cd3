"""The declared rollout row matches what the stages really write."""

from __future__ import annotations

from raylign.data.rollout import BY_NAME, COLUMNS, Rollout, undeclared_columns, written_by


def test_the_typed_row_and_the_column_table_agree():
    assert set(Rollout.__annotations__) == set(BY_NAME)
    assert len(BY_NAME) == len(COLUMNS)
    assert {c.writer for c in COLUMNS} == {"adapters", "step_prompts", "prepare_prompt", "sampler", "sample_stage",
                                           "score_stage"}


def test_a_sampler_writes_its_declared_columns_and_no_other(tiny_model_dir):
    from raylign.engine.stages import score_batch
    from raylign.sampling.actor import SamplerWorker
    from raylign.sampling.base import SamplingConfig
    from tests.helpers import PreferLength, prompt_rows

    worker = SamplerWorker(str(tiny_model_dir), SamplingConfig(backend="hf", num_samples=2, max_new_tokens=4))
    rows = [{**row, "batch_index": 0, "prompt_uid": f"0:{i}", "step_prompts": 2, "candidates": [row["chosen"]]}
            for i, row in enumerate(prompt_rows(["Say hi.", "Count to two."], answers=True))]
    rollouts = worker.generate(rows)
    assert len(rollouts) == 2 * (2 + 1) and {r["source"] for r in rollouts} == {"policy", "dataset"}
    for rollout in score_batch(rollouts, PreferLength()):
        assert written_by("sampler") | written_by("score_stage") <= set(rollout)
        assert undeclared_columns(rollout) == set()
