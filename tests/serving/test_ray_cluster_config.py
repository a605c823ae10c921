"""ray_cluster.yaml passes the validation `ray up` runs, and keeps Persona's own cluster rules."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema  # a dependency of ray itself; validate_config needs it too
import pytest
import ray.autoscaler
import yaml

# The functions `ray up` calls before it talks to the cloud (commands._bootstrap_config):
# prepare_config merges the provider's defaults, validate_config applies ray-schema.json and
# Ray's cross-field checks.
from ray.autoscaler._private.util import prepare_config, validate_config

REPO_ROOT = Path(__file__).resolve().parents[2]
RAY_CLUSTER_YAML = REPO_ROOT / "ray_cluster.yaml"
RAY_SCHEMA = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
REDIS_PORT = 6379


def load_cluster_config() -> dict[str, Any]:
    with RAY_CLUSTER_YAML.open() as f:
        return yaml.safe_load(f)


def validate_like_ray_up(config: dict[str, Any]) -> dict[str, Any]:
    """Prepare and validate a cluster config as `ray up` does; returns the prepared config."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def worker_types(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: node_type
        for name, node_type in config["available_node_types"].items()
        if name != config["head_node_type"]
    }


def start_command(commands: list[str]) -> str:
    """The one `ray start` line of a start-command list."""
    (command,) = [c for c in commands if "ray start" in c]
    return command


@pytest.fixture(scope="module")
def cluster_config() -> dict[str, Any]:
    return load_cluster_config()


def test_file_as_written_matches_rays_schema(cluster_config: dict[str, Any]) -> None:
    schema = json.loads(RAY_SCHEMA.read_text())
    jsonschema.validate(cluster_config, schema)


def test_ray_up_validation_accepts_it(cluster_config: dict[str, Any]) -> None:
    prepared = validate_like_ray_up(cluster_config)
    # Ray's defaults would install a nightly Ray wheel over the image's pinned one.
    assert prepared["setup_commands"] == []
    assert prepared["cluster_name"] == "persona"


def test_gcs_port_is_not_redis_and_workers_join_it(cluster_config: dict[str, Any]) -> None:
    head = start_command(cluster_config["head_start_ray_commands"])
    worker = start_command(cluster_config["worker_start_ray_commands"])
    head_port = re.search(r"--head\b.*--port[= ](\d+)", head)
    assert head_port, f"head start command names no GCS port (Ray defaults to 6379): {head}"
    assert int(head_port.group(1)) != REDIS_PORT
    joined_port = re.search(r"--address[= ]\S*:(\d+)", worker)
    assert joined_port, f"worker start command names no head address: {worker}"
    assert joined_port.group(1) == head_port.group(1)
    assert "--dashboard-host=0.0.0.0" in head


def test_every_worker_type_has_bounds_and_resources(cluster_config: dict[str, Any]) -> None:
    workers = worker_types(cluster_config)
    assert {"cpu_serving", "cpu_training", "gpu_training"} <= set(workers)
    for name, node_type in workers.items():
        assert 0 <= node_type["min_workers"] <= node_type["max_workers"], name
        assert node_type["resources"].get("CPU", 0) > 0, f"{name} advertises no CPU"
    # The global cap covers every type at its maximum, so no type starves another.
    assert cluster_config["max_workers"] >= sum(t["max_workers"] for t in workers.values())


def test_a_gpu_worker_type_exists(cluster_config: dict[str, Any]) -> None:
    gpu_types = [
        name for name, t in worker_types(cluster_config).items() if t["resources"].get("GPU", 0)
    ]
    assert gpu_types, "no worker type advertises a GPU for Ray Train"


def _without_node_config(config: dict[str, Any]) -> None:
    del config["available_node_types"]["gpu_training"]["node_config"]


def _unknown_top_level_key(config: dict[str, Any]) -> None:
    config["max_worker"] = 34  # a typo of max_workers


def _unknown_node_type_key(config: dict[str, Any]) -> None:
    config["available_node_types"]["cpu_serving"]["max_replicas"] = 20


def _fractional_resource(config: dict[str, Any]) -> None:
    config["available_node_types"]["gpu_training"]["resources"]["GPU"] = 0.5


def _min_workers_over_global_cap(config: dict[str, Any]) -> None:
    config["available_node_types"]["cpu_serving"]["min_workers"] = config["max_workers"] + 1


def _head_type_not_defined(config: dict[str, Any]) -> None:
    config["head_node_type"] = "ray_head"


@pytest.mark.parametrize(
    ("break_config", "error", "message"),
    [
        (_without_node_config, jsonschema.ValidationError, "'node_config' is a required"),
        (_unknown_top_level_key, jsonschema.ValidationError, "'max_worker' was unexpected"),
        (_unknown_node_type_key, jsonschema.ValidationError, "'max_replicas' was unexpected"),
        (_fractional_resource, jsonschema.ValidationError, "not of type 'integer'"),
        (_min_workers_over_global_cap, ValueError, "sum of `min_workers`"),
        (_head_type_not_defined, ValueError, "must be one of `available_node_types`"),
    ],
)
def test_ray_up_validation_rejects_a_broken_copy(
    cluster_config: dict[str, Any],
    break_config: Callable[[dict[str, Any]], None],
    error: type[Exception],
    message: str,
) -> None:
    broken = copy.deepcopy(cluster_config)
    break_config(broken)
    with pytest.raises(error, match=re.escape(message)):
        validate_like_ray_up(broken)


def test_serve_config_is_valid_for_serve_deploy() -> None:
    """serve_config.yaml parses with Serve's own schema, its args with ServingArgs, and every
    deployment has fractional CPUs and an autoscaling_config."""
    from ray.serve.schema import ServeDeploySchema

    from serving.settings import ServingArgs

    root = Path(__file__).resolve().parents[2]
    config = ServeDeploySchema.model_validate(
        yaml.safe_load((root / "serve_config.yaml").read_text())
    )
    (application,) = config.applications
    ServingArgs.model_validate(application.args)
    names = {d.name for d in application.deployments}
    assert ServingArgs.model_validate(application.args).placement == "colocated"
    assert names == {"Ingress", "EventsStage"}
    for deployment in application.deployments:
        assert 0 < deployment.ray_actor_options.num_cpus < 1, deployment.name
        assert deployment.autoscaling_config, deployment.name
