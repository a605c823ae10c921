"""The transformer ranker: causal self-attention over the customer's behaviour sequence (SASRec
line), plus customer, segment and request-context features, scoring candidate items.

    h_t   = Transformer(item_emb[x_1..t] + type_emb + pos_emb)       causal, pre-norm blocks
    ctx   = MLP(app, segment, device, hour, day-of-week embeddings, dense features)
    u_t   = LayerNorm(h_t + ctx)                                      the customer at step t
    score = u_t · item_emb[i] + bias[i]                               shared item embeddings

Training (see :mod:`training.trainer`) uses cross-entropy over the full catalogue at every
position that has a target (Kang & McAuley's SASRec with the softmax loss later work found to
converge much faster than one sampled negative), plus, for sets built from logged impressions,
binary cross-entropy of the shown items against their clicks, so ``sigmoid(score)`` is a click
probability.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from training.examples import ExampleBatch, Manifest

WEIGHTS_FILE: Final = "model.pt"
CONFIG_FILE: Final = "model_config.json"


class SequenceRankerConfig(BaseModel):
    """Architecture. ``n_*`` sizes come from the example set's manifest."""

    model_config = ConfigDict(extra="forbid")

    d_model: int = Field(64, ge=8)
    n_blocks: int = Field(2, ge=1)
    n_heads: int = Field(1, ge=1)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    max_len: int = Field(50, ge=1)
    n_items: int = Field(1, ge=1)
    n_dense: int = Field(0, ge=0)
    apps: list[str] = Field(default_factory=list)
    segments: list[str] = Field(default_factory=list)
    devices: list[str] = Field(default_factory=list)
    use_context: bool = True

    @classmethod
    def for_manifest(cls, manifest: Manifest, **architecture: object) -> SequenceRankerConfig:
        return cls(
            max_len=manifest.max_len,
            n_items=manifest.n_items,
            n_dense=len(manifest.dense_features),
            apps=manifest.apps,
            segments=manifest.segments,
            devices=manifest.devices,
            **architecture,  # type: ignore[arg-type]
        )


