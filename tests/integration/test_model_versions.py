"""Versions while serving: new pushes picked up under load, broken ones fail alone.

The server polls its base paths (`poll_wait_s`, TF Serving's
`--file_system_poll_wait_seconds`); each version of the toy model
(tests/_toy_servable.py) has its own bias, so every answer says which version
computed it. Pushes are written the way the Pusher writes them: into a `tmp-...`
directory, then renamed to the version number.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

from serving.client import PredictClient
from serving.contract import INPUT_EXAMPLES, WARMUP_DIR, WARMUP_FILE
from serving.served_model import ServedModel
from serving.server import serve
from tests._toy_servable import (
    MODEL_NAME,
    examples,
    expected_ctr,
    rows_with_defaults,
    save_toy_model,
)

POLL_S = 0.2
CONFIG_DIR = Path(__file__).resolve().parents[2] / "serving" / "config"


def _bias(version: int) -> float:
    return 0.1 * version


def _ctr(version: int) -> np.ndarray:
    return expected_ctr(*rows_with_defaults(), bias=_bias(version))


def _push(base: Path, version: int, broken: bool = False) -> None:
    """Writes version `version` under `base` as a pusher does (tmp dir, rename)."""
    tmp = base / f"tmp-{version}"
    save_toy_model(tmp, bias=_bias(version))
    if broken:
        (tmp / "saved_model.pb").write_bytes(b"not a SavedModel")
    os.rename(tmp, base / str(version))


def _which_version(ctr: np.ndarray, versions) -> int:
    for v in versions:
        if np.allclose(ctr, _ctr(v), rtol=0, atol=1e-6):
            return v
    raise AssertionError(f"an answer from no known version: {ctr}")


def _wait_for(condition, timeout_s: float, what: str) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(0.02)
    return time.monotonic() - start


class _Load:
    """Client threads sending `serving_default` requests until stopped."""

    def __init__(self, target: str, threads: int = 4):
        self.answers: list[np.ndarray] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._client = PredictClient(target, model_name=MODEL_NAME, timeout_s=10)
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ctr = self._client.predict_examples(examples())
            except grpc.RpcError as e:
                with self._lock:
                    self.errors.append(f"{e.code().name}: {e.details()}")
                continue
            with self._lock:
                self.answers.append(ctr)

    def __enter__(self) -> "_Load":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()
        self._client.close()


def _states(server) -> dict[int, str]:
    return {s.version: get_model_status_pb2.ModelVersionStatus.State.Name(s.state)
            for s in server.manager.status(MODEL_NAME)}


def test_a_pushed_version_takes_over_under_load_and_a_broken_one_fails_alone(
        tmp_path):
    base = tmp_path / MODEL_NAME
    base.mkdir()
    _push(base, 1)
    with serve(str(base), model_name=MODEL_NAME, port=0,
               poll_wait_s=POLL_S) as server, _Load(server.target) as load, \
            PredictClient(server.target, model_name=MODEL_NAME) as client:
        _wait_for(lambda: len(load.answers) >= 20, 30, "first answers")

        _push(base, 2)
        took = _wait_for(lambda: client.model_status().get(2) == "AVAILABLE", 30,
                         "version 2 AVAILABLE")
        _wait_for(lambda: client.model_status().get(1) == "END", 5,
                  "version 1 unloaded")
        served_before = len(load.answers)
        _wait_for(lambda: len(load.answers) >= served_before + 20, 30,
                  "answers after the switch")
        # every answer came from version 1 or 2, and the last ones from 2
        seen = [_which_version(a, (1, 2)) for a in list(load.answers)]
        assert seen[0] == 1 and seen[-1] == 2
        assert set(seen[seen.index(2):]) == {2}, "version 1 answered after 2"
        print(f"version 2 AVAILABLE {took:.2f} s after the push "
              f"(poll every {POLL_S} s); {len(seen)} answers")

        _push(base, 3, broken=True)
        _wait_for(lambda: client.model_status().get(3) == "END", 30,
                  "broken version 3 reported")
        (status,) = server.manager.status(MODEL_NAME, 3)
        assert status.status.error_code != 0
        assert "version: 3" in status.status.error_message
        assert client.model_status()[2] == "AVAILABLE"
        before = len(load.answers)
        _wait_for(lambda: len(load.answers) >= before + 20, 30, "answers after 3")
        assert _which_version(load.answers[-1], (2,)) == 2

        # a re-push of the same version number (a new directory) is tried again
        shutil.rmtree(base / "3")
        _push(base, 3)
        _wait_for(lambda: client.model_status().get(3) == "AVAILABLE", 30,
                  "version 3 after its fixed re-push")
        _wait_for(lambda: client.model_status().get(2) == "END", 5,
                  "version 2 unloaded")
    assert load.errors == [], load.errors[:3]


def test_deleting_the_served_version_keeps_it_until_another_is_aspired(tmp_path):
    base = tmp_path / MODEL_NAME
    base.mkdir()
    _push(base, 1)
    _push(base, 2)
    with serve(str(base), model_name=MODEL_NAME, port=0, poll_wait_s=POLL_S) as server:
        assert server.manager.available_versions(MODEL_NAME) == [2]
        shutil.rmtree(base / "2")  # a rollback: the latest on disk is 1 again
        _wait_for(lambda: server.manager.available_versions(MODEL_NAME) == [1], 30,
                  "rolled back to version 1")


def _config(base: Path, policy: str = "", labels: dict[int, str] | None = None,
            name: str = MODEL_NAME) -> model_server_config_pb2.ModelServerConfig:
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add(name=name, base_path=str(base),
                                                model_platform="tensorflow")
    text_format.Parse(policy, model.model_version_policy)
    for label, version in (labels or {}).items():
        model.version_labels[label] = version
    return config


def test_policies_labels_and_config_reload_through_the_official_stub(tmp_path):
    base = tmp_path / MODEL_NAME
    base.mkdir()
    for v in (1, 2, 3):
        _push(base, v)
    config = _config(base, "all {}", {"stable": 1, "canary": 3})
    with serve(model_config=config, port=0, poll_wait_s=0) as server, \
            grpc.insecure_channel(server.target) as channel, \
            PredictClient(server.target, model_name=MODEL_NAME) as client:
        assert client.model_status() == {1: "AVAILABLE", 2: "AVAILABLE",
                                         3: "AVAILABLE"}

        def predict(**spec) -> int:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = spec.pop("name", MODEL_NAME)
            if "version" in spec:
                request.model_spec.version.value = spec["version"]
            if "label" in spec:
                request.model_spec.version_label = spec["label"]
            request.inputs[INPUT_EXAMPLES].CopyFrom(
                tf.make_tensor_proto(examples(), dtype=tf.string))
            response = client._prediction.Predict(request, timeout=10)
            version = _which_version(tf.make_ndarray(response.outputs["ctr"]),
                                     (1, 2, 3, 5))
            assert response.model_spec.version.value == version
            return version

        assert predict() == 3
        assert predict(version=1) == 1
        assert predict(label="stable") == 1 and predict(label="canary") == 3

        models = model_service_pb2_grpc.ModelServiceStub(channel)
        reload = model_management_pb2.ReloadConfigRequest(
            config=_config(base, "specific { versions: 2 }"))
        response = models.HandleReloadConfigRequest(reload, timeout=30)
        assert response.status.error_code == 0
        assert client.model_status() == {1: "END", 2: "AVAILABLE", 3: "END"}
        assert predict() == 2

        # a second model joins, the first leaves
        other = tmp_path / "other"
        other.mkdir()
        _push(other, 5)
        models.HandleReloadConfigRequest(
            model_management_pb2.ReloadConfigRequest(
                config=_config(other, name="other")), timeout=30)
        assert predict(name="other") == 5
        with pytest.raises(grpc.RpcError) as info:
            predict()
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert MODEL_NAME in info.value.details()

        # a config TF Serving refuses is refused; the served one stays
        bad = _config(other, name="other")
        bad.model_config_list.config.add(name="other", base_path=str(base))
        with pytest.raises(grpc.RpcError) as info:
            models.HandleReloadConfigRequest(
                model_management_pb2.ReloadConfigRequest(config=bad), timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "configured twice" in info.value.details()
        assert predict(name="other") == 5


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_an_edited_model_config_file_is_served_and_a_bad_edit_keeps_the_last(
        tmp_path, caplog):
    """`model_config_poll_wait_s` (TF Serving's `--model_config_file_poll_wait_seconds`):
    edits of the file are served within a few polls; a file that does not parse,
    one TF Serving refuses and a deleted file are each logged once and leave the
    served config as it was."""
    base = tmp_path / MODEL_NAME
    base.mkdir()
    for v in (1, 2):
        _push(base, v)
    path = tmp_path / "models.config.pbtxt"
    _write_atomically(path, text_format.MessageToString(_config(base)))
    caplog.set_level("INFO", logger="serving.model_manager")
    with serve(model_config=str(path), port=0, poll_wait_s=0,
               model_config_poll_wait_s=POLL_S) as server, \
            PredictClient(server.target, model_name=MODEL_NAME) as client:
        assert client.model_status() == {2: "AVAILABLE"}

        _write_atomically(path, text_format.MessageToString(
            _config(base, "specific { versions: 1 }")))
        _wait_for(lambda: client.model_status() == {1: "AVAILABLE", 2: "END"}, 30,
                  "the edited policy served")
        assert _which_version(client.predict_examples(examples()), (1, 2)) == 1

        def logged(words: str) -> int:
            return sum(words in r.getMessage() for r in caplog.records
                       if r.levelname == "ERROR")

        twice = _config(base, "specific { versions: 1 }")
        twice.model_config_list.config.add(name=MODEL_NAME, base_path=str(base))
        for text, words in (("model_config_list { config { name: ", "in text format"),
                            (text_format.MessageToString(twice), "configured twice"),
                            (None, "does not exist")):
            if text is None:
                path.unlink()
            else:
                _write_atomically(path, text)
            _wait_for(lambda: logged(words) > 0, 30, f"an error with {words!r} logged")
            time.sleep(5 * POLL_S)  # more polls of the same file: nothing more logged
            assert logged(words) == 1
            assert client.model_status() == {1: "AVAILABLE", 2: "END"}
            assert _which_version(client.predict_examples(examples()), (1, 2)) == 1

        other = tmp_path / "other"
        other.mkdir()
        _push(other, 5)
        config = _config(base, "specific { versions: 1 }")
        config.model_config_list.config.add(name="other", base_path=str(other),
                                            model_platform="tensorflow")
        _write_atomically(path, text_format.MessageToString(config))
        _wait_for(lambda: server.manager.available_versions("other") == [5]
                  if "other" in server.manager.model_names() else False, 30,
                  "the second model served")
        assert client.model_status() == {1: "AVAILABLE", 2: "END"}


def test_polling_the_model_config_needs_its_file(tmp_path):
    base = tmp_path / MODEL_NAME
    base.mkdir()
    _push(base, 1)
    with pytest.raises(ValueError, match="needs model_config as a file path"):
        serve(str(base), model_name=MODEL_NAME, port=0,
              model_config_poll_wait_s=POLL_S)
    path = tmp_path / "models.config.pbtxt"
    path.write_text(text_format.MessageToString(_config(base)))
    before = set(threading.enumerate())
    with pytest.raises(ValueError, match="model_config_poll_wait_s must be >= 0"):
        serve(model_config=str(path), port=0, model_config_poll_wait_s=-1)
    assert {t.name for t in set(threading.enumerate()) - before} == set()


def test_the_packaged_model_config_file_is_served(tmp_path):
    text = (CONFIG_DIR / "models.config.pbtxt").read_text()
    assert 'base_path: "/models/daian"' in text
    base = tmp_path / "daian"
    base.mkdir()
    _push(base, 4)
    path = tmp_path / "models.config.pbtxt"
    path.write_text(text.replace('"/models/daian"', f'"{base}"'))
    with serve(model_config=str(path), port=0, poll_wait_s=0) as server, \
            PredictClient(server.target, model_name="daian") as client:
        assert client.model_status() == {4: "AVAILABLE"}
        np.testing.assert_allclose(client.predict_examples(examples()), _ctr(4),
                                   rtol=0, atol=1e-6)


class _Recording(ServedModel):
    """A ServedModel that records the signatures it ran (class-wide, per version)."""

    calls: dict[int, list[str]] = {}

    def run(self, signature_name, arrays, output_names):
        _Recording.calls.setdefault(self.version, []).append(signature_name)
        return super().run(signature_name, arrays, output_names)


def _write_warmup(version_dir: Path, requests: list[predict_pb2.PredictRequest]) -> None:
    (version_dir / WARMUP_DIR).mkdir()
    with tf.io.TFRecordWriter(str(version_dir / WARMUP_DIR / WARMUP_FILE)) as writer:
        for request in requests:
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def _warmup_request(input_name: str = INPUT_EXAMPLES) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL_NAME
    request.inputs[input_name].CopyFrom(
        tf.make_tensor_proto(examples()[:1], dtype=tf.string))
    return request


def test_warmup_requests_run_before_a_version_is_served_and_a_failing_one_fails_it(
        tmp_path):
    base = tmp_path / MODEL_NAME
    base.mkdir()
    save_toy_model(base / "1", bias=_bias(1))
    _write_warmup(base / "1", [_warmup_request()] * 3)
    _Recording.calls = {}
    with serve(str(base), model_name=MODEL_NAME, port=0, poll_wait_s=0,
               loader=_Recording) as server:
        assert _Recording.calls == {1: ["serving_default"] * 3}
        save_toy_model(base / "2", bias=_bias(2))
        _write_warmup(base / "2", [_warmup_request("no_such_input")])
        server.manager.poll()
        (status,) = server.manager.status(MODEL_NAME, 2)
        assert status.state == get_model_status_pb2.ModelVersionStatus.END
        assert "no_such_input" in status.status.error_message
        assert server.manager.available_versions(MODEL_NAME) == [1]

    _Recording.calls = {}
    with serve(str(base), model_name=MODEL_NAME, port=0, poll_wait_s=0,
               loader=_Recording, enable_warmup=False) as server:
        assert server.manager.available_versions(MODEL_NAME) == [2]
        assert _Recording.calls == {}


def test_a_server_whose_only_version_is_broken_says_why(tmp_path):
    base = tmp_path / MODEL_NAME
    base.mkdir()
    _push(base, 1, broken=True)
    with pytest.raises(RuntimeError, match=r"model 'toy': .*version: 1"):
        serve(str(base), model_name=MODEL_NAME, port=0)


class _Slow(ServedModel):
    """Each Predict takes 0.5 s (to hold the only request thread)."""

    computed = 0

    def run(self, signature_name, arrays, output_names):
        _Slow.computed += 1
        time.sleep(0.5)
        return super().run(signature_name, arrays, output_names)


def test_a_request_past_its_deadline_is_dropped_before_it_is_computed(tmp_path):
    base = tmp_path / MODEL_NAME
    save_toy_model(base / "1")
    with serve(str(base), model_name=MODEL_NAME, port=0, poll_wait_s=0,
               max_workers=1, loader=_Slow, enable_warmup=False) as server, \
            PredictClient(server.target, model_name=MODEL_NAME,
                          timeout_s=10) as slow_client, \
            PredictClient(server.target, model_name=MODEL_NAME,
                          timeout_s=0.2) as hasty_client:
        _Slow.computed = 0
        first = threading.Thread(target=slow_client.predict_examples,
                                 args=(examples(),))
        first.start()
        time.sleep(0.1)  # the first request holds the only thread
        with pytest.raises(grpc.RpcError) as info:
            hasty_client.predict_examples(examples())
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        first.join()
        time.sleep(1.0)  # time for a late handler to run, if one were to
        # gRPC itself cancels a call whose deadline passed while it queued; one that
        # reaches the handler late is dropped there ("Predict:deadline_exceeded")
        assert _Slow.computed == 1
        counts = server.request_counts()
        assert counts["Predict"] == 1 + counts.get("Predict:deadline_exceeded", 0)
