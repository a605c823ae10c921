"""The HTTP ingress deployment. Its replica builds the stages for the configured placement
(``serving.placement``) and serves ``serving.http_api.create_api`` over them; the ASGI app is
built at replica start (``__serve_build_asgi_app__``), so it closes over this replica's service.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from serving.http_api import create_api
from serving.placement import graph_stages, in_process_stages
from serving.service import RecommendationService, tune_collector
from serving.settings import ServingArgs


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=100)
@serve.ingress()
class Ingress:
    def __init__(
        self,
        args: ServingArgs,
        events: DeploymentHandle,
        ranking: DeploymentHandle | None = None,
        features: DeploymentHandle | None = None,
        retrieval: DeploymentHandle | None = None,
        rules: DeploymentHandle | None = None,
    ):
        if args.placement == "colocated":
            stages = in_process_stages(args, "colocated", events)
        elif ranking is None:
            raise ValueError(f"placement {args.placement!r} needs the ranking stage")
        elif args.placement == "fused":
            stages = in_process_stages(args, "fused", events, ranking)
        elif features is None or retrieval is None or rules is None:
            raise ValueError("placement 'graph' needs the features, retrieval and rules stages")
        else:
            stages = graph_stages(features, retrieval, ranking, rules, events)
        self.service = RecommendationService(args, stages)
        tune_collector(freeze=False)  # throughput-optimised mode freezes start-up itself

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Model reload for the colocated placement (where each ingress replica holds the
        model): the same user_config as ``RankingStage.reconfigure``."""
        if self.service.stages.ranking_engine is not None:
            self.service.stages.ranking_engine.reconfigure(user_config)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_api(self.service)
