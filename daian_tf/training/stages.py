"""DAIAN's three-stage training (DAIAN.md §7, Eq. 19–21), each stage a `model.fit`.

1. `train_stage1`: UIM alone (`IntentModel`, sharing UIM's layers with the DAIAN model) on
   `KL(y_int ‖ p̂)` over labelled requests (Eq. 19); each sample weighs
   `intent_mask / |request|`, so every request counts once whatever its length (I-11).
2. `train_stage2`: DIE, SEIN and the CTR head on the CTR loss with the ground-truth intent
   in place of p̂ (`intent_label_loo` by default, I-3; Eq. 20); UIM is frozen
   (`LabelIntentModel`, whose inputs are DAIAN's plus the label keys). Its epoch is
   chosen by the DAIAN model's own validation AUC, with p̂ (`val_served_auc`): the
   label is built from the request's clicks, which no served request has.
3. `train_stage3`: everything on the CTR loss with p̂ plugged back in (Eq. 21); UIM's
   variables get their own optimizer at `uim_lr_scale` × the learning rate
   (`TwoOptimizerModel`).

Each stage is a model of its own with fixed inputs, built on the DAIAN model's layers
(shared objects: fitting a stage model trains the DAIAN model); the DAIAN model itself
never changes mode.

Each stage ends with the weights of its best epoch by its metric on the validation split
(stage 1: the KL loss; stage 2: the served model's AUC; stage 3: AUC), the weights it
started from included (stages 2 and 3, any warm start), unless
`train.restore_best_epoch` is off (`training/best_epoch.py`); `train.patience` also
stops a stage early. Every stage function takes `(train_pattern, validation_pattern)`:
the split that is reported on is never among them.

`train_daian` runs them in order (or, for the "w/o three-stage" ablation, one joint stage
from scratch with one optimizer), writing `stage<k>.weights.h5` after each stage when
given a checkpoint directory; `initial_weights` starts any stage from such a file or
from a warm-start directory (`training/warm_start.py`: another day's vocabularies).
The TFX pipeline runs each stage as a Trainer of its own (`STAGE_FUNCTIONS`).
Each function takes the model and transformed TFRecords, so a notebook can run one stage.

`strategy` (every stage function, `train_daian`): a `MultiWorkerMirroredStrategy`
(`training/multi_worker.py`) under whose scope the DAIAN model was built: each stage
model, its optimizers and metrics are built under it too, and each worker fits on its
shard of the data. None: one process, as before.
"""

from __future__ import annotations

import collections
import contextlib
from pathlib import Path
from typing import Dict, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from daian_tf.core import features as F
from daian_tf.core.names import (AUC, CTR_FIT, JOINT, STAGE1, STAGE2, STAGE2_LOO,
                                  STAGE2_PLAIN, STAGE3, STAGES)
from daian_tf.data.dataset import FilePattern, make_dataset
from daian_tf.layers.request_rows import once_per_request
from daian_tf.models.daian import DAIAN, estimate_intent
from daian_tf.training import multi_worker as mw
from daian_tf.training.best_epoch import best_epoch_callbacks
from daian_tf.training.optimizer import make_optimizer
from daian_tf.training.warm_start import warm_start

INTENT_LABEL_XF, INTENT_MASK_XF = F.xf(F.INTENT_LABEL), F.xf(F.INTENT_MASK)
STAGE2_INTENT_KEYS = {  # [I-3] train.stage2_label -> (label, mask) transformed keys
    STAGE2_LOO: (F.xf(F.INTENT_LABEL_LOO), F.xf(F.INTENT_MASK_LOO)),
    STAGE2_PLAIN: (INTENT_LABEL_XF, INTENT_MASK_XF),
}


class IntentModel(keras.Model):
    """UIM alone, for stage 1: the DAIAN model's UIM layers (shared objects, so that
    training this model trains them), returning p̂ `(B, n)`, computed once per distinct
    request of the batch (as in DAIAN, `model.request_dedup`)."""

    def __init__(self, daian: DAIAN, **kwargs):
        kwargs.setdefault("name", "uim_model")
        super().__init__(**kwargs)
        self.uim_embedding = daian.uim_embedding
        self.uim = daian.uim
        self.request_keys = daian.request_keys if daian.cfg.request_dedup else None

    def call(self, inputs, training=None):
        def intent(x):
            return estimate_intent(self.uim_embedding, self.uim, x, training=training)

        if self.request_keys is None:
            return intent(inputs)
        return once_per_request(intent, inputs, self.request_keys)


