"""The reference actor's CPU reservation is checked before Ray Data could wait on it forever."""

import pytest
import ray

from raylign.algorithms.dpo import check_reference_cpus
from raylign.config import ConfigError
from raylign.scoring.reference import ReferenceConfig


def test_reference_holding_every_cpu_is_refused(monkeypatch):
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    with pytest.raises(ConfigError, match="reference.threads"):
        check_reference_cpus(ReferenceConfig(num_cpus=2))
    with pytest.raises(ConfigError, match="concurrency=2"):
        check_reference_cpus(ReferenceConfig(num_cpus=1, concurrency=2))


def test_reference_leaving_a_cpu_passes(monkeypatch):
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    check_reference_cpus(ReferenceConfig(num_cpus=1, threads=2))
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 16.0, "GPU": 1.0})
    check_reference_cpus(ReferenceConfig(num_cpus=4, num_gpus=1, concurrency=2))
