# Sourced by the README's commands: finds Python 3.10, creates or reuses a virtual
# environment with the pinned set (requirements/constraints-py310.txt) and installs
# this checkout into it. The venv lives in a cache directory keyed by the hash of the
# lock file and setup.py, so CI runs and fresh clones reuse it; DAIAN_VENV overrides.
set -euo pipefail
DAIAN_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCK="$DAIAN_ROOT/requirements/constraints-py310.txt"

find_python310() {
  for c in "${PYTHON310:-}" python3.10 /root/.pyenv/versions/3.10*/bin/python3.10 \
           /usr/local/bin/python3.10 /usr/bin/python3.10; do
    [ -n "$c" ] || continue
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
      command -v "$c"; return 0
    fi
  done
  # pyenv shims refuse a version that is installed but not selected
  if command -v pyenv >/dev/null 2>&1; then
    v=$(pyenv versions --bare 2>/dev/null | grep -E '^3\.10\.' | tail -n 1 || true)
    [ -n "$v" ] && { echo "$(pyenv root)/versions/$v/bin/python3.10"; return 0; }
  fi
  echo "error: Python 3.10 not found; set PYTHON310=/path/to/python3.10" >&2
  return 1
}

NODEPS="$DAIAN_ROOT/requirements/no-deps-py310.txt"
key=$(cat "$LOCK" "$NODEPS" "$DAIAN_ROOT/setup.py" | sha256sum | cut -c1-12)
VENV="${DAIAN_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/daian-tf/venv-$key}"
if [ ! -f "$VENV/.daian-installed" ]; then
  PY=$(find_python310)
  echo "[env] creating $VENV with $PY (first run: several minutes)" >&2
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  # wheel first: pip then builds the sdists without a pyproject.toml as wheels (no
  # "legacy setup.py install" DEPRECATION line each)
  "$VENV/bin/pip" install -q --disable-pip-version-check -c "$LOCK" wheel >&2
  "$VENV/bin/pip" install -q --disable-pip-version-check -c "$LOCK" \
      -e "$DAIAN_ROOT[test]" >&2
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps -r "$NODEPS" >&2
  touch "$VENV/.daian-installed"
else
  # reuse: point the editable install at this checkout (cheap, no dependency work)
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation \
      -e "$DAIAN_ROOT" >&2
fi
export PATH="$VENV/bin:$PATH"
export VIRTUAL_ENV="$VENV"
# Beam's Flink job server for --runner=FlinkRunner (scripts/setup_flink.sh): staged once
# with Maven into a cache, then nothing. Without Java or Maven, or when Maven fails,
# only a warning: everything but the FlinkRunner works without it, and a FlinkRunner run
# then says how to stage it. DAIAN_FLINK_SETUP=0 skips it.
if [ "${DAIAN_FLINK_SETUP:-1}" != 0 ]; then
  bash "$DAIAN_ROOT/scripts/setup_flink.sh" >/dev/null \
    || echo "[env] warning: the Flink job server is not staged (above); the" \
            "FlinkRunner and its test fail until \`bash scripts/setup_flink.sh\` succeeds" >&2
fi
# No TF_CPP_MIN_LOG_LEVEL / PYTHONWARNINGS here: the `daian` command quiets the
# libraries itself (daian_tf/core/console.py; `daian --verbose ...` keeps their output),
# and a value exported here would override its choice.
