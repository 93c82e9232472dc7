"""The model a config names, sized from the Transform's vocabularies.

`MODELS` is the one registry: model name (`core.names.MODEL_NAMES`) → how to build it and
what it needs. Every model takes the transformed features of `layers.embedding` (the same
tables, inputs and feature names as DIN) and returns the click probability `(B, 1)`; a
model with an intent distribution also has `predict_intent(inputs)` `(B, n)`, and one
trained with an intent loss beside the CTR loss (`intent_loss_weight` > 0) is fitted
through `training.multitask.IntentMultiTaskModel`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

import keras
import numpy as np

from daian_tf.core.names import DAIAN, DEI2N, DIAN, DIHN, DIN, DUPN, INTENTREC

Catalog = Tuple[Sequence[str], np.ndarray]  # item ids (N,), multimodal vectors (N, d_m)
# (cfg, vocab_sizes, sim_range, catalog) -> model
Builder = Callable[..., keras.Model]


@dataclass(frozen=True)
class ModelEntry:
    """How to build a model and what it reads.

    Args:
        build: `(cfg, vocab_sizes, sim_range, catalog) -> keras.Model`.
        reads_catalog: it needs the frozen multimodal catalog and the I-2 range.
        has_intent: `cfg -> bool`, whether the built model outputs an intent
            distribution (`predict_intent`, the `intent` signature).
    """

    build: Builder
    reads_catalog: bool = False
    has_intent: Callable[..., bool] = lambda cfg: False


def _din(cfg, vocab_sizes, _sim_range, _catalog):
    from daian_tf.models.din import build_din

    return build_din(cfg.model, vocab_sizes, tuple(cfg.samples.user_columns))


def _dihn(cfg, vocab_sizes, _sim_range, _catalog):
    from daian_tf.models.dihn import build_dihn

    return build_dihn(cfg.model, vocab_sizes, tuple(cfg.samples.user_columns))


def _dian(cfg, vocab_sizes, _sim_range, _catalog):
    from daian_tf.models.dian import build_dian

    return build_dian(cfg.model, vocab_sizes, tuple(cfg.samples.user_columns))


def _dei2n(cfg, vocab_sizes, _sim_range, _catalog):
    from daian_tf.models.dei2n import build_dei2n

    return build_dei2n(cfg.model, vocab_sizes, tuple(cfg.samples.user_columns))


def _daian(cfg, vocab_sizes, sim_range, catalog):
    from daian_tf.models.daian import build_daian

    if sim_range is None or catalog is None:
        raise ValueError("build_model: DAIAN needs the sample builder's sim_range "
                         "and the catalog")
    return build_daian(cfg, vocab_sizes, sim_range, *catalog)


def _intentrec(cfg, vocab_sizes, _sim_range, _catalog):
    from daian_tf.models.intentrec import build_intentrec

    return build_intentrec(cfg, vocab_sizes)


def _dupn(cfg, vocab_sizes, _sim_range, _catalog):
    from daian_tf.models.dupn import build_dupn

    return build_dupn(cfg, vocab_sizes)


MODELS: Dict[str, ModelEntry] = {
    DIN: ModelEntry(_din),
    # the trigger-aware baselines of DAIAN's Table 1 (docs/models-trigger-aware.md):
    # DIN's inputs and tables, no catalog; DIHN's α and DIAN's p are scalars, not an
    # intent distribution, so none has an `intent` signature
    DIHN: ModelEntry(_dihn),
    DIAN: ModelEntry(_dian),
    DEI2N: ModelEntry(_dei2n),
    DAIAN: ModelEntry(_daian, reads_catalog=True,
                      has_intent=lambda cfg: bool(cfg.model.use_uim)),
    INTENTREC: ModelEntry(_intentrec, has_intent=lambda cfg: True),
    DUPN: ModelEntry(_dupn, has_intent=lambda cfg: True),
}


def _entry(name: str) -> ModelEntry:
    if name not in MODELS:
        raise ValueError(f"build_model: unknown model.name {name!r}; known: "
                         f"{sorted(MODELS)}")
    return MODELS[name]


def build_model(cfg, vocab_sizes: Mapping[str, int],
                sim_range: Optional[Sequence[float]] = None,
                catalog: Optional[Catalog] = None) -> keras.Model:
    """The model named by `cfg.model.name`.

    Args:
        cfg: the full `Config`.
        vocab_sizes: table rows per vocabulary (`data.transform.vocab_sizes`).
        sim_range: models that read the catalog: the sample builder's I-2 range.
        catalog: models that read the catalog: `(item ids, vectors)`.
    """
    return _entry(cfg.model.name).build(cfg, vocab_sizes, sim_range, catalog)


def needs_catalog(cfg) -> bool:
    """Whether the configured model reads the multimodal catalog (and the I-2 range)."""
    return _entry(cfg.model.name).reads_catalog


def has_intent(cfg) -> bool:
    """Whether the configured model outputs an intent distribution."""
    return _entry(cfg.model.name).has_intent(cfg)
