"""The ranking stage's engine: registry models scoring retrieved candidates for a batch of
requests, with the priors as the answer when a model is missing, broken or too slow.

A model version is loaded only if it was trained on the feature service serving provides and
its dense feature layout matches this code's encoder; anything else is refused at load and the
version already serving stays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import torch

from serving.customer import CustomerView
from serving.rules import Candidate
from training.examples import INTERACTION_TYPES, NO_SEGMENT, Manifest, Vocabulary
from training.models.sequence_ranker import BatchEncoder, SequenceRanker
from training.sets.dense import DenseEncoder

log = logging.getLogger(__name__)

#: The feature service serving reads; a model trained on another is refused.
SERVED_FEATURE_SERVICE: Final = "ranker_v1"


class ModelRefused(ValueError):
    """A model version that must not serve: the message says why."""


@dataclass(frozen=True)
class RequestContext:
    app: str
    device: str
    request_hour: int
    request_day_of_week: int


@dataclass(frozen=True)
class RankingRequest:
    customer: CustomerView
    context: RequestContext
    candidates: list[Candidate]


class ServedModel:
    """A registered transformer ranker, loaded for scoring (CPU, eval mode)."""

    def __init__(self, folder: Path, name: str, version: int):
        folder = Path(folder)
        self.name, self.version = name, version
        try:
            self.manifest = Manifest.model_validate_json((folder / "manifest.json").read_text())
            vocabulary = Vocabulary.model_validate_json((folder / "vocabulary.json").read_text())
        except (OSError, ValueError) as error:
            raise ModelRefused(
                f"{self.label}: manifest or vocabulary unreadable ({error})"
            ) from error
        if self.manifest.feature_service != SERVED_FEATURE_SERVICE:
            raise ModelRefused(
                f"{self.label}: trained on feature service {self.manifest.feature_service!r}, "
                f"serving provides {SERVED_FEATURE_SERVICE!r}"
            )
        self.index = vocabulary.index_of()
        self.dense = DenseEncoder(tuple(vocabulary.product_ids()[1:]))
        if self.dense.feature_names() != self.manifest.dense_features:
            raise ModelRefused(f"{self.label}: dense feature layout differs from serving's encoder")
        try:
            self.model = SequenceRanker.load(folder)
        except (OSError, RuntimeError, ValueError) as error:
            raise ModelRefused(f"{self.label}: weights unreadable ({error})") from error
        self.encoder = BatchEncoder(self.model.config)
        self.mean = np.asarray(self.manifest.dense_mean, dtype=np.float32)
        self.std = np.asarray(self.manifest.dense_std, dtype=np.float32)

    @property
    def label(self) -> str:
        return f"{self.name}@v{self.version}"

    def _history(self, customer: CustomerView) -> tuple[np.ndarray, np.ndarray]:
        length = self.manifest.max_len
        items = np.zeros(length, dtype=np.int64)
        types = np.zeros(length, dtype=np.int64)
        known = [
            (self.index[i.product_id], INTERACTION_TYPES.index(i.event_type) + 1)
            for i in customer.sequence
            if i.product_id in self.index and i.event_type in INTERACTION_TYPES
        ][-length:]
        if known:
            items[-len(known) :] = [k[0] for k in known]
            types[-len(known) :] = [k[1] for k in known]
        return items, types

    def _dense(self, customers: list[CustomerView]) -> np.ndarray:
        raw = self.dense.raw_rows([c.raw for c in customers])
        return ((raw - self.mean) / self.std).astype(np.float32)

    @torch.inference_mode()
    def score(self, requests: list[RankingRequest]) -> list[np.ndarray]:
        """Per request, one score per candidate (logits; unknown products get -inf)."""
        histories = [self._history(r.customer) for r in requests]
        columns = {
            "history": np.stack([h[0] for h in histories]),
            "history_types": np.stack([h[1] for h in histories]),
            "targets": np.zeros((len(requests), self.manifest.max_len), dtype=np.int64),
            "context_dense": self._dense([r.customer for r in requests]),
            "app": np.asarray([r.context.app for r in requests], dtype=object),
            "segment": np.asarray(
                [r.customer.segment or NO_SEGMENT for r in requests], dtype=object
            ),
            "device": np.asarray([r.context.device for r in requests], dtype=object),
            "request_hour": np.asarray([r.context.request_hour for r in requests]),
            "request_day_of_week": np.asarray([r.context.request_day_of_week for r in requests]),
        }
        inputs = self.encoder.encode(columns, torch.device("cpu"))
        user = self.model.hidden(inputs)[:, -1, :]
        scores = self.model.all_scores(user).numpy()
        out = []
        for row, request in zip(scores, requests, strict=True):
            idx = [self.index.get(c.product_id, 0) for c in request.candidates]
            out.append(row[np.asarray(idx, dtype=np.int64)] if idx else np.zeros(0, np.float32))
        return out


def rank_by_model(model: ServedModel, requests: list[RankingRequest]) -> list[list[Candidate]]:
    """Candidates re-ordered by the model's click probability, best first."""
    ranked = []
    for request, logits in zip(requests, model.score(requests), strict=True):
        probability = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
        order = np.argsort(-probability, kind="stable")
        ranked.append(
            [
                Candidate(
                    product_id=request.candidates[i].product_id,
                    score=float(probability[i]),
                    reasons=(*request.candidates[i].reasons, f"ranked:{model.label}"),
                )
                for i in order
            ]
        )
    return ranked


def rank_by_priors(candidates: list[Candidate], why: str) -> list[Candidate]:
    """The retrieval order (segment or global prior), as the fallback or the baseline policy."""
    ordered = sorted(candidates, key=lambda c: (-c.score, c.product_id))
    return [Candidate(c.product_id, c.score, (*c.reasons, f"ranked:{why}")) for c in ordered]