class LabelIntentModel(keras.Model):
    """Stage 2 (Eq. 20): the DAIAN model's click probability with the ground-truth
    intent of `intent_keys` = (label, mask) in place of p̂ (`DAIAN.per_sample_request`).

    Inputs: `input_keys` (DAIAN's and the two label keys). Shares the DAIAN model.
    """

    def __init__(self, daian: DAIAN, intent_keys: Sequence[str], **kwargs):
        kwargs.setdefault("name", "label_intent_model")
        super().__init__(**kwargs)
        self.daian = daian
        self.intent_keys = tuple(intent_keys)
        self.input_keys = daian.input_keys + list(self.intent_keys)

    def call(self, inputs, training=None):
        request = self.daian.per_sample_request(inputs, training=training,
                                                intent_keys=self.intent_keys)
        return self.daian(inputs, training=training, request=request)


class TwoOptimizerModel(keras.Model):
    """Stage 3 (§7): the DAIAN model as it is, fitted with two optimizers: UIM's
    variables by `uim_optimizer`, every other variable by the compiled one (Adam and
    Adagrad are invariant to the gradient's scale, so a smaller step for UIM needs an
    optimizer of its own). Shares the DAIAN model.
    """

    def __init__(self, daian: DAIAN, uim_optimizer: keras.optimizers.Optimizer,
                 **kwargs):
        kwargs.setdefault("name", "two_optimizer_model")
        super().__init__(**kwargs)
        self.daian = daian
        self.uim_optimizer = uim_optimizer
        self.input_keys = daian.input_keys

    def call(self, inputs, training=None):
        return self.daian(inputs, training=training)

    def train_step(self, data):
        """Keras' train step, with UIM's gradients applied by `uim_optimizer`."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred,
                                     sample_weight=sample_weight, training=True)
        uim_ids = {id(v) for v in self.daian.uim_variables()}
        uim_vars = [v for v in self.trainable_variables if id(v) in uim_ids]
        other = [v for v in self.trainable_variables if id(v) not in uim_ids]
        grads = tape.gradient(loss, uim_vars + other)
        uim_grads = grads[:len(uim_vars)]
        if any(g is not None for g in uim_grads):  # w/o DIE nothing reads the intent
            self.uim_optimizer.apply(uim_grads, uim_vars)
        self.optimizer.apply(grads[len(uim_vars):], other)
        # under tf.distribute Keras scales the loss by 1 / replicas in sync (the
        # replicas' gradients are summed); the tracked loss is the unscaled one
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss * replicas, sample_weight=keras.ops.shape(y)[0])
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


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
                   cache: str = "none", shuffle_unit: str = "example",
                   shard=None) -> tf.data.Dataset:
    """`(inputs, intent_label, weight)` batches for stage 1, `weight =
    intent_mask / |request|` (I-11): unlabelled requests weigh 0. `shard`: one
    worker's part (`make_dataset`); the request sizes are the whole split's."""
    sizes = request_sizes(file_pattern, tf_transform_output)
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(list(sizes), tf.string),
            tf.constant([float(v) for v in sizes.values()], tf.float32)),
        default_value=1.0)
    keys = model.input_keys
    ds = make_dataset(file_pattern, tf_transform_output, batch_size, shuffle=shuffle,
                      seed=seed, cache=cache, shuffle_unit=shuffle_unit,
                      input_keys=keys + [INTENT_LABEL_XF, INTENT_MASK_XF, F.REQUEST_KEY],
                      shard=shard)

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


def _ctr_datasets(keys: Sequence[str], train_pattern, validation_pattern,
                  tf_transform_output, train_cfg, strategy=None):
    keys = list(keys)

    def train(shard, batch_size):
        return make_dataset(train_pattern, tf_transform_output, batch_size,
                            shuffle=True, seed=train_cfg.seed, input_keys=keys,
                            shuffle_buffer=train_cfg.shuffle_buffer,
                            cache=train_cfg.cache, shuffle_unit=train_cfg.shuffle_unit,
                            shard=shard)

    def validation(shard, batch_size):
        return make_dataset(validation_pattern, tf_transform_output, batch_size,
                            shuffle=False, input_keys=keys, shard=shard)

    return (mw.distribute_dataset(strategy, train, train_cfg.batch_size),
            mw.distribute_dataset(strategy, validation, train_cfg.batch_size))


def _scope(strategy):
    """The strategy's scope (a new one each time), or nothing."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def _sample(model: DAIAN, train, strategy, train_pattern, tf_transform_output, train_cfg):
    """A batch of inputs to create the model's variables with: the first of `train`,
    or, under a strategy (whose batches are per replica), of the unshuffled split."""
    if strategy is None:
        return next(iter(train))[0]
    return next(iter(make_dataset(train_pattern, tf_transform_output,
                                  train_cfg.batch_size, shuffle=False,
                                  input_keys=list(model.input_keys))))[0]


