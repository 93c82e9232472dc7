"""Names of the serving contract (DESIGN.md "Serving contract"), in one place.

The export writes these signatures and tensor names; the serving client, the local
server, the load test and the tests import them. No TensorFlow import here, so clients
can read the names cheaply.
"""

from __future__ import annotations

DEFAULT_MODEL_NAME = "daian"

SIGNATURE_SERVING_DEFAULT = "serving_default"  # examples → ctr (and intent for DAIAN)
SIGNATURE_CTR = "ctr"  # examples → ctr, on its own
SIGNATURE_INTENT = "intent"  # examples → intent (DAIAN only)
SIGNATURE_USER_REPRESENTATION = "user_representation"  # examples → user vector (DUPN)
SIGNATURE_RANK = "rank"  # context + candidates → ctr, request side computed once
INPUT_EXAMPLES = "examples"  # tf.string [None]: serialized tf.train.Example batch
INPUT_CONTEXT = "context"  # tf.string [1]: one example with user, trigger, history
INPUT_CANDIDATES = "candidates"  # tf.string [None]: examples with target features
OUTPUT_CTR = "ctr"  # float32 [None]: click probability per example
OUTPUT_INTENT = "intent"  # float32 [None, n]: UIM's intent distribution p̂
OUTPUT_USER_REPRESENTATION = "user_representation"  # float32 [None, d] (DUPN)
# TF Serving replays <version>/assets.extra/tf_serving_warmup_requests (a TFRecord of
# PredictionLog) before it serves a version (--enable_model_warmup).
WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
