#!/usr/bin/env bash
# A local Flink standalone cluster (one JobManager, one TaskManager with 2 task slots,
# bound to localhost) for `--runner=FlinkRunner --flink_master=localhost:8081`.
#
#   bash scripts/flink_cluster.sh start    # assemble the distribution (once), start
#   bash scripts/flink_cluster.sh stop
#   bash scripts/flink_cluster.sh status
#
# Flink's binary distribution (flink-dist) is not served by the registries this project
# reaches; PyFlink's PyPI packages carry it: apache-flink-libraries (sdist) holds lib/,
# opt/, plugins/ and bin/bash-java-utils.jar, apache-flink (wheel) holds bin/ and conf/.
# The first start downloads both (`pip download --no-deps`, about 235 MB) and lays them
# out as a Flink home in ${DAIAN_FLINK_DIST:-${XDG_CACHE_HOME:-~/.cache}/daian-tf/flink-dist}.
# The version is the staged job server's Flink (scripts/setup_flink.sh: 1.19.0).
#
# conf/config.yaml is written here (Flink's own settings, nothing of Beam's):
# DAIAN_FLINK_SLOTS task slots (default 2), parallelism.default 2, 1 GiB JobManager,
# 4 GiB TaskManager with 20 % network memory and 64 sort-shuffle buffers per result
# partition (Flink's default 512 each: a Beam batch job deploys every task at once,
# and the builder's then asked for more network buffers than 2 GiB holds), and 1 GiB
# of task off-heap memory: the gRPC buffers of Beam's data plane to the Python workers
# are direct memory, and at 1M impressions they ran out of Flink's default ("Cannot
# reserve 2097152 bytes of direct buffer memory").
set -euo pipefail
FLINK_VERSION=1.19.0
DIST="${DAIAN_FLINK_DIST:-${XDG_CACHE_HOME:-$HOME/.cache}/daian-tf/flink-dist}"
HOME_DIR="$DIST/flink-$FLINK_VERSION"
SLOTS="${DAIAN_FLINK_SLOTS:-2}"
REST=http://localhost:8081

assemble() {
  [ -x "$HOME_DIR/bin/start-cluster.sh" ] && return 0
  command -v "${JAVA_HOME:+$JAVA_HOME/bin/}java" >/dev/null 2>&1 \
    || { echo "[flink] no Java (java on PATH or JAVA_HOME)" >&2; exit 3; }
  local py="${PYTHON:-python3}" tmp
  echo "[flink] assembling Flink $FLINK_VERSION from PyPI (apache-flink-libraries," \
       "apache-flink; about 235 MB) into $HOME_DIR" >&2
  mkdir -p "$DIST"
  tmp=$(mktemp -d "$DIST/partial.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  "$py" -m pip download -q --disable-pip-version-check --no-deps -d "$tmp/dl" \
      "apache-flink-libraries==$FLINK_VERSION" >&2
  "$py" -m pip download -q --disable-pip-version-check --no-deps -d "$tmp/dl" \
      --only-binary=:all: --platform manylinux1_x86_64 --python-version 3.10 \
      "apache-flink==$FLINK_VERSION" >&2
  mkdir -p "$tmp/x" "$tmp/flink/log"
  tar xzf "$tmp"/dl/apache-flink-libraries-*.tar.gz -C "$tmp/x"
  "$py" -m zipfile -e "$tmp"/dl/apache_flink-*.whl "$tmp/x/wheel"
  local deps=("$tmp"/x/apache-flink-libraries-*/deps)
  cp -r "${deps[0]}/lib" "${deps[0]}/opt" "${deps[0]}/plugins" "$tmp/flink/"
  cp -r "$tmp/x/wheel/pyflink/bin" "$tmp/x/wheel/pyflink/conf" "$tmp/flink/"
  cp "${deps[0]}/bin/bash-java-utils.jar" "$tmp/flink/bin/"
  chmod +x "$tmp"/flink/bin/*.sh "$tmp/flink/bin/flink"
  rm -rf "$HOME_DIR"
  mv "$tmp/flink" "$HOME_DIR"
  rm -rf "$tmp"
  trap - EXIT
}

configure() {
  local conf="$HOME_DIR/conf/config.yaml" opts
  # the JVM options Flink ships for Java 17 (module opens), kept from its own file
  opts=$(grep -m1 -E '^[[:space:]]+all: --add' "$conf" | sed -E 's/^[[:space:]]+all: //' \
         || sed -n 's/^env.java.opts.all: //p' "$conf")
  cat >"$conf" <<EOF
# written by daian-tf scripts/flink_cluster.sh
env.java.opts.all: $opts
jobmanager.rpc.address: localhost
jobmanager.rpc.port: 6123
jobmanager.bind-host: localhost
jobmanager.memory.process.size: 1024m
taskmanager.host: localhost
taskmanager.bind-host: localhost
taskmanager.numberOfTaskSlots: $SLOTS
taskmanager.memory.process.size: 4096m
taskmanager.memory.task.off-heap.size: 1024m
taskmanager.memory.managed.fraction: 0.25
taskmanager.memory.network.fraction: 0.2
taskmanager.memory.network.max: 1gb
taskmanager.network.sort-shuffle.min-buffers: 64
parallelism.default: 2
rest.address: localhost
rest.bind-address: localhost
rest.port: 8081
EOF
}

overview() { curl -sf --max-time 2 "$REST/overview" 2>/dev/null; }

case "${1:-}" in
  start)
    if overview >/dev/null; then
      echo "[flink] a cluster already answers at $REST: $(overview)" >&2; exit 0
    fi
    assemble
    configure
    "$HOME_DIR/bin/start-cluster.sh" >/dev/null
    for _ in $(seq 60); do
      if overview | grep -q '"slots-total":[1-9]'; then
        echo "[flink] Flink $FLINK_VERSION cluster up at $REST: $(overview)" >&2
        echo "[flink] run: daian build-samples RAW OUT --runner=FlinkRunner" \
             "--flink_master=localhost:8081 --environment_type=LOOPBACK --parallelism=$SLOTS" >&2
        exit 0
      fi
      sleep 1
    done
    echo "[flink] the cluster did not come up within 60 s; logs: $HOME_DIR/log/" >&2
    exit 1
    ;;
  stop)
    [ -x "$HOME_DIR/bin/stop-cluster.sh" ] || { echo "[flink] nothing assembled at $HOME_DIR" >&2; exit 0; }
    "$HOME_DIR/bin/stop-cluster.sh" >&2
    ;;
  status)
    overview || { echo "[flink] no cluster at $REST" >&2; exit 1; }
    echo
    ;;
  *)
    echo "usage: bash scripts/flink_cluster.sh start|stop|status" >&2
    exit 2
    ;;
esac
