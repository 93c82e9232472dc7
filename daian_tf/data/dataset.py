"""tf.data input of the models: transformed, gzipped TFRecords → (inputs, label) batches.

Examples are batched first and parsed with one vectorised `tf.io.parse_example` per
batch (parallel calls), then prefetched; only the features the model reads are parsed.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import tensorflow as tf

from daian_tf.data import features as F

LABEL_XF = F.xf(F.LABEL)
_NON_INPUT_KEYS = frozenset({F.xf(k) for k in F.LABEL_KEYS} | {F.USER_KEY})


def model_input_keys(tf_transform_output) -> list:
    """Every transformed feature that may be a model input (no labels, no user key)."""
    return sorted(set(tf_transform_output.transformed_feature_spec()) - _NON_INPUT_KEYS)


def make_dataset(file_pattern: Union[str, Sequence[str]],
                 tf_transform_output,
                 batch_size: int,
                 shuffle: bool,
                 seed: Optional[int] = None,
                 num_epochs: Optional[int] = 1,
                 input_keys: Optional[Sequence[str]] = None,
                 with_user_key: bool = False,
                 shuffle_buffer: int = 10_000) -> tf.data.Dataset:
    """Batches of transformed examples.

    Args:
        file_pattern: glob(s) of gzipped TFRecord files of transformed `tf.Example`s
            (a TFX Trainer passes a list).
        tf_transform_output: `tft.TFTransformOutput`; gives the transformed spec.
        batch_size: examples per batch (the last batch may be smaller).
        shuffle: shuffle files and examples (training); False keeps file order.
        seed: shuffling seed.
        num_epochs: repetitions; None repeats forever.
        input_keys: the transformed features to return as inputs (e.g. a model's
            input names); None returns every `model_input_keys` feature.
        with_user_key: also return the raw user ids (`features.USER_KEY`), for GAUC.
        shuffle_buffer: examples in the shuffle buffer.

    Returns:
        A dataset of `(inputs, label)`, or `(inputs, label, user_key)` with
        `with_user_key` (for evaluation loops, not for `fit`): `inputs` a dict of
        `(B, ...)` tensors, `label` float32 `(B,)`, `user_key` string `(B,)`.
    """
    spec = tf_transform_output.transformed_feature_spec()
    keys = list(model_input_keys(tf_transform_output) if input_keys is None
                else input_keys)
    unknown = sorted(set(keys) - set(spec))
    if unknown:
        raise ValueError(f"make_dataset: input_keys {unknown} are not transformed "
                         f"features; known: {sorted(spec)}")
    wanted = keys + [LABEL_XF] + ([F.USER_KEY] if with_user_key else [])
    parse_spec = {k: spec[k] for k in wanted}

    patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
    if not any(tf.io.gfile.glob(p) for p in patterns):
        raise FileNotFoundError(f"make_dataset: no file matches {patterns}")
    files = tf.data.Dataset.list_files(patterns, shuffle=shuffle, seed=seed)
    ds = files.interleave(
        lambda f: tf.data.TFRecordDataset(f, compression_type="GZIP"),
        cycle_length=tf.data.AUTOTUNE, num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True)  # seeded runs repeat: same seed, same example order
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.repeat(num_epochs).batch(batch_size)

    def parse(serialized):
        parsed = tf.io.parse_example(serialized, parse_spec)
        inputs = {k: parsed[k] for k in keys}
        label = tf.cast(parsed[LABEL_XF], tf.float32)
        if with_user_key:
            return inputs, label, parsed[F.USER_KEY]
        return inputs, label

    return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE,
                  deterministic=True).prefetch(tf.data.AUTOTUNE)
