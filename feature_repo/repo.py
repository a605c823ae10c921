"""Binds the definitions to the configured data dir, for the ``feast`` CLI (`feast apply`).

The ``persona features apply|materialize`` commands call :func:`build_feature_repo` directly;
this module exists so that ``cd feature_repo && feast apply`` works too. Feast discovers the
objects as module attributes, so each is named here.
"""

from feature_repo.definitions import build_feature_repo
from persona.settings import get_settings

_repo = build_feature_repo(get_settings().data_dir / "features")

customer = _repo.entities["customer"]
product = _repo.entities["product"]
interaction_push = _repo.push_sources["interaction_push"]
request_context = _repo.request_sources["request_context"]
customer_profile = _repo.views["customer_profile"]
customer_behaviour = _repo.views["customer_behaviour"]
customer_holdings = _repo.views["customer_holdings"]
customer_sequence = _repo.views["customer_sequence"]
customer_segment = _repo.views["customer_segment"]
product_stats = _repo.views["product_stats"]
request_context_features = _repo.on_demand_views["request_context_features"]
behaviour_ratios = _repo.on_demand_views["behaviour_ratios"]
ranker_v1 = _repo.services["ranker_v1"]
customer_context_v1 = _repo.services["customer_context_v1"]
