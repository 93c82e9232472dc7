"""Names of the serving contract (DESIGN.md "Serving contract"), in one place.

The export writes these signatures and tensor names; the client, the load test and
the tests read them from here instead of spelling them as string literals.
"""

from __future__ import annotations

DEFAULT_MODEL_NAME = "daian"

SIGNATURE_SERVING_DEFAULT = "serving_default"
INPUT_EXAMPLES = "examples"  # tf.string [None]: serialized tf.train.Example batch
OUTPUT_CTR = "ctr"

# The only metadata field TF Serving's GetModelMetadata knows.
METADATA_SIGNATURE_DEF = "signature_def"
