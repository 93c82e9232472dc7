#!/usr/bin/env bash
# Stages Beam's portable Flink job server, which `--runner=FlinkRunner` starts (a JVM
# running Flink embedded for `--flink_master=[local]`, or submitting to a cluster).
# Called by scripts/env.sh; run it yourself to fetch or check it. Prints the launcher
# jar's path on stdout; progress and errors go to stderr.
#
# What it fetches: beam-runners-flink-<flink.line> <beam.version> and its runtime
# dependencies (scripts/flink-job-server/pom.xml; about 150 MB, 160 jars) with
# `mvn dependency:copy-dependencies` into
#   ${DAIAN_FLINK_CACHE:-${XDG_CACHE_HOME:-~/.cache}/daian-tf/flink-job-server}/beam-<v>-flink-<line>/lib/
# and writes job-server.jar beside it: a launcher whose manifest names the driver
# (org.apache.beam.runners.flink.FlinkJobServerDriver) and those jars, plus the JVM's log
# settings. daian passes it to Beam as --flink_job_server_jar (daian_tf/data/beam_runners.py),
# so no run downloads anything. Cached: once job-server.jar exists, a run costs nothing.
#
# Exit status: 0 staged (or already there); 3 Java or Maven missing; 4 Maven failed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
POM="$ROOT/scripts/flink-job-server/pom.xml"

prop() { sed -n "s:.*<$1>\(.*\)</$1>.*:\1:p" "$POM" | head -n 1; }
BEAM_VERSION=$(prop beam.version)
FLINK_LINE=$(prop flink.line)
CACHE="${DAIAN_FLINK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/daian-tf/flink-job-server}"
DEST="$CACHE/beam-$BEAM_VERSION-flink-$FLINK_LINE"
JAR="$DEST/job-server.jar"

if [ -f "$JAR" ]; then
  echo "$JAR"
  exit 0
fi

java_bin="${JAVA_HOME:+$JAVA_HOME/bin/}java"
missing=()
command -v "$java_bin" >/dev/null 2>&1 || missing+=("Java (java on PATH or JAVA_HOME; 11 or 17)")
command -v mvn >/dev/null 2>&1 || missing+=("Maven (mvn on PATH)")
if [ ${#missing[@]} -gt 0 ]; then
  what=$(printf '%s and ' "${missing[@]}")
  echo "[flink] cannot stage the Flink job server: missing ${what% and }." \
       "The FlinkRunner needs it; the DirectRunner does not." >&2
  exit 3
fi

echo "[flink] staging Beam $BEAM_VERSION's Flink $FLINK_LINE job server with Maven" \
     "into $DEST (first time only: about 150 MB)" >&2
mkdir -p "$CACHE"
tmp=$(mktemp -d "$DEST.partial.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
if ! mvn -q -B -Dstyle.color=never -f "$POM" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$tmp/lib" >"$tmp/maven.log" 2>&1; then
  cp "$tmp/maven.log" "$CACHE/maven-failure.log"
  echo "[flink] Maven could not fetch the Flink job server:" \
       "$(grep -m1 -o 'Failed to execute goal.*' "$tmp/maven.log" || tail -n 1 "$tmp/maven.log")" \
       "(whole log: $CACHE/maven-failure.log)" >&2
  exit 4
fi

# The launcher jar: Class-Path entries are relative to the jar, one per continuation
# line (a manifest line holds at most 72 bytes); simplelogger.properties sets the
# JVM's log format (Beam logs each of its lines at INFO, which `daian` shows only with
# --verbose or --log-file).
python3 - "$tmp" <<'EOF'
import os, sys, zipfile
root = sys.argv[1]
jars = sorted(f for f in os.listdir(os.path.join(root, "lib")) if f.endswith(".jar"))

def header(name, value):
    data = f"{name}: {value}".encode()
    lines = [data[:72]] + [b" " + data[i:i + 71] for i in range(72, len(data), 71)]
    return b"\r\n".join(lines) + b"\r\n"

manifest = (b"Manifest-Version: 1.0\r\n"
            + header("Main-Class", "org.apache.beam.runners.flink.FlinkJobServerDriver")
            + header("Class-Path", " ".join("lib/" + j for j in jars)) + b"\r\n")
log_settings = (b"org.slf4j.simpleLogger.defaultLogLevel=info\n"
                b"org.slf4j.simpleLogger.showDateTime=true\n"
                b"org.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd HH:mm:ss.SSS\n")
with zipfile.ZipFile(os.path.join(root, "job-server.jar"), "w") as z:
    z.writestr("META-INF/MANIFEST.MF", manifest)
    z.writestr("simplelogger.properties", log_settings)
EOF
rm -f "$tmp/maven.log"
[ -f "$JAR" ] || rm -rf "$DEST"  # never a complete one: those only ever come whole
if ! mv -T "$tmp" "$DEST" 2>/dev/null; then
  rm -rf "$tmp"  # another set-up finished first; its copy is the same
fi
trap - EXIT
echo "[flink] staged $(ls "$DEST/lib" | wc -l) jars ($(du -sh "$DEST" | cut -f1)) in" \
     "$(( $(date +%s) - start )) s: $JAR" >&2
echo "$JAR"
