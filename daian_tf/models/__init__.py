"""Models: DIN (the paper's baseline), DAIAN and the popularity baseline."""

from __future__ import annotations

from typing import List


def serving_input_keys(model) -> List[str]:
    """The transformed features a model reads at serving time: a subclassed model's
    `input_keys` (DAIAN), else the names of a functional model's inputs (DIN)."""
    keys = getattr(model, "input_keys", None)
    return list(keys) if keys is not None else [t.name for t in model.inputs]
