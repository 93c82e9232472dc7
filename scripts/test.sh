#!/usr/bin/env bash
# The whole test suite, slow end-to-end tests included.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$DAIAN_ROOT"
exec python -m pytest -p no:cacheprovider "$@"
