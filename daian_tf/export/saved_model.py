"""SavedModel export for TF Serving (DESIGN.md "Serving contract").

A plain `tf.Module` holds the Keras 3 model and the tft `TransformFeaturesLayer` as
attributes and is written with `tf.saved_model.save` (PITFALLS: Keras 3 tracking of
non-Keras resources; TFX's own examples do the same). Each signature parses serialized
`tf.Example`s with `serving_feature_spec` (every feature has a default), applies the
training transform, and calls the model, so serving cannot skew from training. The
export is self-contained: the transform's vocabularies are copied into its assets.

Signatures:
- `serving_default`: `examples` (tf.string `[None]`, serialized `tf.Example` without
  labels) → `{ctr: float32 [None]}`;
- `ctr`: the same.
The `intent` signature and the request-level `rank` signature come with DAIAN
(`_signatures` is where they go).

Warmup requests (TF Serving `--enable_model_warmup`) are written to
`<export_dir>/assets.extra/tf_serving_warmup_requests`, as serving's `resnet_warmup.py`.
"""

from __future__ import annotations

import os
from typing import Dict, Iterable, Optional, Sequence

import tensorflow as tf

from daian_tf.data.transform import serving_feature_spec

from daian_tf.export.signatures import (  # noqa: F401 - re-exported for callers
    DEFAULT_MODEL_NAME, INPUT_EXAMPLES, OUTPUT_CTR, SIGNATURE_CTR,
    SIGNATURE_SERVING_DEFAULT)

WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"


class ServingModule(tf.Module):
    """What the SavedModel holds: the Keras model, the tft layer and the parse spec.

    Args:
        model: the Keras 3 model; takes a dict of transformed features named after its
            inputs and returns click probabilities `(B, 1)`.
        tft_layer: `tf_transform_output.transform_features_layer()`.
        raw_spec: the serving parse spec (`serving_feature_spec`).
    """

    def __init__(self, model, tft_layer, raw_spec: Dict):
        super().__init__(name="daian_serving")
        self.model = model
        self.tft_layer = tft_layer
        self._raw_spec = dict(raw_spec)
        self._input_keys = [t.name for t in model.inputs]

    def transformed_inputs(self, examples: tf.Tensor) -> Dict[str, tf.Tensor]:
        """Serialized examples `(N,)` → the model's transformed inputs."""
        parsed = tf.io.parse_example(examples, self._raw_spec)
        transformed = self.tft_layer(parsed)
        return {k: transformed[k] for k in self._input_keys}

    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.string, name=INPUT_EXAMPLES)])
    def score_examples(self, examples: tf.Tensor) -> Dict[str, tf.Tensor]:
        """Serialized examples `(N,)` → `{ctr: (N,)}` click probabilities."""
        probs = self.model(self.transformed_inputs(examples), training=False)
        return {OUTPUT_CTR: tf.reshape(tf.cast(probs, tf.float32), [-1])}


def _signatures(module: ServingModule) -> Dict[str, tf.types.experimental.ConcreteFunction]:
    ctr = module.score_examples.get_concrete_function()
    # DAIAN adds here: "intent" (examples → intent distribution (N, n)) and "rank"
    # (one context example + N candidates → N scores, request side computed once).
    return {SIGNATURE_SERVING_DEFAULT: ctr, SIGNATURE_CTR: ctr}


def to_serving_example(serialized: bytes, sample_cfg) -> bytes:
    """A training example reduced to the features a serving request carries.

    Drops the labels and the analysis columns (everything not in `serving_feature_spec`).
    """
    example = tf.train.Example.FromString(serialized)
    keep = set(serving_feature_spec(sample_cfg))
    for key in list(example.features.feature):
        if key not in keep:
            del example.features.feature[key]
    return example.SerializeToString()


def write_warmup_requests(export_dir: str, examples: Sequence[bytes],
                          model_name: str = DEFAULT_MODEL_NAME) -> str:
    """Write one `PredictionLog` per example to `assets.extra/tf_serving_warmup_requests`.

    Args:
        export_dir: the SavedModel version directory.
        examples: serialized serving `tf.Example`s (one request each).
        model_name: the model name of the requests' `ModelSpec`.

    Returns:
        The path of the warmup file.
    """
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    if not examples:
        raise ValueError("write_warmup_requests needs at least one example")
    directory = os.path.join(export_dir, WARMUP_DIR)
    tf.io.gfile.makedirs(directory)
    path = os.path.join(directory, WARMUP_FILE)
    with tf.io.TFRecordWriter(path) as writer:
        for serialized in examples:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(
                    name=model_name, signature_name=SIGNATURE_SERVING_DEFAULT))
            request.inputs[INPUT_EXAMPLES].CopyFrom(
                tf.make_tensor_proto([serialized], dtype=tf.string))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path


def export_serving_model(model, tf_transform_output, export_dir: str, sample_cfg,
                         warmup_examples: Optional[Iterable[bytes]] = None,
                         model_name: str = DEFAULT_MODEL_NAME) -> str:
    """Export `model` with the transform as a TF Serving SavedModel.

    Args:
        model: the trained Keras 3 model (inputs named after transformed features).
        tf_transform_output: the `tft.TFTransformOutput` it was trained on.
        export_dir: the version directory to write, `<model_base_path>/<version>`.
        sample_cfg: `SampleConfig` (user columns of the serving parse spec).
        warmup_examples: serialized examples for the warmup file (labels are stripped);
            None writes one empty request, which parses with every default.
        model_name: model name in the warmup requests.

    Returns:
        `export_dir`.
    """
    module = ServingModule(model, tf_transform_output.transform_features_layer(),
                           serving_feature_spec(sample_cfg))
    tf.saved_model.save(module, export_dir, signatures=_signatures(module))
    warmup = [to_serving_example(e, sample_cfg) for e in (warmup_examples or [])]
    write_warmup_requests(export_dir, warmup or [tf.train.Example().SerializeToString()],
                          model_name)
    return export_dir
