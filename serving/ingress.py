"""The HTTP ingress deployment. Its replica builds the stages for the configured placement
(``serving.placement``) and serves ``serving.http_api.create_api`` over them; the ASGI app is
built at replica start (``__serve_build_asgi_app__``), so it closes over this replica's service.
"""

from __future__ import annotations

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from serving.http_api import create_api
from serving.placement import fused_stages, graph_stages
from serving.service import RecommendationService
from serving.settings import ServingArgs


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=100)
@serve.ingress()
class Ingress:
    def __init__(
        self,
        args: ServingArgs,
        ranking: DeploymentHandle,
        events: DeploymentHandle,
        features: DeploymentHandle | None = None,
        retrieval: DeploymentHandle | None = None,
        rules: DeploymentHandle | None = None,
    ):
        if args.placement == "graph":
            if features is None or retrieval is None or rules is None:
                raise ValueError("placement 'graph' needs the features, retrieval and rules stages")
            stages = graph_stages(features, retrieval, ranking, rules, events)
        else:
            stages = fused_stages(args, ranking, events)
        self.service = RecommendationService(args, stages)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_api(self.service)
