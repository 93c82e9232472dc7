"""SavedModel export for TF Serving (DESIGN.md "Serving contract").

A plain `tf.Module` holds the Keras 3 model and the tft `TransformFeaturesLayer` and is
written with `tf.saved_model.save` (PITFALLS: Keras 3 tracking of non-Keras resources;
TFX's own examples do the same). It tracks the model's TensorFlow variables and lookup
tables, not the Keras model itself, so the export runs under TensorFlow's C++
`LoadSavedModel` as in TF Serving (serving/README.md, "`daian check-export`"). Each
signature parses serialized `tf.Example`s with `serving_feature_spec` (every feature has
a default), applies the training transform, and calls the model, so serving cannot skew
from training. The export is self-contained: the transform's vocabularies are copied into
its assets.

Signatures:
- `serving_default`: `examples` (tf.string `[None]`, serialized `tf.Example` without
  labels) → `{ctr: float32 [None]}`, plus `intent: float32 [None, n]` for DAIAN;
- `ctr`: `examples` → `{ctr}`;
- `intent` (models with an intent distribution: DAIAN, IntentRec, DUPN): `examples` →
  `{intent}`, the predicted p̂ (a request-level output: one example per request is enough);
- `user_representation` (DUPN): `examples` → `{user_representation: float32 [None, d]}`,
  the shared user vector, for reuse by other tasks;
- `rank`: `context` (tf.string `[1]`: one example with the user, trigger and history)
  and `candidates` (tf.string `[None]`: examples with the target features) → `{ctr}`;
  for DAIAN (`DAIAN.score_candidates`) the request side (the user/trigger/history
  embeddings, UIM, I2E, the explicit self-attention) runs once and the N candidates are
  scored against the one history (DIN's pooling and the explicit read-out as single
  matrix products), equal to `serving_default` on the N (context, candidate) pairs.
  The candidates are parsed for their target features only, the context for the
  rest, and each goes through only the part of the transform graph that computes its
  features (`export.pruned_transform`).
  `serving_default` of DAIAN computes the request side once per distinct request of
  its batch, the intent output included (`DAIAN.call_with_intent`).

A DAIAN export also holds the I-2 range it was trained with, `[lo, hi]`, as the variable
`sim_range` (`tf.saved_model.load(export_dir).sim_range`): the sample builder's range,
which the model received as data.

Warmup requests (TF Serving `--enable_model_warmup`) are written to
`<export_dir>/assets.extra/tf_serving_warmup_requests`, as serving's `resnet_warmup.py`.
"""

from __future__ import annotations

import os
from typing import Dict, Iterable, Optional, Sequence

import tensorflow as tf

from daian_tf.core.signatures import (
    DEFAULT_MODEL_NAME, INPUT_CANDIDATES, INPUT_CONTEXT, INPUT_EXAMPLES, OUTPUT_CTR,
    OUTPUT_INTENT, OUTPUT_USER_REPRESENTATION, SIGNATURE_CTR, SIGNATURE_INTENT,
    SIGNATURE_RANK, SIGNATURE_SERVING_DEFAULT, SIGNATURE_USER_REPRESENTATION, WARMUP_DIR,
    WARMUP_FILE)
from daian_tf.data.transform import serving_feature_spec
from daian_tf.export.pruned_transform import PrunedTransform
from daian_tf.models import serving_input_keys
# the features a rank candidate carries (the rest come from the request context)
from daian_tf.models.daian import CANDIDATE_KEYS


