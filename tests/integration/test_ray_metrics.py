"""Run metrics reach Ray's Prometheus endpoint (what the Ray Dashboard's metrics read)."""

import time
import urllib.request

import pytest

from raylign.metrics import MetricsLogger

pytestmark = pytest.mark.integration


def test_metrics_exported_to_ray_prometheus_endpoint(ray_cluster, tmp_path):
    port = ray_cluster.nodes()[0]["MetricsExportPort"]
    with MetricsLogger(tmp_path, "export-probe") as logger:
        logger.log(1, {"reward_mean": 0.625})
        deadline = time.time() + 45
        found = []
        while time.time() < deadline and not found:
            time.sleep(2)
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
            found = [line for line in body.splitlines()
                     if line.startswith("ray_raylign_reward_mean{") and 'run="export-probe"' in line]
    assert found and found[0].endswith(" 0.625")