class SequenceRanker(nn.Module):
    def __init__(self, config: SequenceRankerConfig):
        super().__init__()
        self.config = config
        d = config.d_model
        self.item_emb = nn.Embedding(config.n_items + 1, d, padding_idx=0)
        self.item_bias = nn.Embedding(config.n_items + 1, 1)
        self.type_emb = nn.Embedding(8, d, padding_idx=0)
        self.pos_emb = nn.Embedding(config.max_len, d)
        self.emb_dropout = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(
            d_model=d,
            nhead=config.n_heads,
            dim_feedforward=d,
            dropout=config.dropout,
            activation="relu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, config.n_blocks, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(d)
        # Context: index 0 of each vocabulary = unknown value.
        self.app_emb = nn.Embedding(len(config.apps) + 1, d)
        self.segment_emb = nn.Embedding(len(config.segments) + 1, d)
        self.device_emb = nn.Embedding(len(config.devices) + 1, d)
        self.hour_emb = nn.Embedding(24, d)
        self.dow_emb = nn.Embedding(7, d)
        self.dense = nn.Linear(max(config.n_dense, 1), d)
        self.context_mlp = nn.Sequential(nn.ReLU(), nn.Dropout(config.dropout), nn.Linear(d, d))
        self.out_norm = nn.LayerNorm(d)
        nn.init.normal_(self.item_emb.weight, std=0.05)
        nn.init.zeros_(self.item_bias.weight)
        causal = torch.triu(torch.ones(config.max_len, config.max_len, dtype=torch.bool), 1)
        self.register_buffer("causal_mask", causal, persistent=False)

    def hidden(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, L, d) customer representation at every position."""
        history = inputs["history"]
        length = history.shape[1]
        positions = torch.arange(length, device=history.device)
        x = self.item_emb(history) * (self.config.d_model**0.5)
        x = x + self.pos_emb(positions)[None] + self.type_emb(inputs["history_types"])
        x = self.emb_dropout(x)
        # Causal, and no query may look at padding. Every position may always see itself, so no
        # attention row is empty (an empty row gives NaN, which the next block would spread).
        blocked = self.causal_mask[:length, :length][None] | (history == 0)[:, None, :]
        blocked = blocked & ~torch.eye(length, dtype=torch.bool, device=history.device)
        mask = blocked.repeat_interleave(self.config.n_heads, dim=0)
        h = self.blocks(x, mask=mask)
        h = self.final_norm(h)
        if self.config.use_context:
            ctx = (
                self.app_emb(inputs["app"])
                + self.segment_emb(inputs["segment"])
                + self.device_emb(inputs["device"])
                + self.hour_emb(inputs["request_hour"])
                + self.dow_emb(inputs["request_day_of_week"])
                + self.dense(inputs["context_dense"])
            )
            h = h + self.context_mlp(ctx)[:, None, :]
        return self.out_norm(h)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.hidden(inputs)

    def all_scores(self, user: torch.Tensor) -> torch.Tensor:
        """(..., n_items + 1) scores of every item for user vectors (..., d); index 0 = -inf."""
        scores = user @ self.item_emb.weight.T + self.item_bias.weight.T[0]
        scores[..., 0] = float("-inf")
        return scores

    def catalogue_logits(self, user: torch.Tensor) -> torch.Tensor:
        """(..., n_items) scores of items 1..n_items (no padding column): the training loss."""
        return nn.functional.linear(user, self.item_emb.weight[1:], self.item_bias.weight[1:, 0])

    def item_scores(self, user: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(B, C) scores of ``items`` (B, C) for user vectors (B, d)."""
        return (user[:, None, :] * self.item_emb(items)).sum(-1) + self.item_bias(items)[..., 0]

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.state_dict(), folder / WEIGHTS_FILE)
        (folder / CONFIG_FILE).write_text(self.config.model_dump_json(indent=2))

    @classmethod
    def load(cls, folder: Path) -> SequenceRanker:
        config_path = Path(folder) / CONFIG_FILE
        if not config_path.exists():
            raise FileNotFoundError(f"model: no {CONFIG_FILE} in {folder}")
        model = cls(SequenceRankerConfig.model_validate(json.loads(config_path.read_text())))
        state = torch.load(Path(folder) / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        model.eval()
        return model


class BatchEncoder:
    """Numpy example columns -> the model's input tensors (shared by training and scoring)."""

    def __init__(self, config: SequenceRankerConfig):
        self.app = {a: i + 1 for i, a in enumerate(config.apps)}
        self.segment = {s: i + 1 for i, s in enumerate(config.segments)}
        self.device = {d: i + 1 for i, d in enumerate(config.devices)}

    @staticmethod
    def _lookup(table: dict[str, int], values: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.array([table.get(v, 0) for v in values], dtype=np.int64))

    def encode(
        self, columns: dict[str, np.ndarray], device: torch.device
    ) -> dict[str, torch.Tensor]:
        def matrix(name: str, dtype: type) -> torch.Tensor:
            values = columns[name]
            if values.dtype == object:
                values = np.stack(values)
            return torch.as_tensor(values.astype(dtype))

        out = {
            "history": matrix("history", np.int64),
            "history_types": matrix("history_types", np.int64),
            "targets": matrix("targets", np.int64),
            "context_dense": matrix("context_dense", np.float32),
            "app": self._lookup(self.app, columns["app"]),
            "segment": self._lookup(self.segment, columns["segment"]),
            "device": self._lookup(self.device, columns["device"]),
            "request_hour": torch.as_tensor(columns["request_hour"].astype(np.int64)),
            "request_day_of_week": torch.as_tensor(columns["request_day_of_week"].astype(np.int64)),
        }
        return {k: v.to(device) for k, v in out.items()}

    def encode_batch(self, batch: ExampleBatch, device: torch.device) -> dict[str, torch.Tensor]:
        return self.encode(
            {
                "history": batch.history,
                "history_types": batch.history_types,
                "targets": batch.targets,
                "context_dense": batch.context_dense,
                "app": batch.app,
                "segment": batch.segment,
                "device": batch.device,
                "request_hour": batch.request_hour,
                "request_day_of_week": batch.request_day_of_week,
            },
            device,
        )


class TransformerRanker:
    """A trained :class:`SequenceRanker` behind the :class:`training.ranker.Ranker` protocol."""

    def __init__(self, model: SequenceRanker, name: str = "transformer"):
        self.model = model.eval()
        self.name = name
        self.encoder = BatchEncoder(model.config)
        self.device = next(model.parameters()).device

    @classmethod
    def load(cls, folder: Path, name: str = "transformer") -> TransformerRanker:
        return cls(SequenceRanker.load(folder), name)

    @torch.no_grad()
    def user_vectors(self, batch: ExampleBatch) -> torch.Tensor:
        inputs = self.encoder.encode_batch(batch, self.device)
        return self.model.hidden(inputs)[:, -1, :]

    @torch.no_grad()
    def score(self, batch: ExampleBatch, items: np.ndarray) -> np.ndarray:
        user = self.user_vectors(batch)
        scores = self.model.all_scores(user)
        index = torch.as_tensor(np.asarray(items, dtype=np.int64), device=self.device)
        return torch.gather(scores, 1, index).cpu().numpy()

    def click_probability(self, batch: ExampleBatch, items: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.score(batch, items)))
