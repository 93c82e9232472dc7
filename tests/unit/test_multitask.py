"""The multi-task fit of models with an intent head (training/multitask.py)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from scipy.special import rel_entr

from daian_tf.training.multitask import (INTENT_LABEL_XF, INTENT_MASK_XF,
                                         IntentMultiTaskModel, masked_intent_kl)


def test_masked_kl_matches_scipy_over_labelled_rows():
    rng = np.random.default_rng(0)
    label = rng.dirichlet(np.ones(4), size=6).astype("float32")
    label[0] = [1.0, 0.0, 0.0, 0.0]  # zeros in the label contribute nothing
    pred = rng.dirichlet(np.ones(4), size=6).astype("float32")
    mask = np.array([1, 0, 1, 1, 0, 1])
    expected = np.mean([rel_entr(label[i], pred[i]).sum() for i in range(6) if mask[i]])
    got = float(masked_intent_kl(label, mask, pred))
    assert got == pytest.approx(expected, rel=1e-4)
    assert float(masked_intent_kl(label, np.zeros(6), pred)) == 0.0


class Toy(keras.Model):
    """x → ctr and a 3-level intent from one shared Dense."""

    input_keys = ["x_xf"]

    def __init__(self):
        super().__init__()
        self.shared = keras.layers.Dense(3)
        self.ctr = keras.layers.Dense(1, activation="sigmoid")

    def predict_intent(self, inputs, training=None):
        return keras.ops.softmax(self.shared(inputs["x_xf"]))

    def call(self, inputs, training=None):
        return self.ctr(self.shared(inputs["x_xf"]))


def _batch(n=64):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, 2)).astype("float32")
    level = (x[:, 0] > 0).astype(int)
    label = np.eye(3, dtype="float32")[level]
    return {"x_xf": x, INTENT_LABEL_XF: label,
            INTENT_MASK_XF: np.ones(n, "int64")}, (x[:, 1] > 0).astype("float32")


def test_the_intent_loss_trains_the_intent_head_and_only_when_weighted():
    inputs, y = _batch()

    def kl_after(weight):
        keras.utils.set_random_seed(0)
        toy = Toy()
        fitted = IntentMultiTaskModel(toy, weight)
        fitted.compile(optimizer=keras.optimizers.Adam(0.05), loss="binary_crossentropy")
        before = float(masked_intent_kl(inputs[INTENT_LABEL_XF], inputs[INTENT_MASK_XF],
                                        toy.predict_intent(inputs)))
        fitted.fit(inputs, y, epochs=40, batch_size=64, verbose=0)
        after = float(masked_intent_kl(inputs[INTENT_LABEL_XF], inputs[INTENT_MASK_XF],
                                       toy.predict_intent(inputs)))
        return before, after

    before, after = kl_after(5.0)
    assert after < 0.5 * before  # the intent head learnt the label
    _, after_unweighted = kl_after(0.0)
    assert after < after_unweighted


def test_the_wrapper_feeds_the_model_only_its_own_inputs():
    inputs, _ = _batch(4)
    toy = Toy()
    fitted = IntentMultiTaskModel(toy, 1.0)
    out = fitted(inputs)
    np.testing.assert_allclose(np.asarray(out["ctr"]),
                               np.asarray(toy({"x_xf": inputs["x_xf"]})), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(out["intent"]),
                               np.asarray(toy.predict_intent(inputs)), rtol=1e-6)
    assert fitted.input_keys == ["x_xf", INTENT_LABEL_XF, INTENT_MASK_XF]


class OnePassToy(Toy):
    """A Toy whose `ctr_and_intent` runs the sublayers without going through its own
    `__call__` (as IntentRec's and DUPN's do)."""

    def ctr_and_intent(self, inputs, training=None):
        h = self.shared(inputs["x_xf"])
        return self.ctr(h), keras.ops.softmax(h)


def test_fitting_through_the_one_pass_leaves_the_model_built():
    """The pipeline's Trainer saves the fitted model's variables (warm start, export):
    a model fitted only through `ctr_and_intent` must be built like one fitted directly
    (test_dupn.py saves a fitted DUPN's variables)."""
    inputs, y = _batch()
    toy = OnePassToy()
    fitted = IntentMultiTaskModel(toy, 1.0)
    fitted.compile(optimizer="adam", loss="binary_crossentropy")
    fitted.fit(inputs, y, epochs=1, batch_size=64, verbose=0)
    assert toy.built
    assert [v.path for v in toy.weights] == [v.path for v in fitted.weights]
    assert len(toy.weights) == 4


_SPLIT_STEP = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import numpy as np
from tests.unit.test_multitask import Toy, _batch
from daian_tf.training.multitask import IntentMultiTaskModel

def one_step(strategy):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        toy = Toy()
        fitted = IntentMultiTaskModel(toy, 1.0)
        fitted.compile(optimizer=keras.optimizers.SGD(1.0), loss="binary_crossentropy")
    inputs, y = _batch(64)
    ds = tf.data.Dataset.from_tensor_slices((inputs, y)).batch(64)
    fitted.fit(ds, epochs=1, verbose=0)
    return [w.tolist() for w in toy.get_weights()]

print(json.dumps({"one": one_step(tf.distribute.get_strategy()),
                  "two": one_step(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))}))
"""


def test_a_step_split_over_two_replicas_equals_the_whole_batch_step():
    """Under tf.distribute, the summed replica gradients of CTR loss + intent term are
    the whole batch's (the intent term scaled as Keras scales the compiled loss)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(repo)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]),
        TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", _SPLIT_STEP], env=env, cwd=repo,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    weights = json.loads(out.stdout.strip().splitlines()[-1])
    for one, two in zip(weights["one"], weights["two"]):
        np.testing.assert_allclose(two, one, rtol=1e-4, atol=1e-6)
