"""A PyTorch Lightning `LightningDataModule` over a split (or a mixture) of shards: the README's snippet, tested.

The loader keeps what Lightning would otherwise do with a sampler: ranks (from torch.distributed, which Lightning
sets up), equal batches per rank, a reshuffle per epoch; and its position goes into Lightning's checkpoints
through the data module's `state_dict`, so `trainer.fit(..., ckpt_path=...)` resumes mid-epoch - on another
number of GPUs too.
"""

from __future__ import annotations

from typing import Any

import lightning as L

from loaders import imagenet_dali

__all__ = ["ShardsDataModule"]


class ShardsDataModule(L.LightningDataModule):
    def __init__(self, url, batch_size: int = 256, device: str = "gpu", **options: Any):
        super().__init__()
        self.url, self.batch_size, self.device, self.options = url, batch_size, device, options
        self.loader = None
        self._resume: dict | None = None

    def train_dataloader(self):
        if self.loader is None:  # built once; Lightning iterates it once per epoch
            self.loader = imagenet_dali(self.url, batch_size=self.batch_size, train=True, device=self.device,
                                        **self.options)  # fmt: skip
            if self._resume is not None:
                self.loader.load_state_dict(self._resume)
        return self.loader

    def state_dict(self) -> dict[str, Any]:
        return {"loader": self.loader.state_dict()} if self.loader is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume = state.get("loader")
