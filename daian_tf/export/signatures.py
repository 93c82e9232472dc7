"""Names of the serving contract (DESIGN.md "Serving contract"), in one place.

The export writes these signatures and tensor names; the serving client, the local
server, the load test and the tests import them. No TensorFlow import here, so clients
can read the names cheaply.
"""

from __future__ import annotations

DEFAULT_MODEL_NAME = "daian"

SIGNATURE_SERVING_DEFAULT = "serving_default"  # examples → ctr
SIGNATURE_CTR = "ctr"  # examples → ctr, on its own
INPUT_EXAMPLES = "examples"  # tf.string [None]: serialized tf.train.Example batch
OUTPUT_CTR = "ctr"  # float32 [None]: click probability per example
