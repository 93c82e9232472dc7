"""Each fit keeps its best epoch (training/best_epoch.py): the weights a fit ends with are
those of the epoch with the best validation metric, recorded independently after every
epoch; a fit whose model reads more than the served one is chosen by the served one."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest

from daian_tf.core.config import TrainConfig
from daian_tf.core.names import CTR_FIT, STAGE1
from daian_tf.training.best_epoch import SERVED_AUC, ServedAUC, best_epoch_callbacks


class _Record(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append([w.copy() for w in self.model.get_weights()])


def _fit(train_cfg, epochs=6, kind=CTR_FIT):
    """A logistic regression with a learning rate large enough that the eval AUC goes
    up and down between epochs."""
    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5)).astype("float32")
    y = (x[:, 0] + rng.normal(scale=2.0, size=400) > 0).astype("float32")
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.SGD(3.0), loss="binary_crossentropy",
                  metrics=[keras.metrics.AUC(name="auc")])
    record = _Record()
    history = model.fit(x[:300], y[:300], validation_data=(x[300:], y[300:]),
                        epochs=epochs, batch_size=32, verbose=0,
                        callbacks=[record] + best_epoch_callbacks(train_cfg, epochs, kind))
    return model, record, history.history


def test_the_fit_ends_with_the_weights_of_its_best_eval_auc_epoch():
    model, record, history = _fit(TrainConfig())
    best = int(np.argmax(history["val_auc"]))
    assert best != len(history["val_auc"]) - 1, history["val_auc"]  # the test means it
    for got, want in zip(model.get_weights(), record.weights[best]):
        np.testing.assert_array_equal(got, want)


def test_off_the_fit_ends_with_its_last_epoch():
    model, record, _ = _fit(dataclasses.replace(TrainConfig(), restore_best_epoch=False))
    for got, want in zip(model.get_weights(), record.weights[-1]):
        np.testing.assert_array_equal(got, want)


def test_patience_stops_early_and_stage1_watches_the_eval_loss():
    _, _, history = _fit(dataclasses.replace(TrainConfig(), patience=1), epochs=30)
    assert len(history["val_auc"]) < 30
    (callback,) = best_epoch_callbacks(TrainConfig(), 3, STAGE1)
    assert (callback.monitor, callback.mode) == ("val_loss", "min")
    with pytest.raises(ValueError, match="kind"):
        best_epoch_callbacks(TrainConfig(), 3, "nope")


def test_a_fit_that_never_beats_its_trained_start_ends_where_it_started():
    """A good model fitted on shuffled labels (every epoch is worse on eval): with its
    start a candidate, the fit ends with the starting weights; without, it does not."""
    keras.utils.set_random_seed(5)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 5)).astype("float32")
    y = (x[:, 0] > 0).astype("float32")
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="binary_crossentropy",
                  metrics=[keras.metrics.AUC(name="auc")])
    model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    start = [w.copy() for w in model.get_weights()]
    start_auc = model.evaluate(x[400:], y[400:], verbose=0, return_dict=True)["auc"]
    noise = rng.permutation(y)
    for with_start, expect_start in ((True, True), (False, False)):
        model.set_weights(start)
        callbacks = best_epoch_callbacks(TrainConfig(), 3,
                                         start_data=(x[400:], y[400:]) if with_start else None)
        history = model.fit(x[:400], noise[:400], validation_data=(x[400:], y[400:]),
                            epochs=3, batch_size=32, verbose=0, callbacks=callbacks)
        assert max(history.history["val_auc"]) < start_auc  # every epoch is worse
        same = all(np.array_equal(a, b) for a, b in zip(model.get_weights(), start))
        assert same is expect_start, (with_start, history.history["val_auc"])


def test_a_fit_is_chosen_by_the_served_model_when_it_reads_more_than_it():
    """Stage 2's case in small: the fitted model also reads a `leak` input that holds
    the label (as stage 2's intent label holds the request's clicks); the served model
    shares its layer for `x` but has no leak. Fitted on shuffled labels, the fitted
    model's own validation AUC stays perfect through the leak while the served model
    gets worse every epoch: chosen by `val_served_auc`, the fit ends where it started."""
    keras.utils.set_random_seed(7)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(600, 5)).astype("float32")
    y = (x[:, 0] > 0).astype("float32")
    core = keras.layers.Dense(1)
    x_in, leak_in = keras.Input((5,), name="x"), keras.Input((1,), name="leak")
    served = keras.Model(x_in, keras.layers.Activation("sigmoid")(core(x_in)))
    fitted = keras.Model({"x": x_in, "leak": leak_in}, keras.layers.Activation("sigmoid")(
        keras.layers.Add()([core(x_in), keras.layers.Dense(1)(leak_in)])))
    fitted.compile(optimizer=keras.optimizers.SGD(0.5), loss="binary_crossentropy",
                   metrics=[keras.metrics.AUC(name="auc")])
    served.compile(optimizer=keras.optimizers.SGD(0.5), loss="binary_crossentropy")
    served.fit(x[:400], y[:400], epochs=3, batch_size=32, verbose=0)
    start = [w.copy() for w in fitted.get_weights()]
    served_start = ServedAUC(served, [(x[400:], y[400:])]).score()
    noise = rng.permutation(y)

    def inputs(rows, labels):
        return {"x": x[rows], "leak": (2 * labels[rows] - 1)[:, None]}

    train, val = np.arange(400), np.arange(400, 600)
    callbacks = best_epoch_callbacks(
        TrainConfig(), 3, start_data=(inputs(val, y), y[val]),
        served=(served, [(x[val], y[val])]))
    history = fitted.fit(inputs(train, noise), noise[train],
                         validation_data=(inputs(val, y), y[val]), epochs=3,
                         batch_size=32, verbose=0, callbacks=callbacks).history
    assert min(history["val_auc"]) > 0.99  # the leak: the fitted model looks perfect
    assert max(history[SERVED_AUC]) < served_start  # the served model got worse
    assert all(np.array_equal(a, b) for a, b in zip(fitted.get_weights(), start))