def compile_ctr(model: keras.Model, train_cfg, extra_metrics: Sequence = ()) -> None:
    """Binary cross-entropy on the click label, AUC (and `extra_metrics`), the optimizer
    of `train_cfg`."""
    model.compile(optimizer=make_optimizer(train_cfg.optimizer, train_cfg.learning_rate),
                  loss=keras.losses.BinaryCrossentropy(),
                  metrics=[keras.metrics.AUC(name=AUC)] + list(extra_metrics))


def _set_uim_trainable(model: DAIAN, trainable: bool) -> None:
    model.uim.trainable = trainable
    if model.uim_embedding is not model.embedding:
        model.uim_embedding.trainable = trainable


def _start(model: DAIAN, initial_weights: Optional[str], sample,
           tf_transform_output) -> None:
    """Create every variable of the model (UIM's included, which stage 2 does not
    touch) on one batch; then start from `initial_weights` if given: a Keras
    `.weights.h5` file (`train_daian`'s checkpoints: the same vocabularies), or a
    warm-start directory (`training.warm_start`: embedding rows remapped by token to
    this data's vocabularies)."""
    model(sample, training=False)
    if not initial_weights:
        return
    if str(initial_weights).endswith(".weights.h5"):
        model.load_weights(initial_weights)
    else:
        print(warm_start(model, initial_weights, tf_transform_output).summary(),
              flush=True)


def _fit(model, train_ds, validation_ds, epochs: int, callbacks, verbose: int, train_cfg,
         kind: str = CTR_FIT, trained_start: bool = False, served=None):
    """`model.fit`, ending with its best epoch's weights (`train.restore_best_epoch`);
    `trained_start`: the starting weights are a candidate too (evaluated first);
    `served`: `(model, validation batches)` to choose by instead (`ServedAUC`)."""
    callbacks = list(callbacks or []) + best_epoch_callbacks(
        train_cfg, epochs, kind, start_data=validation_ds if trained_start else None,
        served=served)
    return model.fit(train_ds, validation_data=validation_ds, epochs=epochs,
                     callbacks=callbacks, verbose=verbose)


def train_stage1(model: DAIAN, train_pattern: FilePattern, validation_pattern: FilePattern,
                 tf_transform_output, train_cfg, initial_weights: Optional[str] = None,
                 callbacks=None, verbose: int = 2,
                 strategy=None) -> keras.callbacks.History:
    """Stage 1 (Eq. 19): UIM on the KL loss, `train_cfg.stage1_epochs` epochs."""
    def train_data(shard, batch_size):
        return intent_dataset(model, train_pattern, tf_transform_output, batch_size,
                              shuffle=True, seed=train_cfg.seed, cache=train_cfg.cache,
                              shuffle_unit=train_cfg.shuffle_unit, shard=shard)

    def valid_data(shard, batch_size):
        return intent_dataset(model, validation_pattern, tf_transform_output, batch_size,
                              shuffle=False, shard=shard)

    train = mw.distribute_dataset(strategy, train_data, train_cfg.batch_size)
    validation = mw.distribute_dataset(strategy, valid_data, train_cfg.batch_size)
    with _scope(strategy):
        _start(model, initial_weights, _sample(model, train, strategy, train_pattern,
                                               tf_transform_output, train_cfg),
               tf_transform_output)
        _set_uim_trainable(model, True)
        intent_model = IntentModel(model)
        intent_model.compile(
            optimizer=make_optimizer(train_cfg.optimizer, train_cfg.learning_rate),
            loss=keras.losses.KLDivergence())
    return _fit(intent_model, train, validation, train_cfg.stage1_epochs, callbacks,
                verbose, train_cfg, kind=STAGE1, trained_start=bool(initial_weights))


