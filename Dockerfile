# The pipeline image: what every task of the Kubeflow spec (`daian pipeline compile`)
# runs, and what Beam's workers can run. docs/pipeline.md (Kubeflow) says how to build,
# push and use it:
#
#   docker build -t REGISTRY/daian-tf-pipeline:TAG -f Dockerfile .
#
# Base: TFX's own image (Python 3.10 at `python`, CUDA, Beam's worker boot program).
# Its Python packages are TFX's set (TFX's build constraints name apache-beam 2.59.0; we
# pin 2.74.0), not ours, so this package goes into its own virtual environment,
# /opt/daian, with exactly the pinned set (requirements/constraints-py310.txt) and
# nothing else; `python` on PATH is that environment's.
# tests/integration/test_pipeline_image.py builds the same environment without Docker
# (the wheel, then `pip install -c` the lock) and runs the spec's code in it.
# Nothing is downloaded when a container runs.

# keep equal to the lock's tfx and apache-beam pins (tests/unit/test_dockerfile.py)
ARG TFX_VERSION=1.16.0
ARG BEAM_VERSION=2.74.0

# 1. The wheel, built from the sources (the build context: .dockerignore keeps only them).
FROM gcr.io/tfx-oss-public/tfx:${TFX_VERSION} AS wheel
WORKDIR /src
COPY setup.py pyproject.toml ./
COPY daian_tf/ daian_tf/
COPY tfx_pipeline/ tfx_pipeline/
COPY serving/ serving/
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /dist . \
 && ls /dist/daian_tf-*.whl

# 2. Beam's SDK worker boot program of the Beam we pin (the base's follows TFX's Beam).
FROM apache/beam_python3.10_sdk:${BEAM_VERSION} AS beam

# 3. The image.
FROM gcr.io/tfx-oss-public/tfx:${TFX_VERSION}
ENV VIRTUAL_ENV=/opt/daian
COPY requirements/constraints-py310.txt /tmp/daian/constraints-py310.txt
COPY --from=wheel /dist/ /tmp/daian/dist/
RUN python -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if v == (3, 10) else \
      "the base image has Python %d.%d; the lock is for 3.10" % v)' \
 && python -m venv "$VIRTUAL_ENV" \
 && "$VIRTUAL_ENV/bin/pip" install --no-cache-dir --disable-pip-version-check \
      -c /tmp/daian/constraints-py310.txt /tmp/daian/dist/daian_tf-*.whl \
 && "$VIRTUAL_ENV/bin/pip" check \
 && rm -rf /tmp/daian
# `python` (the KFP command: python -m tfx.orchestration.kubeflow.v2.container.
# kubeflow_v2_run_executor) and `daian` are the environment's. Beam's boot program would
# otherwise make a fresh venv from the base's packages for its worker.
ENV PATH=/opt/daian/bin:$PATH \
    RUN_PYTHON_SDK_IN_DEFAULT_ENVIRONMENT=1
# glibc's malloc keeps freed memory for reuse instead of faulting pages in afresh for
# every tensor: what `daian` sets in its own process, for the processes that do not
# start through it (daian_tf/core/allocator.py; equal to its GLIBC_TUNABLES_VALUE)
ENV GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824
COPY --from=beam /opt/apache/beam /opt/apache/beam
# InfraCheck (tfx_pipeline/components/infra_check.py) runs the candidate under
# TensorFlow's C++ loader with a small runner compiled against the installed TensorFlow
# (serving/cc_loader.py): a C++ compiler, and the runner built here, into the cache it
# is looked up in, so that no task compiles it (and the build fails if it does not)
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ \
 && rm -rf /var/lib/apt/lists/* \
 && python -c "from serving.cc_loader import build_runner; print(build_runner())"
# fail the build, not the first task, if the pipeline's code does not import
RUN python -c "import tfx_pipeline.pipeline, tfx_pipeline.spec_check, \
      tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"
WORKDIR /opt/daian-work
# the base's: Beam's worker boot (a Dataflow or Flink worker pool); KFP tasks set their
# own command
ENTRYPOINT ["/opt/apache/beam/boot"]
