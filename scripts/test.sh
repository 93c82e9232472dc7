#!/usr/bin/env bash
# The whole test suite, slow end-to-end tests included, on two workers (pytest-xdist).
# Each test file stays on one worker, so its module fixtures are made once, and the files
# go out in the order they are collected: the end-to-end ones, the longest, first.
# DAIAN_TEST_WORKERS=N sets the number of workers; 0 runs everything in this process.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$DAIAN_ROOT"
exec python -m pytest -p no:cacheprovider -n "${DAIAN_TEST_WORKERS:-2}" --dist loadfile \
    --no-loadscope-reorder "$@"