def train_stage2(model: DAIAN, train_pattern: FilePattern, validation_pattern: FilePattern,
                 tf_transform_output, train_cfg, initial_weights: Optional[str] = None,
                 callbacks=None, verbose: int = 2,
                 strategy=None) -> keras.callbacks.History:
    """Stage 2 (Eq. 20): the CTR network with the ground-truth intent of
    `train_cfg.stage2_label` (I-3); UIM frozen."""
    with _scope(strategy):
        stage = LabelIntentModel(model, STAGE2_INTENT_KEYS[train_cfg.stage2_label])
    train, validation = _ctr_datasets(stage.input_keys, train_pattern, validation_pattern,
                                      tf_transform_output, train_cfg, strategy)
    with _scope(strategy):
        _start(model, initial_weights, _sample(model, train, strategy, train_pattern,
                                               tf_transform_output, train_cfg),
               tf_transform_output)
    _set_uim_trainable(model, False)
    # chosen by the DAIAN model itself, with p̂, on validation: what is served
    served = (model, make_dataset(validation_pattern, tf_transform_output,
                                  train_cfg.batch_size, shuffle=False,
                                  input_keys=list(model.input_keys)))
    try:
        with _scope(strategy):
            compile_ctr(stage, train_cfg)
        return _fit(stage, train, validation, train_cfg.stage2_epochs, callbacks,
                    verbose, train_cfg, trained_start=True, served=served)
    finally:
        _set_uim_trainable(model, True)


def train_stage3(model: DAIAN, train_pattern: FilePattern, validation_pattern: FilePattern,
                 tf_transform_output, train_cfg, initial_weights: Optional[str] = None,
                 callbacks=None, verbose: int = 2, epochs: Optional[int] = None,
                 separate_uim_optimizer: bool = True,
                 strategy=None) -> keras.callbacks.History:
    """Stage 3 (Eq. 21): everything on the CTR loss with p̂; UIM's variables updated by
    their own optimizer at `uim_lr_scale` × the learning rate (`TwoOptimizerModel`),
    unless `separate_uim_optimizer=False`: one optimizer for all (the DAIAN model fitted
    as it is, the joint-from-scratch run)."""
    train, validation = _ctr_datasets(model.input_keys, train_pattern, validation_pattern,
                                      tf_transform_output, train_cfg, strategy)
    with _scope(strategy):
        _start(model, initial_weights, _sample(model, train, strategy, train_pattern,
                                               tf_transform_output, train_cfg),
               tf_transform_output)
        _set_uim_trainable(model, True)
        stage = model
        if separate_uim_optimizer:
            uim_optimizer = make_optimizer(
                train_cfg.optimizer, train_cfg.learning_rate * train_cfg.uim_lr_scale)
            uim_optimizer.build(model.uim_variables())
            stage = TwoOptimizerModel(model, uim_optimizer)
        compile_ctr(stage, train_cfg)
    return _fit(stage, train, validation,
                train_cfg.stage3_epochs if epochs is None else epochs, callbacks, verbose,
                train_cfg, trained_start=separate_uim_optimizer or bool(initial_weights))


def train_daian(model: DAIAN, train_pattern: FilePattern, validation_pattern: FilePattern,
                tf_transform_output, train_cfg, checkpoint_dir: Optional[str] = None,
                callbacks=None, verbose: int = 2, strategy=None) -> Dict[str, dict]:
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

    args = (model, train_pattern, validation_pattern, tf_transform_output, train_cfg)
    kwargs = dict(callbacks=callbacks, verbose=verbose)
    if strategy is not None:
        kwargs["strategy"] = strategy
    if not train_cfg.three_stage:
        histories[JOINT] = train_stage3(
            *args, epochs=train_cfg.stage2_epochs + train_cfg.stage3_epochs,
            separate_uim_optimizer=False, **kwargs).history
        checkpoint(JOINT)
        return histories
    for stage in STAGES:
        if stage_runs(model, train_cfg, stage):
            histories[stage] = STAGE_FUNCTIONS[stage](*args, **kwargs).history
            checkpoint(stage)
    return histories


def carry_over(model: DAIAN, train_pattern: FilePattern, tf_transform_output,
               train_cfg, initial_weights: Optional[str] = None) -> None:
    """A stage that trains nothing (`stage_runs` is False): the model's variables
    created, started from `initial_weights` if given, and left as they are."""
    train = make_dataset(train_pattern, tf_transform_output, train_cfg.batch_size,
                         shuffle=False, input_keys=list(model.input_keys))
    _start(model, initial_weights, next(iter(train))[0], tf_transform_output)


STAGE_FUNCTIONS = {STAGE1: train_stage1, STAGE2: train_stage2, STAGE3: train_stage3}


def stage_runs(model: DAIAN, train_cfg, stage: str) -> bool:
    """Whether `stage` trains anything under `train_cfg`: stage 1 not for the "w/o UIM"
    model (its intent is not a distribution: there is nothing to fit the KL to), and no
    stage with 0 epochs."""
    if stage == STAGE1 and not model.cfg.use_uim:
        return False
    return getattr(train_cfg, f"{stage}_epochs") > 0
