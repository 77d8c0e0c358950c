"""A loaded model with its architecture adapter: everything a method needs to run on it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .adapters import Adapter, HeadLayout, adapter_for
from .placement import execution_device


@dataclass
class ModelHandle:
    model: nn.Module
    adapter: Adapter
    layout: HeadLayout

    @classmethod
    def wrap(cls, model: nn.Module) -> ModelHandle:
        """Raises UnsupportedArchitectureError for a family without an adapter."""
        return cls(model, adapter_for(model.config), HeadLayout.from_config(model.config))

    @property
    def config(self):
        return self.model.config

    @property
    def device(self) -> torch.device:
        """Where inputs go in: the input embeddings' device (a model split by a device map has several)."""
        return execution_device(self.model.get_input_embeddings())

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def vocab_size(self) -> int:
        return self.model.get_input_embeddings().num_embeddings

    @property
    def max_positions(self) -> int | None:
        return getattr(self.model.config, "max_position_embeddings", None)

    def blocks(self) -> list[nn.Module]:
        return list(self.adapter.blocks(self.model))

    @property
    def num_layers(self) -> int:
        return len(self.adapter.blocks(self.model))

    def embed(self, ids: list[int]) -> torch.Tensor:
        """Input embeddings ``[T, d]`` of ``ids`` (detached: the methods differentiate w.r.t. them)."""
        return self.model.get_input_embeddings()(torch.tensor(ids, device=self.device)).detach()
