"""`fit_model`: build the configured model and fit it on transformed TFRecords.

The one training entry point of every route: the TFX Trainer's `run_fn`, `daian train`,
the experiments and the quick start's DIN row. DAIAN: the schedule of
`training.stages.train_daian` (three stages by default). Every other model: one
`model.fit`, on the CTR loss plus its intent loss when it has one
(`training.multitask`).

`train.distribution: multi_worker` trains under the process's
`MultiWorkerMirroredStrategy` (`training.multi_worker`): the model (and each of DAIAN's
stage models) is built under its scope, each worker fits on its shard of the data, and
the model returned is a plain copy of the trained one, outside the strategy (the same on
every worker), which the caller can score, save and export in one process. The History
then also holds, under `workers`, the digest of each worker's final weights, and for
the one-fit models `examples` (the train examples of each epoch, summed over the
workers), `val_examples` and each worker's own train examples per epoch.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from typing import Optional, Sequence, Tuple

import keras

from daian_tf.data.dataset import FilePattern, make_dataset
from daian_tf.data.transform import vocab_sizes
from daian_tf.models import serving_input_keys
from daian_tf.models.daian import DAIAN
from daian_tf.models.factory import Catalog, build_model
from daian_tf.training import multi_worker as mw
from daian_tf.training.best_epoch import best_epoch_callbacks
from daian_tf.training.multitask import with_intent_loss
from daian_tf.training.stages import compile_ctr, train_daian


def build_for_data(cfg, tf_transform_output,
                   sim_range: Optional[Sequence[float]] = None,
                   catalog: Optional[Catalog] = None) -> keras.Model:
    """The configured model, sized by the vocabularies of `tf_transform_output`, after
    seeding Keras with `train.seed` (every route builds and initialises alike)."""
    keras.utils.set_random_seed(cfg.train.seed)
    sizes = vocab_sizes(tf_transform_output, tuple(cfg.samples.user_columns))
    return build_model(cfg, sizes, sim_range, catalog)


def fit_model(cfg, tf_transform_output, train_pattern: FilePattern,
              validation_pattern: FilePattern, log_dir: Optional[str] = None,
              steps_per_epoch: Optional[int] = None,
              validation_steps: Optional[int] = None,
              sim_range: Optional[Sequence[float]] = None,
              catalog: Optional[Catalog] = None,
              checkpoint_dir: Optional[str] = None, verbose: int = 2,
              callbacks: Sequence[keras.callbacks.Callback] = ()
              ) -> Tuple[keras.Model, dict]:
    """Build and fit the configured model on transformed TFRecords.

    Args:
        cfg: the full `Config`.
        tf_transform_output: `tft.TFTransformOutput` of the transformed data.
        train_pattern: glob(s) of gzipped transformed TFRecords to fit on.
        validation_pattern: those of the validation split: the only data a fit chooses
            by (best epoch, early stop). Never the split that is reported on.
        log_dir: TensorBoard directory (the TFX Trainer's model_run_dir); None: none.
        steps_per_epoch: DIN only: batches per epoch (the training data then
            repeats); None: one pass over the data per epoch.
        validation_steps: DIN only: validation batches per epoch; None: the whole split.
        sim_range: DAIAN only: the sample builder's I-2 range `[lo, hi]` (its report
            or its `Examples` artifact's property; never estimated here).
        catalog: DAIAN only: `(item ids, vectors)` (`data.catalog.read_model_catalog`).
        checkpoint_dir: DAIAN only: where each stage's weights go.
        verbose: Keras' fit verbosity.
        callbacks: more Keras callbacks for the fit (DAIAN: for each stage's fit).

    Returns:
        `(model, history)`: history is {metric: [per epoch]} for DIN, {stage: {metric:
        [per epoch]}} for DAIAN.
    """
    strategy = mw.strategy_for(cfg.train)  # None: one process
    scratch = None  # a worker other than the chief logs into a temporary directory
    if strategy is not None:
        mw.check_batch_size(cfg.train.batch_size, mw.num_workers(strategy))
        if not mw.is_chief(strategy):
            verbose = 0
            if log_dir:
                log_dir = scratch = tempfile.mkdtemp(prefix="daian_worker_logs_")
    try:
        return _fit(cfg, tf_transform_output, train_pattern, validation_pattern, log_dir,
                    steps_per_epoch, validation_steps, sim_range, catalog,
                    checkpoint_dir, verbose, strategy, list(callbacks))
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def _fit(cfg, tf_transform_output, train_pattern, validation_pattern, log_dir,
         steps_per_epoch, validation_steps, sim_range, catalog, checkpoint_dir, verbose,
         strategy, callbacks: list) -> Tuple[keras.Model, dict]:
    def scope():
        return strategy.scope() if strategy is not None else contextlib.nullcontext()

    if log_dir:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=log_dir))
    with scope():
        model = build_for_data(cfg, tf_transform_output, sim_range, catalog)
    if isinstance(model, DAIAN):
        history = train_daian(model, train_pattern, validation_pattern, tf_transform_output,
                              cfg.train, checkpoint_dir=checkpoint_dir,
                              callbacks=callbacks, verbose=verbose, strategy=strategy)
        if strategy is not None:
            history[mw.WORKERS_KEY] = _worker_report(strategy, model, None)
            model = detached_copy(cfg, tf_transform_output, model, validation_pattern,
                                  sim_range, catalog)
        return model, history
    # a model with an intent head and `intent_loss_weight` > 0 (IntentRec, DUPN) is
    # fitted on both losses; the model itself (what is exported) is unchanged
    counter, counted = None, []
    with scope():
        fitted = with_intent_loss(model)
        if strategy is not None:  # examples per epoch: all workers', and this one's
            counter, counted = mw.WorkerExamples(), [mw.ExampleCount()]
            callbacks.append(counter)
        compile_ctr(fitted, cfg.train, extra_metrics=counted)
    keys = serving_input_keys(fitted)

    def train_data(shard, batch_size):
        return make_dataset(train_pattern, tf_transform_output, batch_size,
                            shuffle=True, seed=cfg.train.seed,
                            num_epochs=None if steps_per_epoch else 1,
                            input_keys=keys, shuffle_buffer=cfg.train.shuffle_buffer,
                            cache=cfg.train.cache, shuffle_unit=cfg.train.shuffle_unit,
                            shard=shard)

    def valid_data(shard, batch_size):
        return make_dataset(validation_pattern, tf_transform_output, batch_size,
                            shuffle=False, input_keys=keys, shard=shard)

    # without a strategy: the two datasets as they are
    train_ds = mw.distribute_dataset(strategy, train_data, cfg.train.batch_size)
    validation_ds = mw.distribute_dataset(strategy, valid_data, cfg.train.batch_size)
    history = fitted.fit(train_ds, validation_data=validation_ds, epochs=cfg.train.epochs,
                        steps_per_epoch=steps_per_epoch,
                        validation_steps=validation_steps,
                        callbacks=callbacks + best_epoch_callbacks(cfg.train,
                                                                   cfg.train.epochs),
                        verbose=verbose)
    history = dict(history.history)
    if strategy is not None:
        history[mw.WORKERS_KEY] = _worker_report(strategy, model, counter)
        model = detached_copy(cfg, tf_transform_output, model, validation_pattern,
                              sim_range, catalog)
    return model, history


def _worker_report(strategy, model: keras.Model,
                   counter: Optional["mw.WorkerExamples"]) -> dict:
    """Each worker's train examples per epoch (with a counter) and final weights'
    digest, gathered on every worker (one all-reduce)."""
    counts = counter.per_epoch if counter is not None else []
    rows = mw.gather_rows(strategy, counts + [mw.weights_digest(model)])
    report = {f"train_examples_worker{i}": [float(v) for v in row[:-1]]
              for i, row in enumerate(rows)} if counts else {}
    report["weights_digest"] = [float(row[-1]) for row in rows]
    return report


def detached_copy(cfg, tf_transform_output, model: keras.Model,
                  file_pattern: FilePattern, sim_range=None, catalog=None
                  ) -> keras.Model:
    """The configured model built outside any strategy, holding `model`'s weights (to
    score, save and export in this process alone: the trained model's own functions
    would wait on the other workers)."""
    copy = build_for_data(cfg, tf_transform_output, sim_range, catalog)
    keys = serving_input_keys(copy)
    sample = next(iter(make_dataset(file_pattern, tf_transform_output, 2, shuffle=False,
                                    input_keys=keys)))[0]
    copy(sample, training=False)  # creates a subclassed model's variables
    copy.set_weights(model.get_weights())
    return copy


def jsonable_history(history: dict) -> dict:
    """A (nested) Keras history dict with plain floats."""
    return {k: jsonable_history(v) if isinstance(v, dict) else [float(x) for x in v]
            for k, v in history.items()}
