"""Transform: the one `preprocessing_fn` of training and serving (DESIGN.md "data path").

Used by both routes, so that training and serving never skew:
- the `model.fit` experiment path (`daian train`): `tft_beam.AnalyzeAndTransformDataset`
  in `daian_tf.training.trainer.train_from_samples`;
- TFX's Transform component, which calls `preprocessing_fn(inputs, custom_config)` with
  the dict built by `transform_custom_config`.

What it produces (names through `features.xf`):
- **ids** of every categorical feature. One vocabulary per group of
  `features.SHARED_VOCABS` (one item vocabulary for trigger, target and history, and so
  on), one for the user id and one per user profile column. Vocabulary index `i` becomes
  id `i + 1`; `features.PADDING_ID` (0) is padding; an out-of-vocabulary value (including
  an empty or missing one) gets the reserved id `V + 1`, so a table has `V + 2` rows
  (`vocab_sizes`).
- **history** id lists padded or truncated to dense `(B, max_seq_len)`: the most recent
  steps are kept, in chronological order (oldest first), padding 0 at the end.
  DIN and DAIAN (DAIAN.md §1–§6) do not use recency (the history is already limited to
  `history_days` by the sample builder).
- **time buckets** `xf(features.HIST_TIME_BUCKET)` of `hist_time_delta` (DUPN's time
  feature): fixed log2 buckets of the seconds, no analyzer (`time_bucket`), padded like
  the history ids (0 = padding).
- **price buckets** of trigger and target price: `features.PRICE_BUCKETS` quantile buckets
  computed on both prices together, so both use the same edges and one embedding table.
- **similarity bin** `features.SIM_BIN`: the bin of `target_sim` among `num_sim_bins`
  over `[lo, hi]` (DAIAN.md §5.1, I-2), by the rule of `core.similarity_range`: the bin
  the model gives the same trigger–target pair. `[lo, hi]` is the sample builder's
  (`custom_config["sim_range"]`, from its report or its `Examples` artifact); Transform
  never estimates it, and refuses to run without it.
- **labels** passed through densely (`label`, `intent_label[_loo]`, `intent_mask[_loo]`),
  and the raw user id as `features.USER_KEY` (bytes), for GAUC only, never a model input;
  the raw request id as `features.REQUEST_KEY` (training data only: per-request weights).
- **raw item ids** of trigger, target and history (`features.raw`, bytes; history padded
  with b"" to `(B, max_seq_len)`): DAIAN looks them up in its frozen multimodal catalog,
  which is keyed by item id, so an item outside the vocabulary still has its vector; and
  the analysis columns `intent_diversity` and `p_true` (`features.raw`, -1 where absent)
  for evaluation only.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

import tensorflow as tf
import tensorflow.experimental.numpy as tnp
import tensorflow_transform as tft

from daian_tf.core import features as F
from daian_tf.core import similarity_range as SR
from daian_tf.core.config import Config

# custom_config keys (TFX Transform passes the dict as given; JSON-serialisable values).
CFG_USER_COLUMNS = "user_columns"
CFG_NUM_INTENT_LEVELS = "num_intent_levels"
CFG_NUM_SIM_BINS = "num_sim_bins"
CFG_SIM_RANGE = SR.REPORT_KEY  # [lo, hi], the sample builder's (I-2)
CFG_MAX_SEQ_LEN = "max_seq_len"

_QUANTILE_EPSILON = 0.001

# Defaults of the parse specs; labels have none in training (a missing label is an error).
_BYTES_DEFAULT = b""
_FLOAT_DEFAULT = 0.0
_INT_DEFAULT = 0
_ABSENT = -1  # intent_diversity / p_true where the data has none (real logs)


def transform_custom_config(cfg, sim_range: Optional[Sequence[float]]) -> dict:
    """The `custom_config` dict of `preprocessing_fn` (also TFX Transform's).

    Args:
        cfg: the full `Config` (samples: user columns, intent levels, sequence length;
            model: number of similarity bins).
        sim_range: `[lo, hi]` of the sample builder (`report.json` or the `Examples`
            artifact's property). None only where it is filled in later: the pipeline's
            Transform executor adds it from its input artifact.
    """
    return {
        CFG_USER_COLUMNS: list(cfg.samples.user_columns),
        CFG_NUM_INTENT_LEVELS: int(cfg.samples.num_intent_levels),
        CFG_NUM_SIM_BINS: int(cfg.model.num_sim_bins),
        CFG_SIM_RANGE: None if sim_range is None else list(SR.check_range(sim_range)),
        CFG_MAX_SEQ_LEN: int(cfg.samples.max_seq_len),
    }


def _full_config(custom_config: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """`custom_config` over the defaults of `transform_custom_config(Config(), None)`.

    Keys it does not name (e.g. a code version that keys TFX's cache) are ignored.
    """
    config = transform_custom_config(Config(), None)
    config.update({k: v for k, v in (custom_config or {}).items() if k in config})
    return config


def _categorical_keys(user_columns: Sequence[str]) -> tuple:
    """Scalar bytes features of an example (ids and profile columns)."""
    return ((F.USER_ID,) + tuple(F.user_feature(c) for c in user_columns)
            + F.TRIGGER_ITEM_KEYS + F.TARGET_ITEM_KEYS)


def serving_feature_spec(sample_cfg) -> Dict[str, Any]:
    """Parse spec of a serving request: model inputs only, every one with a default.

    A request that lacks a feature still parses (PITFALLS "Serving"): bytes default to
    b"" (the out-of-vocabulary id), numbers to 0, history lists to empty.
    """
    spec: Dict[str, Any] = {
        key: tf.io.FixedLenFeature([], tf.string, default_value=_BYTES_DEFAULT)
        for key in _categorical_keys(sample_cfg.user_columns)
    }
    for key in F.PRICE_KEYS + (F.TARGET_SIM,):
        spec[key] = tf.io.FixedLenFeature([], tf.float32, default_value=_FLOAT_DEFAULT)
    for key in F.HIST_ITEM_KEYS + (F.HIST_BEHAVIOR,):
        spec[key] = tf.io.VarLenFeature(tf.string)
    spec[F.HIST_TIME_DELTA] = tf.io.VarLenFeature(tf.int64)
    return spec


def raw_feature_spec(sample_cfg) -> Dict[str, Any]:
    """Parse spec of the training examples of spec/DATA.md §2.

    The serving features (with defaults), plus the labels (no default: a training
    example without them is refused) and the keys/analysis columns (with defaults;
    `intent_diversity` and `p_true` are -1 where the data has none).
    """
    n = int(sample_cfg.num_intent_levels)
    spec = serving_feature_spec(sample_cfg)
    spec.update({
        F.REQUEST_ID: tf.io.FixedLenFeature([], tf.string, default_value=_BYTES_DEFAULT),
        F.TIMESTAMP: tf.io.FixedLenFeature([], tf.int64, default_value=_INT_DEFAULT),
        F.LABEL: tf.io.FixedLenFeature([], tf.int64),
        F.INTENT_LABEL: tf.io.FixedLenFeature([n], tf.float32),
        F.INTENT_MASK: tf.io.FixedLenFeature([], tf.int64),
        F.INTENT_LABEL_LOO: tf.io.FixedLenFeature([n], tf.float32),
        F.INTENT_MASK_LOO: tf.io.FixedLenFeature([], tf.int64),
        F.INTENT_DIVERSITY: tf.io.FixedLenFeature([], tf.int64, default_value=_ABSENT),
        F.P_TRUE: tf.io.FixedLenFeature([], tf.float32, default_value=float(_ABSENT)),
    })
    return spec


def raw_schema(sample_cfg):
    """The example contract as a TFMD schema (TFX's ImportSchemaGen, tfxio, validation).

    Every key of spec/DATA.md §2. A schema holds no defaults, so each feature that
    every example carries is required; the columns that exist only for some data
    (`p_true`: simulator only; `position`: when the logs have it) are optional
    variable-length features. Use this schema rather than an inferred one: an
    inferred schema has no shapes, so every feature would reach `preprocessing_fn`
    as a SparseTensor; and ExampleValidator then checks the built examples against
    the contract rather than against themselves. The value rules of the contract
    (domains, list lengths: `_add_value_constraints`) are what ExampleValidator checks
    beyond types and presence.
    """
    from tensorflow_transform.tf_metadata import schema_utils

    spec = {}
    for key, feature in raw_feature_spec(sample_cfg).items():
        if isinstance(feature, tf.io.FixedLenFeature):
            feature = tf.io.FixedLenFeature(feature.shape, feature.dtype)
        spec[key] = feature
    spec[F.P_TRUE] = tf.io.VarLenFeature(tf.float32)
    spec[F.POSITION] = tf.io.VarLenFeature(tf.int64)
    schema = schema_utils.schema_from_feature_spec(spec)
    _add_value_constraints(schema, sample_cfg)
    return schema


# cos of two float32 unit vectors may round a little past ±1 (an item and its copy).
_COS_SLACK = 1e-5
_DAY_S = 86400


def _add_value_constraints(schema, sample_cfg) -> None:
    """Adds the value rules of spec/DATA.md §1–§2 that ExampleValidator checks (domains,
    list lengths, presence); `preprocessing_fn` parses the same spec with or without
    them. Each rule holds for every example the sample builder writes from valid logs:
    - labels and masks are 0/1, intent labels in [0, 1]; `target_sim` is a cosine;
    - prices (items.csv; 0.0 where absent), timestamps, `position`, `intent_diversity`
      are >= 0; `p_true` (simulator) is a probability;
    - history lists: present in every example (possibly empty), at most `max_seq_len`
      steps, each `0 < hist_time_delta <= history_days` days (strictly earlier than
      the request, within the window), behaviour types from `features.BEHAVIOR_TYPES`.
    Float features allow no NaN or inf.
    """
    from tensorflow_metadata.proto.v0 import schema_pb2

    features = {f.name: f for f in schema.feature}
    int_ranges = {
        F.LABEL: (0, 1), F.INTENT_MASK: (0, 1), F.INTENT_MASK_LOO: (0, 1),
        F.TIMESTAMP: (0, None), F.POSITION: (0, None), F.INTENT_DIVERSITY: (0, None),
        F.HIST_TIME_DELTA: (1, int(sample_cfg.history_days) * _DAY_S),
    }
    float_ranges = {
        F.INTENT_LABEL: (0.0, 1.0), F.INTENT_LABEL_LOO: (0.0, 1.0),
        F.TARGET_SIM: (-1.0 - _COS_SLACK, 1.0 + _COS_SLACK), F.P_TRUE: (0.0, 1.0),
        **{key: (0.0, None) for key in F.PRICE_KEYS},
    }
    for ranges, kind in ((int_ranges, "int_domain"), (float_ranges, "float_domain")):
        for key, (lo, hi) in ranges.items():
            domain = getattr(features[key], kind)
            domain.min = lo
            if hi is not None:
                domain.max = hi
    for feature in schema.feature:
        if feature.type == schema_pb2.FLOAT:
            feature.float_domain.disallow_nan = True
            feature.float_domain.disallow_inf = True
    for key in F.HIST_KEYS:
        features[key].presence.min_fraction = 1.0
        features[key].value_count.max = int(sample_cfg.max_seq_len)
    features[F.HIST_BEHAVIOR].string_domain.value.extend(F.BEHAVIOR_TYPES)


def _flat_values(x) -> tf.Tensor:
    """All values of a dense `(B,)` or sparse `(B, T)` tensor as one 1-D tensor."""
    if isinstance(x, tf.SparseTensor):
        return x.values
    return tf.reshape(x, [-1])


def _to_ids(x, vocab):
    """Map values through a deferred vocabulary: index i → i + 1, OOV → V + 1."""
    index = tft.apply_vocabulary(x, vocab, default_value=-1, num_oov_buckets=1)
    if isinstance(index, tf.SparseTensor):
        return tf.SparseTensor(index.indices, index.values + 1, index.dense_shape)
    return index + 1


def pad_recent(ids: tf.SparseTensor, max_len: int, padding=F.PADDING_ID) -> tf.Tensor:
    """The most recent `max_len` steps of each row, dense `(B, max_len)`.

    Args:
        ids: `SparseTensor` `(B, T)` (int64 ids or raw bytes), its indices in row-major
            order (as `tf.io.parse_example` gives them), each row in chronological
            order.
        max_len: the output length.
        padding: the fill value (`features.PADDING_ID` for ids, b"" for raw ids).

    Returns:
        `(B, max_len)`: the last `min(T_b, max_len)` values of row b, oldest first,
        followed by `padding`.

    One gather: output step j of row b is value `start_b + max(T_b − max_len, 0) + j`
    of the flat values (row b's values start at `start_b`, the rows before it having
    `start_b` values), or the padding appended after them. The same as
    `RaggedTensor.from_sparse(ids)[:, -max_len:].to_tensor(padding)`, with 19 graph
    operations instead of its 44 (and no assertion guards, which TensorFlow lowers to
    control flow): this runs in every serving call, once for every history feature.
    """
    rows = ids.indices[:, 0]
    batch = ids.dense_shape[0]
    count = tf.shape(ids.values, out_type=tf.int64)[0]
    lengths = tf.math.unsorted_segment_sum(tf.ones_like(rows), rows, batch)  # (B,)
    first = (tf.cumsum(lengths, exclusive=True)
             + tf.maximum(lengths - max_len, 0))  # (B,) the first value kept
    steps = tf.range(max_len, dtype=tf.int64)
    source = tf.where(steps < tf.minimum(lengths, max_len)[:, None],
                      first[:, None] + steps, count)  # (B, max_len); count: padding
    values = tf.concat([ids.values, tf.constant([padding], ids.values.dtype)], 0)
    return tf.gather(values, source)


def time_bucket(delta) -> tf.Tensor:
    """The fixed log-scale bucket of time deltas (seconds), int64 of `delta`'s shape:
    `1 + #{i in 1..TIME_BUCKETS-2 : delta >= 2^i}`, i.e. `1 + floor(log2(delta))`
    clipped to `[1, TIME_BUCKETS - 1]` (deltas <= 1 in bucket 1). Integer comparisons
    against the edges, so exact at powers of two; 0 is left to padding."""
    edges = tf.constant([2 ** i for i in range(1, F.TIME_BUCKETS - 1)], tf.int64)
    above = tf.cast(tf.expand_dims(tf.cast(delta, tf.int64), -1) >= edges, tf.int64)
    return 1 + tf.reduce_sum(above, axis=-1)


def sim_bin(sim: tf.Tensor, sim_range, num_bins: int) -> tf.Tensor:
    """The bin of `sim` among `num_bins` over `sim_range` (`core.similarity_range`'s
    rule), int64 of `sim`'s shape."""
    lo, hi = SR.check_range(sim_range, f"custom_config[{CFG_SIM_RANGE!r}]")
    index = SR.level_index(tf.cast(sim, tf.float32), lo, hi, num_bins, xp=tnp)
    return tf.cast(index, tf.int64)


def preprocessing_fn(inputs: Mapping[str, Any],
                     custom_config: Optional[Mapping[str, Any]] = None
                     ) -> Dict[str, tf.Tensor]:
    """tf.Transform preprocessing of the training examples (see the module docstring).

    Args:
        inputs: raw features as parsed with `raw_feature_spec` (scalars `(B,)`,
            history lists `SparseTensor (B, T)`, intent labels `(B, n)`). At serving
            time the label keys are absent; the outputs that need them are pruned.
        custom_config: `transform_custom_config(...)`; missing keys (or None) take the
            values of the default `Config`; other keys are ignored.

    Returns:
        Dense transformed features: ids int64 `(B,)`, history ids int64
        `(B, max_seq_len)`, price buckets and similarity bin int64 `(B,)`, labels as
        given, and `features.USER_KEY` bytes `(B,)`.
    """
    config = _full_config(custom_config)
    user_columns = tuple(config[CFG_USER_COLUMNS])
    num_sim_bins = int(config[CFG_NUM_SIM_BINS])
    max_seq_len = int(config[CFG_MAX_SEQ_LEN])
    hist_keys = set(F.HIST_ITEM_KEYS + (F.HIST_BEHAVIOR,))
    outputs: Dict[str, tf.Tensor] = {}

    groups = dict(F.SHARED_VOCABS)
    groups[F.USER_ID_VOCAB] = (F.USER_ID,)
    for column in user_columns:
        groups[F.user_profile_vocab(column)] = (F.user_feature(column),)
    for name, keys in groups.items():
        missing = [k for k in keys if k not in inputs]
        if missing:
            raise KeyError(f"preprocessing_fn: input feature(s) {missing} of vocabulary "
                           f"{name!r} are missing; got {sorted(inputs)}")
        vocab = tft.vocabulary(tf.concat([_flat_values(inputs[k]) for k in keys], 0),
                               vocab_filename=F.vocab_filename(name),
                               name=f"vocabulary_{name}")
        for key in keys:
            ids = _to_ids(inputs[key], vocab)
            outputs[F.xf(key)] = pad_recent(ids, max_seq_len) if key in hist_keys else ids

    deltas = inputs[F.HIST_TIME_DELTA]
    if not isinstance(deltas, tf.SparseTensor):
        deltas = tf.sparse.from_dense(deltas)
    buckets = tf.SparseTensor(deltas.indices, time_bucket(deltas.values),
                              deltas.dense_shape)
    outputs[F.xf(F.HIST_TIME_BUCKET)] = pad_recent(buckets, max_seq_len)

    price_edges = tft.quantiles(
        tf.concat([tf.reshape(inputs[k], [-1]) for k in F.PRICE_KEYS], 0),
        num_buckets=F.PRICE_BUCKETS, epsilon=_QUANTILE_EPSILON, name="price_quantiles")
    for key in F.PRICE_KEYS:
        outputs[F.xf(key)] = tft.apply_buckets(inputs[key], price_edges)

    if config[CFG_SIM_RANGE] is None:
        raise ValueError(f"preprocessing_fn: custom_config has no {CFG_SIM_RANGE!r}; "
                         f"pass the sample builder's [lo, hi] (report.json, or the "
                         f"Examples artifact's property), I-2")
    outputs[F.SIM_BIN] = sim_bin(inputs[F.TARGET_SIM], config[CFG_SIM_RANGE],
                                 num_sim_bins)

    num_levels = int(config[CFG_NUM_INTENT_LEVELS])
    width = inputs[F.INTENT_LABEL].shape[-1]
    if width is not None and width != num_levels:
        raise ValueError(f"preprocessing_fn: {F.INTENT_LABEL} has {width} levels, "
                         f"custom_config[{CFG_NUM_INTENT_LEVELS!r}] says {num_levels}")
    for key in F.LABEL_KEYS:
        outputs[F.xf(key)] = inputs[key]
    outputs[F.USER_KEY] = tf.identity(inputs[F.USER_ID])
    outputs[F.REQUEST_KEY] = tf.identity(inputs[F.REQUEST_ID])
    # Raw item ids for the model's multimodal catalog (keyed by item id, not vocabulary).
    for key in F.CATALOG_KEYS:
        value = inputs[key]
        outputs[F.raw(key)] = (pad_recent(value, max_seq_len, padding=b"")
                               if isinstance(value, tf.SparseTensor)
                               else tf.identity(value))
    # Analysis columns for evaluation (never model inputs): -1 where the data has none.
    outputs[F.raw(F.INTENT_DIVERSITY)] = _dense_scalar(inputs[F.INTENT_DIVERSITY],
                                                       _ABSENT)
    outputs[F.raw(F.P_TRUE)] = _dense_scalar(inputs[F.P_TRUE], float(_ABSENT))
    return outputs


def _dense_scalar(x, default) -> tf.Tensor:
    """`(B,)` from a dense `(B,)` tensor or a sparse `(B, ≤1)` one (an optional column)."""
    if isinstance(x, tf.SparseTensor):
        x = tf.sparse.to_dense(x, default_value=tf.cast(default, x.dtype))
        x = tf.concat([x, tf.fill([tf.shape(x)[0], 1], tf.cast(default, x.dtype))], 1)[:, 0]
    return tf.identity(x)


def vocab_sizes(tf_transform_output, user_columns: Sequence[str]) -> Dict[str, int]:
    """Embedding table size (`V + 2`: padding and OOV included) of every vocabulary.

    Args:
        tf_transform_output: the `tft.TFTransformOutput` of `preprocessing_fn`.
        user_columns: the user profile columns it was run with.

    Returns:
        {vocabulary name: rows}, names as `features.vocab_names(user_columns)`.
    """
    return {name: tf_transform_output.vocabulary_size_by_name(F.vocab_filename(name))
            + F.NUM_RESERVED_IDS
            for name in F.vocab_names(user_columns)}
