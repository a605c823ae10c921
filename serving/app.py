"""The serving application, built in one place.

``colocated`` (default): ``Ingress(args, events=EventsStage)``, every request stage in the
ingress replicas; ``fused`` adds ``RankingStage``; ``graph`` also ``FeaturesStage``,
``RetrievalStage`` and ``RulesStage`` (see ``serving.placement``).
``serve run serving.app:build_app data_dir=...`` or ``serve deploy serve_config.yaml`` (whose
``args:`` block is a :class:`ServingArgs`) or ``persona serve``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray.serve import Application

from serving.config import load_apps, load_experiments
from serving.ingress import Ingress
from serving.rules import RulesProvider
from serving.settings import ServingArgs
from serving.stages import EventsStage, FeaturesStage, RankingStage, RetrievalStage, RulesStage


def check_config(args: ServingArgs) -> None:
    """Fail before any replica starts when a config file, the catalogue or the priors are bad."""
    from serving.catalogue import Catalogue
    from serving.priors import Priors

    apps = load_apps(args.apps_file)
    load_experiments(args.experiments_file, apps)
    RulesProvider(args.rules_file, Catalogue.from_data_dir(args.data_dir))
    Priors.load(args.serving_dir)


def build_app(
    args: dict[str, Any] | ServingArgs,
    deployment_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> Application:
    """The application Serve runs (typed args: a dict from YAML or a :class:`ServingArgs`).
    ``deployment_options`` (deployment name -> ``.options(...)``) overrides the decorators' own,
    as a ``serve_config.yaml`` would; benchmarks use it for the Serve-defaults reference."""
    args = args if isinstance(args, ServingArgs) else ServingArgs.model_validate(args)
    check_config(args)
    options = {name: dict(value) for name, value in (deployment_options or {}).items()}

    def bind(deployment: Any, **extra: Any) -> Any:
        return deployment.options(**{**extra, **options.get(deployment.name, {})})

    stages: dict[str, Any] = {"events": bind(EventsStage).bind(args)}
    model_config = {"model_name": args.model_name}
    if args.placement == "colocated":
        return bind(Ingress, user_config=model_config).bind(args, **stages)
    stages["ranking"] = bind(RankingStage, user_config=model_config).bind(args)
    if args.placement == "graph":
        stages["features"] = bind(FeaturesStage).bind(args)
        stages["retrieval"] = bind(RetrievalStage).bind(args)
        stages["rules"] = bind(RulesStage).bind(args)
    return bind(Ingress).bind(args, **stages)
