"""`serving.cc_loader`: SavedModels run under TensorFlow's C++ loader (what
`tensorflow_model_server` links), and `daian check-export`.

The exports of the library's models are checked in test_daian_stages.py and
test_model_zoo.py; here, small tf.Modules show what the check catches: a Keras 3 model
tracked as a `tf.Module` attribute loads and runs with `tf.saved_model.load` but not
with `tensorflow::LoadSavedModel` (keras #20095).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from daian_tf.core.signatures import WARMUP_DIR, WARMUP_FILE
from serving import cc_loader

X = np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.0]], np.float32)


def _keras_model() -> keras.Model:
    inputs = keras.Input((2,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(3, name="dense")(inputs))
    model.layers[-1].set_weights([np.arange(6, dtype=np.float32).reshape(2, 3),
                                  np.array([0.5, -1.0, 2.0], np.float32)])
    return model


class _Tracked(tf.Module):
    """A Keras model as a tracked attribute: what the export did before."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
    def predict(self, x):
        return {"y": self.model(x)}


class _Held(_Tracked):
    """The model held, its TensorFlow variables tracked (`ServingModule`'s way)."""

    def __init__(self, model):
        tf.Module.__init__(self)
        object.__setattr__(self, "model", model)
        self.model_variables = [v.value for v in model.variables]


def _export(module, directory: Path, warmup: bool = True) -> Path:
    tf.saved_model.save(module, str(directory),
                        signatures={"serving_default": module.predict.get_concrete_function()})
    if warmup:
        request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="m"))
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(X))
        (directory / WARMUP_DIR).mkdir()
        with tf.io.TFRecordWriter(str(directory / WARMUP_DIR / WARMUP_FILE)) as w:
            w.write(prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            ).SerializeToString())
    return directory


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("cc")
    model = _keras_model()
    expected = X @ np.arange(6, dtype=np.float32).reshape(2, 3) + [0.5, -1.0, 2.0]
    return {"tracked": _export(_Tracked(model), root / "tracked" / "1"),
            "held": _export(_Held(model), root / "held" / "1"),
            "expected": expected}


def test_a_tracked_keras_model_runs_in_python_but_not_under_the_cpp_loader(exports):
    in_python = tf.saved_model.load(str(exports["tracked"])).signatures[
        "serving_default"](x=tf.constant(X))["y"].numpy()
    np.testing.assert_allclose(in_python, exports["expected"], rtol=1e-6)
    [result] = cc_loader.run_signatures(exports["tracked"], [("serving_default",
                                                              {"x": X})])
    assert isinstance(result, str)
    assert "FAILED_PRECONDITION: Could not find variable dense/" in result
    with pytest.raises(cc_loader.CcLoaderError, match="warmup request 0.*Could not "
                                                      "find variable"):
        cc_loader.check_export(exports["tracked"])


def test_held_model_variables_run_under_the_cpp_loader(exports):
    results = cc_loader.run_signatures(exports["held"], [
        ("serving_default", {"x": X}), ("serving_default", {"x": X[:1]})])
    np.testing.assert_allclose(results[0]["y"], exports["expected"], rtol=1e-6)
    np.testing.assert_allclose(results[1]["y"], exports["expected"][:1], rtol=1e-6)
    [checked] = cc_loader.check_export(exports["held"])
    assert (checked.source, checked.signature, checked.rows) == (
        "warmup request 0", "serving_default", X.size)
    assert checked.max_abs_diff <= 1e-6


def test_call_errors_are_reported_per_call_and_the_next_call_runs(exports):
    timings = []
    results = cc_loader.run_signatures(exports["held"], [
        ("no_such_signature", {"x": X}),
        ("serving_default", {"x": X.astype(np.float64)}),  # wrong dtype
        ("serving_default", {"not_an_input": X}),
        ("serving_default", {"x": X})], timings=timings)
    assert len(timings) == 1 and 0 < timings[0] < 10_000  # ms, the call that ran
    assert results[0] == "no signature no_such_signature"
    assert "INVALID_ARGUMENT" in results[1] and "double" in results[1]
    assert results[2] == "signature has no input not_an_input"
    np.testing.assert_allclose(results[3]["y"], exports["expected"], rtol=1e-6)


def test_a_directory_that_does_not_load_is_an_error_naming_the_loader(tmp_path):
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "saved_model.pb").write_bytes(b"not a SavedModel")
    with pytest.raises(cc_loader.CcLoaderError, match="did not load under "
                                                      "TensorFlow's C\\+\\+ loader"):
        cc_loader.run_signatures(tmp_path / "1", [("serving_default", {"x": X})])


def test_no_compiler_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    with pytest.raises(cc_loader.NoCompilerError, match="no C\\+\\+ compiler "
                                                      "'no-such-compiler-here'"):
        cc_loader.build_runner(cache_dir=tmp_path)


def _daian(*args) -> subprocess.CompletedProcess:
    daian = Path(sys.executable).parent / "daian"
    return subprocess.run([str(daian), *args], capture_output=True, text=True,
                          timeout=600)


def test_check_export_command(exports):
    ok = _daian("check-export", str(exports["held"].parent))  # base path: highest
    assert ok.returncode == 0, ok.stderr
    assert f"checking {exports['held']} under TensorFlow's C++" in ok.stdout
    assert "warmup request 0" in ok.stdout and "OK: 1 calls" in ok.stdout
    failed = _daian("check-export", str(exports["tracked"]))
    assert failed.returncode == 1
    assert "FAILED" in failed.stderr and "Could not find variable dense/" in failed.stderr
    missing = _daian("check-export", str(exports["held"].parent.parent / "nowhere"))
    assert missing.returncode == 2 and "neither a SavedModel directory" in missing.stderr


def test_infra_check_blesses_what_runs_under_the_cpp_loader_and_not_the_rest(
        exports, monkeypatch, tmp_path):
    """The pipeline's InfraCheck (TFX's InfraValidator's role): blessed only if the
    export loads and answers in C++; without a compiler, skipped and said so."""
    from tfx_pipeline.components.infra_check import check_model

    blessed, reason = check_model(str(exports["held"]))
    assert blessed and reason.startswith("INFRA BLESSED: loads and answers under "
                                         "TensorFlow's C++ loader"), reason
    assert "1 calls (serving_default) on the warmup requests' examples, max" in reason
    blessed, reason = check_model(str(exports["tracked"]))
    assert not blessed and reason.startswith("INFRA NOT BLESSED: ")
    assert "Could not find variable dense/" in reason
    (tmp_path / "1").mkdir()  # not a SavedModel: refused with the reason, no crash
    (tmp_path / "1" / "saved_model.pb").write_bytes(b"not a SavedModel")
    blessed, reason = check_model(str(tmp_path / "1"))
    assert not blessed and reason.startswith("INFRA NOT BLESSED: "), reason
    assert "DecodeError" in reason
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    blessed, reason = check_model(str(exports["tracked"]))
    assert blessed and reason.startswith("INFRA CHECK SKIPPED: no C++ compiler "
                                         "'no-such-compiler-here'"), reason
