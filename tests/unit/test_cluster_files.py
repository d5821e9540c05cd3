"""The files under cluster/ parse, and their Serve args are valid reward-endpoint settings."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from raylign.config import build_config
from raylign.serving.reward_app import RewardServeConfig

CLUSTER = Path(__file__).parents[2] / "cluster"


def _serve_apps(path: Path) -> list[dict]:
    doc = yaml.safe_load(path.read_text())
    if doc.get("kind") == "RayService":
        doc = yaml.safe_load(doc["spec"]["serveConfigV2"])
    return doc["applications"]


def test_serve_configs_hold_valid_args_and_require_a_token():
    for name in ("serve_rm.yaml", "rayservice_rm.yaml"):
        (app,) = _serve_apps(CLUSTER / name)
        assert app["import_path"] == "raylign.serving.reward_app:build_app"
        config = build_config(RewardServeConfig, app["args"], name)
        assert config.require_token and config.token is None  # the token comes from the environment


def test_rayservice_token_comes_from_a_secret():
    doc = yaml.safe_load((CLUSTER / "rayservice_rm.yaml").read_text())
    groups = [doc["spec"]["rayClusterConfig"]["headGroupSpec"], *doc["spec"]["rayClusterConfig"]["workerGroupSpecs"]]
    for group in groups:
        (container,) = group["template"]["spec"]["containers"]
        env = {e["name"]: e for e in container["env"]}
        assert "secretKeyRef" in env["RAYLIGN_RM_TOKEN"]["valueFrom"]


def test_all_cluster_files_parse():
    for path in CLUSTER.iterdir():
        if path.suffix in (".yaml", ".yml"):
            assert list(yaml.safe_load_all(path.read_text()))
        elif path.suffix == ".json":
            assert json.loads(path.read_text())
