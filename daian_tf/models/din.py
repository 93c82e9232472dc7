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

from typing import Dict, Mapping, Sequence

import keras
from keras import ops

from daian_tf.data import features as F
from daian_tf.data.transform import USER_ID_VOCAB, user_profile_vocab
from daian_tf.layers.attention import DinAttentionPooling

OUTPUT_NAME = "ctr_probability"
PRICE_VOCAB = "price"  # the embedding table of the shared price buckets


def _vocab_of(key: str) -> str:
    """The shared vocabulary group of a trigger/target/history key."""
    for name, keys in F.SHARED_VOCABS.items():
        if key in keys:
            return name
    raise KeyError(f"{key!r} belongs to no group of features.SHARED_VOCABS")


def embedding_layer_name(vocab: str) -> str:
    """Name of the embedding table of vocabulary `vocab` in the built model."""
    return f"embedding_{vocab}"


def din_input_keys(user_columns: Sequence[str]) -> list:
    """The transformed feature names DIN reads, in input order."""
    raw = ((F.USER_ID,) + tuple(F.user_feature(c) for c in user_columns)
           + F.TRIGGER_ITEM_KEYS + (F.TRIGGER_PRICE,)
           + F.TARGET_ITEM_KEYS + (F.TARGET_PRICE,)
           + tuple(h for _, h in F.DIN_PAIRS))
    return [F.xf(k) for k in raw]


def build_din(model_cfg, vocab_sizes: Mapping[str, int],
              user_columns: Sequence[str]) -> keras.Model:
    """The DIN baseline as a functional Keras 3 model.

    Args:
        model_cfg: `ModelConfig` (embedding_dim, hidden_units, attention_units,
            attention_softmax, dropout).
        vocab_sizes: table rows per vocabulary name, padding and OOV included
            (`daian_tf.data.transform.vocab_sizes`).
        user_columns: the user profile columns.

    Returns:
        A model taking a dict of transformed features named `din_input_keys` (ids int64
        `(B,)`, history ids `(B, T)`) and returning the click probability `(B, 1)`,
        output named `ctr_probability`.
    """
    needed = ({_vocab_of(k) for k in F.TRIGGER_ITEM_KEYS + F.TARGET_ITEM_KEYS}
              | {USER_ID_VOCAB} | {user_profile_vocab(c) for c in user_columns})
    missing = sorted(needed - set(vocab_sizes))
    if missing:
        raise ValueError(f"build_din: vocab_sizes lacks {missing}; got "
                         f"{sorted(vocab_sizes)}")
    dim = model_cfg.embedding_dim
    # DIN's mini-batch-aware regularisation: penalise only the rows a batch looks up.
    regularizer = (keras.regularizers.L2(model_cfg.embedding_l2)
                   if model_cfg.embedding_l2 > 0 else None)
    sizes = dict(vocab_sizes)
    sizes[PRICE_VOCAB] = F.PRICE_BUCKETS
    tables: Dict[str, keras.layers.Embedding] = {}
    embedded: Dict[str, keras.KerasTensor] = {}

    def embed(key: str, vocab: str):
        """Embedding of input `key` in the table of `vocab`, each computed once."""
        if vocab not in tables:
            tables[vocab] = keras.layers.Embedding(
                sizes[vocab], dim, name=embedding_layer_name(vocab),
                activity_regularizer=regularizer)
        if key not in embedded:
            embedded[key] = tables[vocab](inputs[F.xf(key)])
        return embedded[key]

    inputs = {}
    for name in din_input_keys(user_columns):
        is_hist = name in {F.xf(h) for _, h in F.DIN_PAIRS}
        inputs[name] = keras.Input(shape=(None,) if is_hist else (), dtype="int64",
                                   name=name)

    user = ops.concatenate(
        [embed(F.USER_ID, USER_ID_VOCAB)]
        + [embed(F.user_feature(c), user_profile_vocab(c)) for c in user_columns],
        axis=-1)

    def item_vector(item_keys, price_key):
        return ops.concatenate([embed(k, _vocab_of(k)) for k in item_keys]
                               + [embed(price_key, PRICE_VOCAB)], axis=-1)

    trigger = item_vector(F.TRIGGER_ITEM_KEYS, F.TRIGGER_PRICE)
    target = item_vector(F.TARGET_ITEM_KEYS, F.TARGET_PRICE)
    query = ops.concatenate([embed(t, _vocab_of(t)) for t, _ in F.DIN_PAIRS], axis=-1)
    keys = ops.concatenate([embed(h, _vocab_of(h)) for _, h in F.DIN_PAIRS], axis=-1)
    mask = ops.not_equal(inputs[F.xf(F.DIN_PAIRS[0][1])], F.PADDING_ID)
    pooled = DinAttentionPooling(hidden_units=model_cfg.attention_units,
                                 use_softmax=model_cfg.attention_softmax,
                                 name="din_attention")(query, keys, mask=mask)

    x = ops.concatenate([user, trigger, target, pooled], axis=-1)
    for i, units in enumerate(model_cfg.hidden_units):
        x = keras.layers.Dense(units, activation="relu", name=f"head_{i}")(x)
        if model_cfg.dropout > 0:
            x = keras.layers.Dropout(model_cfg.dropout, name=f"head_dropout_{i}")(x)
    output = keras.layers.Dense(1, activation="sigmoid", name=OUTPUT_NAME)(x)
    return keras.Model(inputs=list(inputs.values()), outputs=output, name="din")
