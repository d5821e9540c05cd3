"""DPO's reference pool must leave a CPU for the tasks that feed it: found before Ray starts."""

import pytest

import raylign.preflight
from raylign.algorithms.dpo import DPOObjective
from raylign.config import ConfigError
from raylign.launch.offline import check_offline
from tests.helpers import method_recipe


def _checked(monkeypatch, cpus: float, pairs_file, **reference):
    monkeypatch.setattr(raylign.preflight, "_local_resources", lambda address: {"CPU": cpus, "GPU": 0.0})
    recipe = method_recipe("dpo", {"data": {"path": str(pairs_file), "format": "generic"}, "reference": reference})
    check_offline(recipe, DPOObjective(recipe))


@pytest.fixture
def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"prompt": "Hi", "chosen": "Hello.", "rejected": "No."}\n')
    return path


def test_reference_holding_every_cpu_is_refused(monkeypatch, pairs_file):
    with pytest.raises(ConfigError, match="reference.threads"):
        _checked(monkeypatch, 2.0, pairs_file, num_cpus=2)
    with pytest.raises(ConfigError, match="concurrency=2"):
        _checked(monkeypatch, 2.0, pairs_file, num_cpus=1, concurrency=2)


def test_reference_leaving_a_cpu_passes(monkeypatch, pairs_file):
    _checked(monkeypatch, 2.0, pairs_file, num_cpus=1, threads=2)
    _checked(monkeypatch, 16.0, pairs_file, num_cpus=4, num_gpus=1, concurrency=2)
