"""TF Serving's REST API on the local server (serving/rest.py), over real HTTP."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from serving.server import serve
from tests._toy_servable import (
    FEATURE_N,
    FEATURE_X,
    MODEL_NAME,
    OUTPUT_LOGIT,
    SIGNATURE_SCORE,
    examples,
    expected_ctr,
    rows_with_defaults,
    save_toy_model,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base: Path = tmp_path_factory.mktemp("rest") / MODEL_NAME
    save_toy_model(base / "2")
    with serve(str(base), model_name=MODEL_NAME, port=0, poll_wait_s=0,
               rest_api_port=0, version_labels={"stable": 2}) as running:
        yield running


def _http(server, path: str, body=None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{server.rest_port}{path}",
                                     data=data, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _b64() -> list[dict]:
    return [{"b64": base64.b64encode(e).decode()} for e in examples()]


def test_row_format_predict_equals_the_model(server):
    status, body = _http(server, f"/v1/models/{MODEL_NAME}:predict",
                         {"instances": _b64()})
    assert status == 200
    rows = body["predictions"]
    assert len(rows) == len(examples()) and set(rows[0]) == {"ctr", OUTPUT_LOGIT}
    np.testing.assert_allclose([r["ctr"] for r in rows],
                               expected_ctr(*rows_with_defaults()), rtol=0, atol=1e-6)


def test_columnar_predict_on_a_named_version_label_and_signature(server):
    x, n = rows_with_defaults()
    for path in (f"/v1/models/{MODEL_NAME}/versions/2:predict",
                 f"/v1/models/{MODEL_NAME}/labels/stable:predict"):
        status, body = _http(server, path, {
            "signature_name": SIGNATURE_SCORE,
            "inputs": {FEATURE_X: x.tolist(), FEATURE_N: n.astype(int).tolist()}})
        assert status == 200, body
        logit = np.log(expected_ctr(x, n) / (1 - expected_ctr(x, n)))
        np.testing.assert_allclose(body["outputs"], logit, rtol=0, atol=1e-5)


def test_status_and_metadata(server):
    status, body = _http(server, f"/v1/models/{MODEL_NAME}")
    assert status == 200
    assert body == {"model_version_status": [{
        "version": "2", "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""}}]}
    status, body = _http(server, f"/v1/models/{MODEL_NAME}/metadata")
    assert status == 200
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", SIGNATURE_SCORE} <= set(signatures)


@pytest.mark.parametrize("path, body, code, words", [
    ("/v1/models/nope:predict", {"instances": []}, 404, "nope"),
    (f"/v1/models/{MODEL_NAME}/versions/9:predict", {"instances": [{"b64": ""}]}, 404,
     "Specific(toy, 9)"),
    (f"/v1/models/{MODEL_NAME}:predict", {"instances": [{"b64": "%%%"}]}, 400,
     "invalid base64"),
    (f"/v1/models/{MODEL_NAME}:predict", {"rows": []}, 400, "instances"),
    (f"/v1/models/{MODEL_NAME}:predict", {"instances": ["not an example"]}, 400,
     "parse"),
    (f"/v1/models/{MODEL_NAME}:classify", {"instances": []}, 404, "Malformed"),
])
def test_bad_requests_get_tf_servings_http_codes_and_a_reason(server, path, body, code,
                                                              words):
    status, answer = _http(server, path, body)
    assert status == code
    assert words.lower() in answer["error"].lower()
