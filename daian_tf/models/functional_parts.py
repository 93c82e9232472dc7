"""Plumbing of the functional models (DIN, DIHN, DIAN, DEI2N): their inputs
(`layers.embedding.feature_input_keys`) embedded with the shared tables, DIN's attention
pooling of the history, and a ReLU MLP tower."""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import keras

from daian_tf.layers import embedding as emb
from daian_tf.layers.attention import DinAttentionPooling


def feature_inputs(user_columns: Sequence[str]) -> Dict[str, keras.KerasTensor]:
    """`keras.Input`s named as DIN's (ids int64 `(B,)`, history ids `(B, T)`)."""
    hist_keys = emb.history_input_keys()
    return {name: keras.Input(shape=(None,) if name in hist_keys else (),
                              dtype="int64", name=name)
            for name in emb.feature_input_keys(user_columns)}


def embedded_inputs(model_cfg, vocab_sizes, user_columns: Sequence[str]
                    ) -> Tuple[Dict[str, keras.KerasTensor], Dict[str, object]]:
    """`(inputs, e)`: `feature_inputs` and `emb.embed_features` of them over one set of
    `emb.make_tables` (model_cfg: embedding_dim, embedding_l2)."""
    tables = emb.make_tables(vocab_sizes, user_columns, model_cfg.embedding_dim,
                             model_cfg.embedding_l2)
    inputs = feature_inputs(user_columns)
    return inputs, emb.embed_features(tables, inputs, user_columns)


def history_pooling(model_cfg, name: str, query, e: Dict[str, object]):
    """DIN's attention pooling (layer `name`; model_cfg: attention_units,
    attention_softmax) of the history `e[HISTORY]` with `query`, padded steps masked."""
    return DinAttentionPooling(hidden_units=model_cfg.attention_units,
                               use_softmax=model_cfg.attention_softmax, name=name)(
        query, e[emb.HISTORY], mask=e[emb.MASK])


def mlp(x, hidden_units: Sequence[int], dropout: float, prefix: str,
        output_name: Optional[str] = None):
    """ReLU layers `hidden_units` (each followed by dropout when > 0), then, when
    `output_name` is given, one sigmoid unit named `output_name` `(B, 1)`."""
    for i, units in enumerate(hidden_units):
        x = keras.layers.Dense(units, activation="relu", name=f"{prefix}_{i}")(x)
        if dropout > 0:
            x = keras.layers.Dropout(dropout, name=f"{prefix}_dropout_{i}")(x)
    if output_name is not None:
        x = keras.layers.Dense(1, activation="sigmoid", name=output_name)(x)
    return x
