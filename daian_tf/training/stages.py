"""DAIAN's three-stage training (DAIAN.md §7, Eq. 19–21), each stage a `model.fit`.

1. `train_stage1`: UIM alone (`IntentModel`, sharing UIM's layers with the DAIAN model) on
   `KL(y_int ‖ p̂)` over labelled requests (Eq. 19); each sample weighs
   `intent_mask / |request|`, so every request counts once whatever its length (I-11).
2. `train_stage2`: DIE, SEIN and the CTR head on the CTR loss with the ground-truth intent
   in place of p̂ (`intent_label_loo` by default, I-3; Eq. 20); UIM is frozen.
3. `train_stage3`: everything on the CTR loss with p̂ plugged back in (Eq. 21); UIM's
   variables get their own optimizer at `uim_lr_scale` × the learning rate.

`train_daian` runs them in order (or, for the "w/o three-stage" ablation, one joint stage
from scratch with one optimizer), writing `stage<k>.weights.h5` after each stage when
given a checkpoint directory; `initial_weights` starts any stage from such a file.
Each function takes the model and transformed TFRecords, so a notebook can run one stage.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import keras
import numpy as np
import tensorflow as tf

from daian_tf.data import features as F
from daian_tf.data.dataset import make_dataset
from daian_tf.layers.request_rows import once_per_request
from daian_tf.models.daian import DAIAN, daian_request_keys, estimate_intent

FilePattern = Union[str, Sequence[str]]
INTENT_LABEL_XF, INTENT_MASK_XF = F.xf(F.INTENT_LABEL), F.xf(F.INTENT_MASK)


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """Adam or Adagrad (`train.optimizer`)."""
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate)
    if name == "adagrad":
        return keras.optimizers.Adagrad(learning_rate=learning_rate)
    raise ValueError(f"unknown optimizer {name!r}; use 'adam' or 'adagrad'")


class IntentModel(keras.Model):
    """UIM alone, for stage 1: the DAIAN model's UIM layers (shared objects, so that
    training this model trains them), returning p̂ `(B, n)`, computed once per distinct
    request of the batch (as in DAIAN, `model.request_dedup`)."""

    def __init__(self, daian: DAIAN, **kwargs):
        kwargs.setdefault("name", "uim_model")
        super().__init__(**kwargs)
        self.uim_embedding = daian.uim_embedding
        self.uim = daian.uim
        self.request_keys = (daian_request_keys(daian.user_columns)
                             if daian.cfg.request_dedup else None)

    def call(self, inputs, training=None):
        def intent(x):
            return estimate_intent(self.uim_embedding, self.uim, x, training=training)

        if self.request_keys is None:
            return intent(inputs)
        return once_per_request(intent, inputs, self.request_keys)


def request_sizes(file_pattern: FilePattern, tf_transform_output,
                  batch_size: int = 8192) -> Dict[bytes, int]:
    """Samples per request id in a transformed split (for the I-11 weights).

    Memory: one entry per request of the split.
    """
    counts: collections.Counter = collections.Counter()
    ds = make_dataset(file_pattern, tf_transform_output, batch_size, shuffle=False,
                      input_keys=[F.REQUEST_KEY])
    for inputs, _ in ds:
        counts.update(inputs[F.REQUEST_KEY].numpy().tolist())
    return dict(counts)


def intent_dataset(model: DAIAN, file_pattern: FilePattern, tf_transform_output,
                   batch_size: int, shuffle: bool, seed: Optional[int] = None,
                   cache: str = "none", shuffle_unit: str = "example"
                   ) -> tf.data.Dataset:
    """`(inputs, intent_label, weight)` batches for stage 1, `weight =
    intent_mask / |request|` (I-11): unlabelled requests weigh 0."""
    sizes = request_sizes(file_pattern, tf_transform_output)
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(list(sizes), tf.string),
            tf.constant([float(v) for v in sizes.values()], tf.float32)),
        default_value=1.0)
    keys = model.input_keys
    ds = make_dataset(file_pattern, tf_transform_output, batch_size, shuffle=shuffle,
                      seed=seed, cache=cache, shuffle_unit=shuffle_unit,
                      input_keys=keys + [INTENT_LABEL_XF, INTENT_MASK_XF, F.REQUEST_KEY])

    def to_intent(inputs, _label):
        weight = (tf.cast(inputs[INTENT_MASK_XF], tf.float32)
                  / table.lookup(inputs[F.REQUEST_KEY]))
        return {k: inputs[k] for k in keys}, inputs[INTENT_LABEL_XF], weight

    return ds.map(to_intent, num_parallel_calls=tf.data.AUTOTUNE)


def intent_kl(model: DAIAN, file_pattern: FilePattern, tf_transform_output,
              batch_size: int = 4096) -> float:
    """Mean `KL(y_int ‖ p̂)` per labelled request (I-11 weights) on a split."""
    total, weight_sum = 0.0, 0.0
    kl = keras.losses.KLDivergence(reduction=None)
    for inputs, label, weight in intent_dataset(model, file_pattern, tf_transform_output,
                                                batch_size, shuffle=False):
        values = np.asarray(kl(label, model.predict_intent(inputs, training=False)))
        total += float(np.sum(values * weight.numpy()))
        weight_sum += float(np.sum(weight.numpy()))
    return total / weight_sum if weight_sum > 0 else float("nan")


def _ctr_datasets(model: DAIAN, train_pattern, eval_pattern, tf_transform_output,
                  train_cfg, extra_keys=()):
    keys = model.input_keys + list(extra_keys)
    train = make_dataset(train_pattern, tf_transform_output, train_cfg.batch_size,
                         shuffle=True, seed=train_cfg.seed, input_keys=keys,
                         shuffle_buffer=train_cfg.shuffle_buffer, cache=train_cfg.cache,
                         shuffle_unit=train_cfg.shuffle_unit)
    evaluation = make_dataset(eval_pattern, tf_transform_output, train_cfg.batch_size,
                              shuffle=False, input_keys=keys)
    return train, evaluation


def _compile_ctr(model: DAIAN, train_cfg) -> None:
    model.compile(optimizer=make_optimizer(train_cfg.optimizer, train_cfg.learning_rate),
                  loss=keras.losses.BinaryCrossentropy(),
                  metrics=[keras.metrics.AUC(name="auc")])


def _set_uim_trainable(model: DAIAN, trainable: bool) -> None:
    model.uim.trainable = trainable
    if model.uim_embedding is not model.embedding:
        model.uim_embedding.trainable = trainable


def _start(model: DAIAN, initial_weights: Optional[str], sample) -> None:
    """Create every variable of the model (UIM's included, which a stage-2 call in
    "label" mode does not touch) on one batch; then load `initial_weights` if given."""
    source, model.intent_source = model.intent_source, "uim"
    try:
        model(sample, training=False)
    finally:
        model.intent_source = source
    if initial_weights:
        model.load_weights(initial_weights)


def _fit(model, train_ds, eval_ds, epochs: int, callbacks, verbose: int):
    return model.fit(train_ds, validation_data=eval_ds, epochs=epochs,
                     callbacks=list(callbacks or []), verbose=verbose)


def train_stage1(model: DAIAN, train_pattern: FilePattern, eval_pattern: FilePattern,
                 tf_transform_output, train_cfg, initial_weights: Optional[str] = None,
                 callbacks=None, verbose: int = 2) -> keras.callbacks.History:
    """Stage 1 (Eq. 19): UIM on the KL loss, `train_cfg.stage1_epochs` epochs."""
    train = intent_dataset(model, train_pattern, tf_transform_output,
                           train_cfg.batch_size, shuffle=True, seed=train_cfg.seed,
                           cache=train_cfg.cache,
                           shuffle_unit=train_cfg.shuffle_unit)
    evaluation = intent_dataset(model, eval_pattern, tf_transform_output,
                                train_cfg.batch_size, shuffle=False)
    _start(model, initial_weights, next(iter(train))[0])
    _set_uim_trainable(model, True)
    intent_model = IntentModel(model)
    intent_model.compile(
        optimizer=make_optimizer(train_cfg.optimizer, train_cfg.learning_rate),
        loss=keras.losses.KLDivergence())
    return _fit(intent_model, train, evaluation, train_cfg.stage1_epochs, callbacks,
                verbose)


def train_stage2(model: DAIAN, train_pattern: FilePattern, eval_pattern: FilePattern,
                 tf_transform_output, train_cfg, initial_weights: Optional[str] = None,
                 callbacks=None, verbose: int = 2) -> keras.callbacks.History:
    """Stage 2 (Eq. 20): the CTR network with the ground-truth intent; UIM frozen."""
    model.intent_source = "label"
    model.uim_optimizer = None
    train, evaluation = _ctr_datasets(model, train_pattern, eval_pattern,
                                      tf_transform_output, train_cfg,
                                      extra_keys=model.label_intent_keys)
    _start(model, initial_weights, next(iter(train))[0])
    _set_uim_trainable(model, False)
    try:
        _compile_ctr(model, train_cfg)
        return _fit(model, train, evaluation, train_cfg.stage2_epochs, callbacks,
                    verbose)
    finally:
        model.intent_source = "uim"
        _set_uim_trainable(model, True)


def train_stage3(model: DAIAN, train_pattern: FilePattern, eval_pattern: FilePattern,
                 tf_transform_output, train_cfg, initial_weights: Optional[str] = None,
                 callbacks=None, verbose: int = 2, epochs: Optional[int] = None,
                 separate_uim_optimizer: bool = True) -> keras.callbacks.History:
    """Stage 3 (Eq. 21): everything on the CTR loss with p̂; UIM's variables updated by
    their own optimizer at `uim_lr_scale` × the learning rate (unless
    `separate_uim_optimizer=False`: one optimizer for all, the joint-from-scratch run)."""
    model.intent_source = "uim"
    train, evaluation = _ctr_datasets(model, train_pattern, eval_pattern,
                                      tf_transform_output, train_cfg)
    _start(model, initial_weights, next(iter(train))[0])
    _set_uim_trainable(model, True)
    if separate_uim_optimizer:
        model.uim_optimizer = make_optimizer(
            train_cfg.optimizer, train_cfg.learning_rate * train_cfg.uim_lr_scale)
        model.uim_optimizer.build(model.uim_variables())
    else:
        model.uim_optimizer = None
    _compile_ctr(model, train_cfg)
    return _fit(model, train, evaluation,
                train_cfg.stage3_epochs if epochs is None else epochs, callbacks, verbose)


def train_daian(model: DAIAN, train_pattern: FilePattern, eval_pattern: FilePattern,
                tf_transform_output, train_cfg, checkpoint_dir: Optional[str] = None,
                callbacks=None, verbose: int = 2) -> Dict[str, dict]:
    """The whole schedule of `train_cfg` (three stages, or one joint stage).

    Stage 1 is skipped for the "w/o UIM" model (its intent is not a distribution, so
    there is nothing to fit the KL to). Without `three_stage`, one joint stage from
    scratch runs `stage2_epochs + stage3_epochs` epochs (the CTR epochs of the three-stage
    schedule) with one optimizer.

    Returns:
        {stage name: Keras history dict}; with `checkpoint_dir`, `stage<k>.weights.h5`
        files there after each stage.
    """
    histories: Dict[str, dict] = {}

    def checkpoint(name: str) -> None:
        if checkpoint_dir:
            Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
            model.save_weights(str(Path(checkpoint_dir) / f"{name}.weights.h5"))

    args = (model, train_pattern, eval_pattern, tf_transform_output, train_cfg)
    kwargs = dict(callbacks=callbacks, verbose=verbose)
    if not train_cfg.three_stage:
        histories["joint"] = train_stage3(
            *args, epochs=train_cfg.stage2_epochs + train_cfg.stage3_epochs,
            separate_uim_optimizer=False, **kwargs).history
        checkpoint("joint")
        return histories
    if model.cfg.use_uim and train_cfg.stage1_epochs > 0:
        histories["stage1"] = train_stage1(*args, **kwargs).history
        checkpoint("stage1")
    if train_cfg.stage2_epochs > 0:
        histories["stage2"] = train_stage2(*args, **kwargs).history
        checkpoint("stage2")
    if train_cfg.stage3_epochs > 0:
        histories["stage3"] = train_stage3(*args, **kwargs).history
        checkpoint("stage3")
    return histories
