"""DIN with the trigger item as an extra feature: the paper's baseline (DAIAN.md §2).

`ŷ = σ(MLP_{512,256,128}([e_u ‖ e_tr ‖ e_tg ‖ o_din]))`, `o_din` = DIN attention pooling of
the history with the target as query. Item vectors concatenate the embeddings of the
item's id and side features; trigger, target and history read the SAME tables (one per
vocabulary of `features.SHARED_VOCABS`, PITFALLS "Sequences"):
- `e_tr`, `e_tg`: `[id ‖ category ‖ brand ‖ shop ‖ price bucket]`, `(B, 5D)`;
- attention pairs (`features.DIN_PAIRS`): target `[id ‖ category ‖ brand]` `(B, 3D)`
  against history steps `[id ‖ category ‖ brand]` `(B, T, 3D)`, masked where the
  history item id is `features.PADDING_ID`;
- `e_u`: `[user id ‖ profile columns]`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import keras
from keras import ops

from daian_tf.core.names import CTR_OUTPUT, DIN
from daian_tf.layers import embedding as emb
from daian_tf.models.functional_parts import embedded_inputs, history_pooling, mlp


def din_input_keys(user_columns: Sequence[str]) -> list:
    """The transformed feature names DIN reads, in input order."""
    return emb.feature_input_keys(user_columns)


def build_din(model_cfg, vocab_sizes: Mapping[str, int],
              user_columns: Sequence[str]) -> keras.Model:
    """The DIN baseline as a functional Keras 3 model.

    Args:
        model_cfg: `ModelConfig` (embedding_dim, hidden_units, attention_units,
            attention_softmax, dropout).
        vocab_sizes: table rows per vocabulary name, padding and OOV included
            (`data.transform.vocab_sizes`).
        user_columns: the user profile columns.

    Returns:
        A model taking a dict of transformed features named `din_input_keys` (ids int64
        `(B,)`, history ids `(B, T)`) and returning the click probability `(B, 1)`,
        output named `names.CTR_OUTPUT`.
    """
    inputs, e = embedded_inputs(model_cfg, vocab_sizes, user_columns)
    pooled = history_pooling(model_cfg, "din_attention", e[emb.TARGET_QUERY], e)

    x = ops.concatenate([e[emb.USER], e[emb.TRIGGER], e[emb.TARGET], pooled], axis=-1)
    output = mlp(x, model_cfg.hidden_units, model_cfg.dropout, "head",
                 output_name=CTR_OUTPUT)
    return keras.Model(inputs=list(inputs.values()), outputs=output, name=DIN)
