"""The model a config names, sized from the Transform's vocabularies."""

from __future__ import annotations

from typing import Mapping, Optional, Sequence, Tuple

import keras
import numpy as np

from daian_tf.core.names import DAIAN, DIN
from daian_tf.models.daian import build_daian
from daian_tf.models.din import build_din

Catalog = Tuple[Sequence[str], np.ndarray]  # item ids (N,), multimodal vectors (N, d_m)


def build_model(cfg, vocab_sizes: Mapping[str, int],
                sim_range: Optional[Sequence[float]] = None,
                catalog: Optional[Catalog] = None) -> keras.Model:
    """The model named by `cfg.model.name`.

    Args:
        cfg: the full `Config`.
        vocab_sizes: table rows per vocabulary (`data.transform.vocab_sizes`).
        sim_range: DAIAN: the sample builder's I-2 range `[lo, hi]`.
        catalog: DAIAN: `(item ids, vectors)` of its frozen multimodal table.
    """
    user_columns = tuple(cfg.samples.user_columns)
    if cfg.model.name == DIN:
        return build_din(cfg.model, vocab_sizes, user_columns)
    if cfg.model.name == DAIAN:
        if sim_range is None or catalog is None:
            raise ValueError("build_model: DAIAN needs the sample builder's sim_range "
                             "and the catalog")
        return build_daian(cfg, vocab_sizes, sim_range, *catalog)
    raise ValueError(f"build_model: unknown model.name {cfg.model.name!r}")


def needs_catalog(cfg) -> bool:
    """Whether the configured model reads the multimodal catalog (and the I-2 range)."""
    return cfg.model.name == DAIAN


def has_intent(cfg) -> bool:
    """Whether the configured model outputs an intent distribution (DAIAN with UIM)."""
    return cfg.model.name == DAIAN and cfg.model.use_uim
