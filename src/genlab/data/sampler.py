"""Which training samples each batch takes: seeded per-epoch permutations of sample ids, a
position (epoch, cursor) and a set of skipped ids. That is the sampler's whole state, so a
resumed run draws exactly the batches an uninterrupted run would, and skipped ids stay
skipped whatever the batch size."""

from __future__ import annotations

from typing import Any

import torch

from genlab.errors import DataError


class IndexSampler:
    def __init__(self, num_items: int, seed: int):
        if num_items < 1:
            raise DataError("the train split is empty; add data or lower the held-out fractions")
        self.num_items = num_items
        self.seed = seed
        self.epoch = 0
        self.cursor = 0
        self.skipped: set[int] = set()
        self._perm_epoch = -1
        self._perm: list[int] = []

    def permutation(self, epoch: int) -> list[int]:
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.num_items, generator=g).tolist()
            self._perm_epoch = epoch
        return self._perm

    def next_batch(self, batch_size: int) -> tuple[list[int], list[int]]:
        """The next `batch_size` sample ids not skipped, and the epoch each was drawn in."""
        if len(self.skipped) >= self.num_items:
            raise DataError(
                "every training sample has been skipped by the stability guard; the data or "
                "the settings make every step unstable (see events.jsonl)"
            )
        ids: list[int] = []
        epochs: list[int] = []
        while len(ids) < batch_size:
            perm = self.permutation(self.epoch)
            if self.cursor >= len(perm):
                self.epoch += 1
                self.cursor = 0
                continue
            item = perm[self.cursor]
            self.cursor += 1
            if item not in self.skipped:
                ids.append(item)
                epochs.append(self.epoch)
        return ids, epochs

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "cursor": self.cursor, "skipped": sorted(self.skipped)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.cursor = int(state["cursor"])
        self.skipped = {int(i) for i in state["skipped"]}