class ServingModule(tf.Module):
    """What the SavedModel holds: the Keras model, the tft layer and the parse spec.

    Args:
        model: the Keras 3 model; takes a dict of transformed features named by
            `models.serving_input_keys` and returns click probabilities `(B, 1)`. A model
            with `predict_intent` (DAIAN, ...) also gets the intent output, and one
            with `score_candidates` (DAIAN) a rank signature that computes the
            request once.
        tft_layer: `tf_transform_output.transform_features_layer()`.
        raw_spec: the serving parse spec (`serving_feature_spec`).
    """

    def __init__(self, model, tft_layer, raw_spec: Dict):
        super().__init__(name="daian_serving")
        # The Keras model is held, not tracked: a tracked Keras 3 variable is written
        # as a second variable beside the one the signatures read, and a SavedModel's
        # restore op (what TF Serving runs) fills only the second, so every signature
        # fails there with "Could not find variable" (keras #20095). Its TensorFlow
        # variables and lookup tables are tracked instead, as
        # `keras.export.ExportArchive` does (tested by `serving.cc_loader`).
        object.__setattr__(self, "model", model)
        self.model_variables = [v.value for v in model.variables]
        self.model_resources = [
            t for t in tf.train.TrackableView(model).descendants()
            if isinstance(t, tf.saved_model.experimental.TrackableResource)]
        self.tft_layer = tft_layer
        self._raw_spec = dict(raw_spec)
        self._input_keys = serving_input_keys(model)
        # rank's context and candidates: each only the part of the transform graph
        # that computes its features, on only the raw features that part reads (the
        # layer runs the whole graph every call)
        self._candidate_transform = PrunedTransform(
            tft_layer, [k for k in self._input_keys if k in CANDIDATE_KEYS])
        self._context_transform = PrunedTransform(
            tft_layer, [k for k in self._input_keys if k not in CANDIDATE_KEYS])
        sim_range = getattr(model, "sim_range", None)
        if sim_range is not None:  # DAIAN's I-2 range, readable from the SavedModel
            self.sim_range = tf.Variable(list(sim_range), trainable=False,
                                         dtype=tf.float64, name="sim_range")
        self.has_intent = hasattr(model, "predict_intent")
        if self.has_intent:  # traced (at save time) only for models with an intent
            spec = [tf.TensorSpec([None], tf.string, name=INPUT_EXAMPLES)]
            self.score_and_intent = tf.function(self._score_and_intent,
                                                input_signature=spec)
            self.intent_examples = tf.function(self._intent_examples,
                                               input_signature=spec)
        self.has_user_representation = hasattr(model, "user_representation")
        if self.has_user_representation:  # DUPN's shared user vector
            self.user_representation_examples = tf.function(
                self._user_representation_examples,
                input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_EXAMPLES)])

    def transformed_inputs(self, examples: tf.Tensor) -> Dict[str, tf.Tensor]:
        """Serialized examples `(N,)` → the model's transformed inputs."""
        parsed = tf.io.parse_example(examples, self._raw_spec)
        transformed = self.tft_layer(parsed)
        return {k: transformed[k] for k in self._input_keys}

    def _ctr(self, inputs, **kwargs) -> tf.Tensor:
        probs = self.model(inputs, training=False, **kwargs)
        return tf.reshape(tf.cast(probs, tf.float32), [-1])

    def _intent(self, inputs) -> tf.Tensor:
        return tf.cast(self.model.predict_intent(inputs, training=False), tf.float32)

    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.string, name=INPUT_EXAMPLES)])
    def score_examples(self, examples: tf.Tensor) -> Dict[str, tf.Tensor]:
        """Serialized examples `(N,)` → `{ctr: (N,)}` click probabilities."""
        return {OUTPUT_CTR: self._ctr(self.transformed_inputs(examples))}

    def _score_and_intent(self, examples: tf.Tensor) -> Dict[str, tf.Tensor]:
        """Serialized examples `(N,)` → `{ctr: (N,), intent: (N, n)}` (DAIAN)."""
        inputs = self.transformed_inputs(examples)
        if hasattr(self.model, "call_with_intent"):  # DAIAN: the request side once
            probs, intent = self.model.call_with_intent(inputs, training=False)
            return {OUTPUT_CTR: tf.reshape(tf.cast(probs, tf.float32), [-1]),
                    OUTPUT_INTENT: tf.cast(intent, tf.float32)}
        return {OUTPUT_CTR: self._ctr(inputs), OUTPUT_INTENT: self._intent(inputs)}

    def _intent_examples(self, examples: tf.Tensor) -> Dict[str, tf.Tensor]:
        """Serialized examples `(N,)` → `{intent: (N, n)}` UIM's p̂ (DAIAN)."""
        return {OUTPUT_INTENT: self._intent(self.transformed_inputs(examples))}

    def _user_representation_examples(self, examples: tf.Tensor) -> Dict[str, tf.Tensor]:
        """Serialized examples `(N,)` → `{user_representation: (N, d)}` (DUPN)."""
        inputs = self.transformed_inputs(examples)
        vectors = self.model.user_representation(inputs, training=False)
        return {OUTPUT_USER_REPRESENTATION: tf.cast(vectors, tf.float32)}

    def _parse_and_transform(self, transform: PrunedTransform,
                             examples: tf.Tensor) -> Dict[str, tf.Tensor]:
        """Serialized examples → `transform`'s outputs, parsing only its raw inputs."""
        return transform(tf.io.parse_example(
            examples, {k: self._raw_spec[k] for k in transform.input_keys}))

    @tf.function(input_signature=[
        tf.TensorSpec([1], tf.string, name=INPUT_CONTEXT),
        tf.TensorSpec([None], tf.string, name=INPUT_CANDIDATES)])
    def rank(self, context: tf.Tensor, candidates: tf.Tensor) -> Dict[str, tf.Tensor]:
        """One request's context `(1,)` and its N candidates `(N,)` → `{ctr: (N,)}`.

        The candidates contribute only the target features (`CANDIDATE_KEYS`). A
        model with `score_candidates` (DAIAN) scores them against the context's one
        row; any other model gets the context's features repeated for each
        candidate.
        """
        # two transforms, not one over [context; candidates]: the request side
        # then starts on its one row while the candidates are transformed
        ctx = self._parse_and_transform(self._context_transform, context)
        cand = self._parse_and_transform(self._candidate_transform, candidates)
        if hasattr(self.model, "score_candidates"):
            probs = self.model.score_candidates(ctx, cand)
            return {OUTPUT_CTR: tf.reshape(tf.cast(probs, tf.float32), [-1])}
        n = tf.shape(candidates)[0]
        inputs = {**cand, **{k: tf.repeat(v, n, axis=0) for k, v in ctx.items()}}
        return {OUTPUT_CTR: self._ctr(inputs)}


def _signatures(module: ServingModule) -> Dict[str, tf.types.experimental.ConcreteFunction]:
    ctr = module.score_examples.get_concrete_function()
    signatures = {SIGNATURE_CTR: ctr, SIGNATURE_SERVING_DEFAULT: ctr,
                  SIGNATURE_RANK: module.rank.get_concrete_function()}
    if module.has_intent:
        signatures[SIGNATURE_SERVING_DEFAULT] = (
            module.score_and_intent.get_concrete_function())
        signatures[SIGNATURE_INTENT] = module.intent_examples.get_concrete_function()
    if module.has_user_representation:
        signatures[SIGNATURE_USER_REPRESENTATION] = (
            module.user_representation_examples.get_concrete_function())
    return signatures


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
