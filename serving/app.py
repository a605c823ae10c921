"""The serving graph, built in one place:
``Ingress.bind(Features, Retrieval, Ranking, Rules, Events)``.

``serve run serving.app:build_app data_dir=...`` or ``serve deploy serve_config.yaml`` (whose
``args:`` block is a :class:`ServingArgs`) or ``persona serve``.
"""

from __future__ import annotations

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


def build_app(args: dict[str, Any] | ServingArgs) -> Application:
    """The application Serve runs (typed args: a dict from YAML or a :class:`ServingArgs`)."""
    args = args if isinstance(args, ServingArgs) else ServingArgs.model_validate(args)
    check_config(args)
    ranking = RankingStage.options(user_config={"model_name": args.model_name}).bind(args)
    return Ingress.bind(
        FeaturesStage.bind(args),
        RetrievalStage.bind(args),
        ranking,
        RulesStage.bind(args),
        EventsStage.bind(args),
        args,
    )
