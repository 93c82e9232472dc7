"""The pipeline image's Dockerfile and .dockerignore, read without a Docker engine: the
base and Beam versions follow the lock, every COPY finds its files in the build context,
and the image installs the wheel with the lock as constraints into the environment that
`python` on PATH is, with the malloc settings `daian` sets for itself.
(tests/integration/test_pipeline_image.py builds what it installs.)"""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest

from daian_tf.core import allocator
from tests import _image as I


@pytest.fixture(scope="module")
def instructions():
    return I.dockerfile()


def _stage(instructions, name):
    return [i for i in instructions if i.stage == name]


def _final_stage(instructions):
    return _stage(instructions, instructions[-1].stage)


def test_the_base_and_the_beam_worker_follow_the_lock(instructions):
    args, pins = I.build_args(instructions), I.requirement_pins()
    assert args["TFX_VERSION"] == pins["tfx"], \
        "Dockerfile ARG TFX_VERSION != the lock's tfx"
    assert args["BEAM_VERSION"] == pins["apache-beam"], \
        "Dockerfile ARG BEAM_VERSION != the lock's apache-beam"
    bases = {i.stage: I.expand(i.args.split()[0], args)
             for i in instructions if i.keyword == "FROM"}
    final = instructions[-1].stage
    assert bases[final] == f"gcr.io/tfx-oss-public/tfx:{pins['tfx']}"
    assert bases[I.WHEEL_STAGE] == bases[final]  # no second base image to pull
    assert f"apache/beam_python3.10_sdk:{pins['apache-beam']}" in bases.values()


def test_every_copy_finds_its_files_in_the_build_context(instructions):
    context = set(I.context_files())
    stages = {i.stage for i in instructions if i.keyword == "FROM"}
    tracked = subprocess.run(["git", "ls-files"], cwd=I.REPO, capture_output=True,
                             text=True, check=True).stdout.split()
    checked = 0
    for copy in I.copies(instructions):
        if copy.from_stage:
            assert copy.from_stage in stages, \
                f"line {copy.line}: no stage {copy.from_stage}"
            continue
        for source in copy.sources:
            source = source.rstrip("/")
            assert (I.REPO / source).exists(), f"line {copy.line}: COPY {source}: missing"
            inside = [f for f in tracked if f == source or f.startswith(source + "/")]
            left_out = [f for f in inside if f not in context]
            assert inside and not left_out, \
                f"line {copy.line}: COPY {source}: .dockerignore leaves out {left_out}"
            checked += 1
    assert checked >= 5


def test_the_context_is_only_the_sources_and_the_lock():
    context = I.context_files()
    tops = {f.split("/")[0] for f in context}
    assert tops == {"setup.py", "pyproject.toml", "daian_tf", "tfx_pipeline", "serving",
                    "requirements"}, tops
    assert [f for f in context if f.startswith("requirements/")] == \
        ["requirements/constraints-py310.txt"]
    assert not [f for f in context if "__pycache__" in f or f.endswith(".pyc")]


def test_dockerignore_patterns_follow_docker_rules():
    patterns = [(I._pattern_regex(p), neg, p) for p, neg in
                [("*", False), ("src", True), ("**/*.pyc", False), ("docs/*.md", False)]]
    assert I.ignored("runs/x/y.txt", patterns)  # `*` matches the top directory
    assert not I.ignored("src/a/b.py", patterns)  # the exception re-includes the tree
    assert I.ignored("src/a/b.pyc", patterns)  # a later pattern wins
    pats = [(I._pattern_regex("docs/*.md"), False, "docs/*.md")]
    assert I.ignored("docs/a.md", pats) and not I.ignored("docs/x/a.md", pats)


def test_the_image_installs_the_wheel_with_the_lock_into_its_own_environment(instructions):
    final = _final_stage(instructions)
    lock_copy = [c for c in I.copies(final) if "requirements/constraints-py310.txt"
                 in c.sources]
    wheel_copy = [c for c in I.copies(final) if c.from_stage == I.WHEEL_STAGE]
    assert len(lock_copy) == 1 and len(wheel_copy) == 1
    lock_in_image = lock_copy[0].dest
    wheel_dir = wheel_copy[0].dest.rstrip("/")
    env = " ".join(i.args for i in final if i.keyword == "ENV")
    venv = re.search(r"VIRTUAL_ENV=(\S+)", env)[1]
    commands = [shlex.split(I.expand(part, {"VIRTUAL_ENV": venv}))
                for i in final if i.keyword == "RUN" for part in i.args.split("&&")]
    installs = [words for words in commands if words[0].endswith("pip")
                and "install" in words]
    assert len(installs) == 1, f"expected one pip install in the final stage: {installs}"
    words = installs[0]
    assert words[0] == f"{venv}/bin/pip", "the wheel goes into the image's own venv"
    assert "-c" in words, "the wheel is installed without the lock as constraints"
    assert words[words.index("-c") + 1] == lock_in_image
    assert f"{wheel_dir}/daian_tf-*.whl" in words
    assert "--no-deps" not in words  # the pinned set comes with it
    assert [venv + "/bin/pip", "check"] in commands
    assert ["python", "-m", "venv", venv] in commands
    # `python` of the KFP command and Beam's worker are the environment's
    path = re.search(r"PATH=(\S+)", env)[1]
    assert path.split(":")[0] == f"{venv}/bin"
    assert "RUN_PYTHON_SDK_IN_DEFAULT_ENVIRONMENT=1" in env


def test_the_image_keeps_freed_memory_as_daian_does(instructions):
    """KFP's executor and Beam's workers do not start through `daian`: glibc reads the
    same malloc settings from the environment (tests/unit/test_allocator.py checks
    that this value works)."""
    env = " ".join(i.args for i in _final_stage(instructions) if i.keyword == "ENV")
    assert re.search(r"GLIBC_TUNABLES=(\S+)", env)[1] == allocator.GLIBC_TUNABLES_VALUE


def test_the_wheel_stage_builds_the_wheel_without_dependencies(instructions):
    wheel = _stage(instructions, I.WHEEL_STAGE)
    runs = " ".join(i.args for i in wheel if i.keyword == "RUN")
    assert "pip wheel" in runs and "--no-deps" in runs and "--wheel-dir /dist" in runs
    final = _final_stage(instructions)
    assert any(c.from_stage == I.WHEEL_STAGE and c.sources == ["/dist/"]
               for c in I.copies(final))


def test_the_image_has_a_compiler_and_the_infra_check_runner_built(instructions):
    """InfraCheck compiles serving/cc/saved_model_runner.cc: the image installs g++ and
    builds it once, after the package is installed (the build imports it)."""
    final = _final_stage(instructions)
    runs = [i.args for i in final if i.keyword == "RUN"]
    install = next(k for k, r in enumerate(runs) if "daian_tf-*.whl" in r)
    build = next(k for k, r in enumerate(runs) if "build_runner()" in r)
    assert install < build
    assert re.search(r"apt-get install -y --no-install-recommends g\+\+", runs[build])
    assert "from serving.cc_loader import build_runner" in runs[build]
