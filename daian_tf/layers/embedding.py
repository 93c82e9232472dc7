"""Feature embeddings of DAIAN.md §1 (Eq. 2–3), shared by DIN and DAIAN.

Item vectors concatenate the embeddings of the item's id and side features; trigger, target
and history read the SAME tables, one per vocabulary of `features.SHARED_VOCABS`
(PITFALLS "Sequences"):
- `trigger`, `target` (`e_tr`, `e_tg`): `[id ‖ category ‖ brand ‖ shop ‖ price bucket]`,
  `(B, 5D)`;
- `trigger_query`, `target_query`: `[id ‖ category ‖ brand]` `(B, 3D)`, the width of a
  history step (the attention pairs of `features.DIN_PAIRS`);
- `history` (`E_u`): steps `[id ‖ category ‖ brand]` `(B, T, 3D)` and `mask` `(B, T)`,
  False where the history item id is `features.PADDING_ID`;
- `user` (`e_u`): `[user id ‖ profile columns]`;
- `trigger_id`, `target_id`: the id embeddings alone `(B, D)` (SEIN's Eq. 12).

Each table records the Transform vocabulary that indexes its rows (`table_vocabulary`;
None for the price buckets), so that `training.warm_start` can remap it by token when the
vocabularies change from one day to the next.

`embed_features` is the one place that composes them: DIN's functional graph calls it on
its tables, and `FeatureEmbedding` (a layer owning its tables, so that DAIAN's UIM can have
tables of its own, I-10) calls it in `call`.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

import keras
from keras import ops

from daian_tf.core import features as F
from daian_tf.core.features import PRICE_VOCAB, USER_ID_VOCAB, user_profile_vocab

# keys of the dict `embed_features` returns
USER, TRIGGER, TARGET = "user", "trigger", "target"
TRIGGER_QUERY, TARGET_QUERY = "trigger_query", "target_query"
HISTORY, MASK = "history", "mask"
TRIGGER_ID, TARGET_ID = "trigger_id", "target_id"


def vocab_of(key: str) -> str:
    """The shared vocabulary group of a trigger/target/history key."""
    for name, keys in F.SHARED_VOCABS.items():
        if key in keys:
            return name
    raise KeyError(f"{key!r} belongs to no group of features.SHARED_VOCABS")


def embedding_layer_name(vocab: str) -> str:
    """Name of the embedding table of vocabulary `vocab`."""
    return f"embedding_{vocab}"


def feature_input_keys(user_columns: Sequence[str]) -> list:
    """The transformed feature names `embed_features` reads, in a fixed order."""
    raw = ((F.USER_ID,) + tuple(F.user_feature(c) for c in user_columns)
           + F.TRIGGER_ITEM_KEYS + (F.TRIGGER_PRICE,)
           + F.TARGET_KEYS
           + tuple(h for _, h in F.DIN_PAIRS))
    return [F.xf(k) for k in raw]


# the keys of `feature_input_keys` that belong to the candidate, not to the request
CANDIDATE_KEYS = frozenset(F.xf(k) for k in F.TARGET_KEYS)


def request_input_keys(user_columns: Sequence[str]) -> list:
    """The keys of `feature_input_keys` that belong to the request (user, trigger,
    history), not to the candidate."""
    return [k for k in feature_input_keys(user_columns) if k not in CANDIDATE_KEYS]


def history_input_keys() -> set:
    """The transformed names of the `(B, T)` history inputs."""
    return {F.xf(h) for _, h in F.DIN_PAIRS}


REQUEST_ITEM_KEYS = (F.TRIGGER_ITEM_ID, F.TRIGGER_CATEGORY_ID, F.TRIGGER_BRAND_ID)


def table_vocabs(user_columns: Sequence[str], request_only: bool = False) -> list:
    """Every vocabulary that gets a table (`request_only`: those of the user, the
    trigger query and the history, which is all UIM reads)."""
    items = (REQUEST_ITEM_KEYS if request_only
             else F.TRIGGER_ITEM_KEYS + F.TARGET_ITEM_KEYS)
    return (sorted({vocab_of(k) for k in items})
            + ([] if request_only else [PRICE_VOCAB]) + [USER_ID_VOCAB]
            + [user_profile_vocab(c) for c in user_columns])


def make_tables(vocab_sizes: Mapping[str, int], user_columns: Sequence[str],
                embedding_dim: int, embedding_l2: float = 0.0,
                prefix: str = "", request_only: bool = False
                ) -> Dict[str, keras.layers.Embedding]:
    """One `Embedding` per vocabulary (padding and OOV rows included in the sizes).

    Args:
        vocab_sizes: table rows per vocabulary name (`data.transform.vocab_sizes`); the price
            table's size is `features.PRICE_BUCKETS`.
        user_columns: the user profile columns.
        embedding_dim: D.
        embedding_l2: DIN's mini-batch-aware regularisation: an L2 penalty on the rows
            a batch looks up (an activity regulariser); 0 for none.
        prefix: prepended to the layer names (e.g. "uim_" for UIM's own tables).
        request_only: only the tables of `table_vocabs(..., request_only=True)`.
    """
    sizes = dict(vocab_sizes)
    sizes[PRICE_VOCAB] = F.PRICE_BUCKETS
    vocabs = table_vocabs(user_columns, request_only)
    missing = sorted(set(vocabs) - set(sizes))
    if missing:
        raise ValueError(f"vocab_sizes lacks {missing}; got {sorted(vocab_sizes)}")
    regularizer = keras.regularizers.L2(embedding_l2) if embedding_l2 > 0 else None
    tables = {vocab: keras.layers.Embedding(sizes[vocab], embedding_dim,
                                            name=prefix + embedding_layer_name(vocab),
                                            activity_regularizer=regularizer)
              for vocab in vocabs}
    for vocab, table in tables.items():  # read by `table_vocabulary`
        setattr(table, VOCABULARY_ATTR, None if vocab == PRICE_VOCAB else vocab)
    return tables


# The attribute `make_tables` sets on each table: the Transform vocabulary whose ids index
# its rows (None for the price-bucket table). A plain attribute, not part of the layer's
# config: a table rebuilt by `keras.models.load_model` (DIN's functional graph) lacks it.
VOCABULARY_ATTR = "daian_vocabulary"


def table_vocabulary(layer) -> Optional[str]:
    """The Transform vocabulary (a name of `features.vocab_names`) whose ids index the rows
    of `layer`, a table of `make_tables`: row 0 padding, row i + 1 the vocabulary's i-th
    token, row V + 1 out-of-vocabulary (`data.transform`). None for the price-bucket table
    and for any layer `make_tables` did not create."""
    return getattr(layer, VOCABULARY_ATTR, None)


def is_table(layer) -> bool:
    """Whether `layer` is an embedding table of `make_tables` (price table included)."""
    return hasattr(layer, VOCABULARY_ATTR)


def embed_features(tables: Mapping[str, keras.layers.Layer], inputs: Mapping,
                   user_columns: Sequence[str], request_only: bool = False,
                   candidate: bool = True) -> Dict[str, object]:
    """The embedded features of a batch (see the module docstring for the keys).

    Args:
        tables: `make_tables(...)`.
        inputs: transformed features, at least `feature_input_keys(user_columns)`:
            ids int64 `(B,)`, history ids `(B, T)`.
        user_columns: the user profile columns.
        request_only: only `user`, `trigger_query`, `history` and `mask`.
        candidate: False: without the target's keys (`embed_candidates`); `inputs`
            then needs only `request_input_keys(user_columns)`.
    """
    cache: Dict[str, object] = {}

    def embed(key: str, vocab: str):
        if key not in cache:
            cache[key] = tables[vocab](inputs[F.xf(key)])
        return cache[key]

    def items(keys):
        return [embed(k, vocab_of(k)) for k in keys]

    user = ops.concatenate(
        [embed(F.USER_ID, USER_ID_VOCAB)]
        + [embed(F.user_feature(c), user_profile_vocab(c)) for c in user_columns],
        axis=-1)
    request = {
        USER: user,
        TRIGGER_QUERY: ops.concatenate(items(REQUEST_ITEM_KEYS), axis=-1),
        HISTORY: ops.concatenate(items([h for _, h in F.DIN_PAIRS]), axis=-1),
        MASK: ops.not_equal(inputs[F.xf(F.DIN_PAIRS[0][1])], F.PADDING_ID),
    }
    if request_only:
        return request
    request.update({
        TRIGGER: ops.concatenate(items(F.TRIGGER_ITEM_KEYS)
                                 + [embed(F.TRIGGER_PRICE, PRICE_VOCAB)], axis=-1),
        TRIGGER_ID: embed(F.TRIGGER_ITEM_ID, vocab_of(F.TRIGGER_ITEM_ID)),
    })
    if not candidate:
        return request
    return {**request, **embed_candidates(tables, inputs, embed)}


def embed_candidates(tables: Mapping[str, keras.layers.Layer], inputs: Mapping,
                     embed=None) -> Dict[str, object]:
    """The candidate's (target's) part of `embed_features`: `target`, `target_query`
    and `target_id`, from the target features of `inputs` alone (a ranking request's
    candidates carry nothing else). `embed(key, vocab)`: `embed_features`' cache."""
    if embed is None:
        def embed(key, vocab):
            return tables[vocab](inputs[F.xf(key)])

    def items(keys):
        return [embed(k, vocab_of(k)) for k in keys]

    return {
        TARGET: ops.concatenate(items(F.TARGET_ITEM_KEYS)
                                + [embed(F.TARGET_PRICE, PRICE_VOCAB)], axis=-1),
        TARGET_QUERY: ops.concatenate(items([t for t, _ in F.DIN_PAIRS]), axis=-1),
        TARGET_ID: embed(F.TARGET_ITEM_ID, vocab_of(F.TARGET_ITEM_ID)),
    }


