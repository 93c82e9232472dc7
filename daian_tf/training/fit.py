"""`fit_model`: build the configured model and fit it on transformed TFRecords.

The one training entry point of every route: the TFX Trainer's `run_fn`, `daian train`,
the experiments and the quick start's DIN row. DAIAN: the schedule of
`training.stages.train_daian` (three stages by default). Every other model: one
`model.fit`, on the CTR loss plus its intent loss when it has one
(`training.multitask`).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import keras

from daian_tf.data.dataset import FilePattern, make_dataset
from daian_tf.data.transform import vocab_sizes
from daian_tf.models import serving_input_keys
from daian_tf.models.daian import DAIAN
from daian_tf.models.factory import Catalog, build_model
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
              eval_pattern: FilePattern, log_dir: Optional[str] = None,
              steps_per_epoch: Optional[int] = None,
              validation_steps: Optional[int] = None,
              sim_range: Optional[Sequence[float]] = None,
              catalog: Optional[Catalog] = None,
              checkpoint_dir: Optional[str] = None, verbose: int = 2
              ) -> Tuple[keras.Model, dict]:
    """Build and fit the configured model on transformed TFRecords.

    Args:
        cfg: the full `Config`.
        tf_transform_output: `tft.TFTransformOutput` of the transformed data.
        train_pattern, eval_pattern: glob(s) of gzipped transformed TFRecords.
        log_dir: TensorBoard directory (the TFX Trainer's model_run_dir); None: none.
        steps_per_epoch: DIN only: batches per epoch (the training data then
            repeats); None: one pass over the data per epoch.
        validation_steps: DIN only: eval batches per epoch; None: the whole split.
        sim_range: DAIAN only: the sample builder's I-2 range `[lo, hi]` (its report
            or its `Examples` artifact's property; never estimated here).
        catalog: DAIAN only: `(item ids, vectors)` (`data.catalog.read_model_catalog`).
        checkpoint_dir: DAIAN only: where each stage's weights go.
        verbose: Keras' fit verbosity.

    Returns:
        `(model, history)`: history is {metric: [per epoch]} for DIN, {stage: {metric:
        [per epoch]}} for DAIAN.
    """
    callbacks = [keras.callbacks.TensorBoard(log_dir=log_dir)] if log_dir else []
    model = build_for_data(cfg, tf_transform_output, sim_range, catalog)
    if isinstance(model, DAIAN):
        history = train_daian(model, train_pattern, eval_pattern, tf_transform_output,
                              cfg.train, checkpoint_dir=checkpoint_dir,
                              callbacks=callbacks, verbose=verbose)
        return model, history
    # a model with an intent head and `intent_loss_weight` > 0 (IntentRec, DUPN) is
    # fitted on both losses; the model itself (what is exported) is unchanged
    fitted = with_intent_loss(model)
    compile_ctr(fitted, cfg.train)
    keys = serving_input_keys(fitted)
    train_ds = make_dataset(train_pattern, tf_transform_output, cfg.train.batch_size,
                            shuffle=True, seed=cfg.train.seed,
                            num_epochs=None if steps_per_epoch else 1,
                            input_keys=keys, shuffle_buffer=cfg.train.shuffle_buffer,
                            cache=cfg.train.cache,
                            shuffle_unit=cfg.train.shuffle_unit)
    eval_ds = make_dataset(eval_pattern, tf_transform_output, cfg.train.batch_size,
                           shuffle=False, input_keys=keys)
    history = fitted.fit(train_ds, validation_data=eval_ds, epochs=cfg.train.epochs,
                        steps_per_epoch=steps_per_epoch,
                        validation_steps=validation_steps,
                        callbacks=callbacks + best_epoch_callbacks(cfg.train,
                                                                   cfg.train.epochs),
                        verbose=verbose)
    return model, history.history


def jsonable_history(history: dict) -> dict:
    """A (nested) Keras history dict with plain floats."""
    return {k: jsonable_history(v) if isinstance(v, dict) else [float(x) for x in v]
            for k, v in history.items()}
