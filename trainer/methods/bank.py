"""A first-in-first-out bank of per-clip statistics of real latents.

A distribution term measured against the few real clips of one batch (4 on the toy domain) compares 4
samples with 4 references: most of what it sees is which 4 were drawn. The bank keeps the statistics of
the last ``size`` real clips the run has seen, so a term can compare the batch's samples with the
quantiles of hundreds of real clips at the cost of a few kilobytes. Its contents are part of the
method's resume state: a resumed run compares against the same clips as an uninterrupted one.
"""

from __future__ import annotations

import torch


class StatisticsBank:
    def __init__(self, size: int):
        if size < 2:
            raise ValueError(f"a statistics bank needs room for at least 2 clips, got {size}")
        self.size = int(size)
        self.values: torch.Tensor | None = None  # [<= size, D], oldest first

    def __len__(self) -> int:
        return 0 if self.values is None else int(self.values.shape[0])

    def add(self, rows: torch.Tensor) -> None:
        """Append ``rows`` [N, D] (detached, kept on the CPU in float32), dropping the oldest past ``size``."""
        rows = rows.detach().float().cpu()
        if rows.ndim != 2:
            raise ValueError(f"bank rows must be [N, D], got {tuple(rows.shape)}")
        if self.values is not None and rows.shape[1] != self.values.shape[1]:
            raise ValueError(f"bank rows have {self.values.shape[1]} values, got {rows.shape[1]}")
        merged = rows if self.values is None else torch.cat([self.values, rows])
        self.values = merged[-self.size:].clone()

    def state_dict(self) -> dict:
        return {"size": self.size, "values": None if self.values is None else self.values.clone()}

    def load_state_dict(self, state: dict) -> None:
        if int(state["size"]) != self.size:
            raise ValueError(f"the resume state's bank holds {state['size']} clips, these settings {self.size}")
        self.values = None if state["values"] is None else state["values"].clone()
