"""The serving contract's names, re-exported from the library for the serving side.

The library (`daian_tf.core.signatures`) owns them, since the export writes them; the
server, client and load test read them from here.
"""

from __future__ import annotations

from daian_tf.core.signatures import (  # noqa: F401
    DEFAULT_MODEL_NAME,
    INPUT_CANDIDATES,
    INPUT_CONTEXT,
    INPUT_EXAMPLES,
    OUTPUT_CTR,
    OUTPUT_INTENT,
    SIGNATURE_CTR,
    SIGNATURE_INTENT,
    SIGNATURE_RANK,
    SIGNATURE_SERVING_DEFAULT,
    WARMUP_DIR,
    WARMUP_FILE,
)

# The only metadata field TF Serving's GetModelMetadata knows.
METADATA_SIGNATURE_DEF = "signature_def"

# The largest gRPC message TF Serving takes or sends: it lifts gRPC's 4 MiB default
# both ways (model_servers/server.cc: `builder.SetMaxMessageSize(kint32max)`), so a
# large batch that passes there passes here, and the client receives what it sends.
MAX_MESSAGE_BYTES = 2 ** 31 - 1
# the gRPC channel options of both ends that lift the limit to it
MESSAGE_SIZE_OPTIONS = (("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES))

# TF Serving's --rest_api_timeout_in_ms default: a REST request's deadline
REST_API_TIMEOUT_MS = 30_000
