#!/usr/bin/env bash
# The main job on the embedded default: simulate → Beam samples → TFX pipeline → gRPC.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$DAIAN_ROOT"
exec daian quickstart "$@"