@keras.saving.register_keras_serializable(package="daian")
class FeatureEmbedding(keras.layers.Layer):
    """A set of embedding tables and `embed_features` over them (DAIAN.md Eq. 2–3).

    Args:
        vocab_sizes: table rows per vocabulary name (`data.transform.vocab_sizes`).
        user_columns: the user profile columns.
        embedding_dim: D.
        embedding_l2: L2 penalty on the looked-up rows (0: none).
        table_prefix: prefix of the tables' layer names.
        request_only: only the request-side tables and outputs (UIM's own set, I-10).
        **kwargs: base layer arguments.

    Call arguments:
        inputs: dict of transformed features (`feature_input_keys(user_columns)`).

    Returns:
        The dict of `embed_features`.
    """

    def __init__(self, vocab_sizes: Mapping[str, int], user_columns: Sequence[str],
                 embedding_dim: int, embedding_l2: float = 0.0,
                 table_prefix: Optional[str] = None, request_only: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        if embedding_dim <= 0:
            raise ValueError(f"embedding_dim must be > 0, got {embedding_dim}")
        self.vocab_sizes = {k: int(v) for k, v in vocab_sizes.items()}
        self.user_columns = tuple(user_columns)
        self.embedding_dim = int(embedding_dim)
        self.embedding_l2 = float(embedding_l2)
        self.table_prefix = table_prefix if table_prefix is not None else ""
        self.request_only = bool(request_only)
        self.tables = make_tables(self.vocab_sizes, self.user_columns,
                                  self.embedding_dim, self.embedding_l2,
                                  prefix=self.table_prefix,
                                  request_only=self.request_only)

    def call(self, inputs):
        return embed_features(self.tables, inputs, self.user_columns,
                              self.request_only)

    def request(self, inputs):
        """`call` without the target's keys: the request's embeddings from the
        request's features (`request_input_keys`)."""
        return embed_features(self.tables, inputs, self.user_columns,
                              self.request_only, candidate=False)

    def candidates(self, inputs):
        """`embed_candidates`: the target's embeddings from the target features."""
        return embed_candidates(self.tables, inputs)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"vocab_sizes": dict(self.vocab_sizes),
                       "user_columns": list(self.user_columns),
                       "embedding_dim": self.embedding_dim,
                       "embedding_l2": self.embedding_l2,
                       "table_prefix": self.table_prefix,
                       "request_only": self.request_only})
        return config
