"""A SavedModel run by TensorFlow's C++ loader, as `tensorflow_model_server` runs it.

Our local server loads an export with `tf.saved_model.load` (Python, object graph). TF
Serving does not: it calls `tensorflow::LoadSavedModel`, which runs the SavedModel's
restore op and init op into a `Session`, and answers `Predict` with `Session::Run` on
the signature's tensor names. An export can work in the first and fail in the second:
a Keras 3 model tracked by a `tf.Module` exports its variables twice, and the restore
op fills only the copy the signatures do not read, so every request fails with "Could
not find variable" (keras #20095; `daian_tf/export/saved_model.py` avoids it).

`run_signatures` checks an export on the C++ path itself: `cc/saved_model_runner.cc`,
compiled once against the installed TensorFlow's headers and libraries
(`tf.sysconfig`) with the C++ compiler (`$CXX`, else `g++`) and cached under
`$XDG_CACHE_HOME/daian-tf/cc/` (else `~/.cache/...`), keyed by the source, the
TensorFlow version and the compiler.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from serving.contract import (INPUT_CANDIDATES, INPUT_CONTEXT, INPUT_EXAMPLES,
                              SIGNATURE_SERVING_DEFAULT)

SOURCE = Path(__file__).resolve().parent / "cc" / "saved_model_runner.cc"
LOAD_FAILED = 3  # the runner's exit status when LoadSavedModel fails


class CcLoaderError(RuntimeError):
    """The runner could not be built, or the SavedModel did not load in C++."""


class NoCompilerError(CcLoaderError):
    """No C++ compiler to build the runner with."""


def _cache_root() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache")
    return Path(root) / "daian-tf" / "cc"


def _compiler() -> str:
    name = os.environ.get("CXX", "g++")
    path = shutil.which(name)
    if path is None:
        raise NoCompilerError(
            f"no C++ compiler {name!r} on PATH (set CXX): the check of a SavedModel "
            "under TensorFlow's C++ loader compiles a small runner against TensorFlow")
    return path


def build_runner(cache_dir: Optional[Path] = None) -> Path:
    """The compiled runner, built on first use (about 10 s) and cached.

    Raises:
        NoCompilerError: no compiler.
        CcLoaderError: the build failed (with the compiler's output).
    """
    import tensorflow as tf

    compiler = _compiler()
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True,
                             check=False).stdout.splitlines()[:1]
    key = hashlib.sha256(SOURCE.read_bytes() + tf.__version__.encode()
                         + repr(version).encode()).hexdigest()[:12]
    directory = (cache_dir or _cache_root()) / key
    runner = directory / "saved_model_runner"
    if runner.exists():
        return runner
    directory.mkdir(parents=True, exist_ok=True)
    tf_dir = Path(tf.sysconfig.get_lib())
    partial = directory / f".saved_model_runner.{os.getpid()}"
    command = [compiler, "-O1", str(SOURCE), "-o", str(partial),
               *tf.sysconfig.get_compile_flags(), f"-L{tf_dir}",
               # the session factory registers itself in libtensorflow_cc's static
               # initialisers: linked even though no symbol of it is named
               "-Wl,--no-as-needed", "-l:libtensorflow_cc.so.2",
               "-l:libtensorflow_framework.so.2", f"-Wl,-rpath,{tf_dir}"]
    built = subprocess.run(command, capture_output=True, text=True, check=False)
    if built.returncode != 0:
        partial.unlink(missing_ok=True)
        raise CcLoaderError(f"building {SOURCE.name} failed ({' '.join(command)}):\n"
                            f"{built.stderr[-4000:]}")
    os.replace(partial, runner)  # atomic: a concurrent build finds a whole file
    return runner


Call = Tuple[str, Mapping[str, object]]  # (signature, {input alias: array-like})


def run_signatures(export_dir: Union[str, Path], calls: Sequence[Call],
                   runner: Optional[Path] = None, timeout_s: float = 600,
                   timings: Optional[list] = None
                   ) -> list[Union[dict[str, np.ndarray], str]]:
    """Loads `export_dir` with `tensorflow::LoadSavedModel` and runs each call.

    Args:
        export_dir: a SavedModel version directory.
        calls: `(signature name, {input alias: value})`; each value becomes a
            `TensorProto` as a gRPC client sends it (`tf.make_tensor_proto`).
        runner: a built runner (`build_runner()` by default).
        timeout_s: limit for the whole run.
        timings: if given, the wall time of each successful call's `Session::Run`
            (ms) is appended to it.

    Returns:
        For each call, `{output alias: array}`, or the error text of a call that
        failed (e.g. `FAILED_PRECONDITION: Could not find variable ...`).

    Raises:
        CcLoaderError: the runner could not be built or the SavedModel did not load
            (the loader's status in the message).
    """
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2

    runner = runner or build_runner()
    with tempfile.TemporaryDirectory(prefix="cc-loader-") as tmp:
        inputs_dir, outputs_dir = Path(tmp, "in"), Path(tmp, "out")
        inputs_dir.mkdir()
        outputs_dir.mkdir()
        lines = []
        for i, (signature, inputs) in enumerate(calls):
            words = [signature, str(outputs_dir / f"call{i}")]
            for alias, value in inputs.items():
                path = inputs_dir / f"call{i}.{alias}.pb"
                path.write_bytes(tf.make_tensor_proto(value).SerializeToString())
                words.append(f"{alias}={path}")
            lines.append(" ".join(words))
        calls_file = Path(tmp, "calls.txt")
        calls_file.write_text("\n".join(lines) + "\n")
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get(
            "TF_CPP_MIN_LOG_LEVEL", "2"))
        done = subprocess.run([str(runner), str(export_dir), str(calls_file)],
                              capture_output=True, text=True, timeout=timeout_s,
                              env=env, check=False)
        if done.returncode != 0:
            what = ("did not load" if done.returncode == LOAD_FAILED
                    else f"runner exited {done.returncode}")
            raise CcLoaderError(f"{export_dir} {what} under TensorFlow's C++ loader: "
                                f"{done.stderr.strip()[-4000:]}")
        results: list[Union[dict[str, np.ndarray], str]] = []
        for i in range(len(calls)):
            error = outputs_dir / f"call{i}.error"
            if error.exists():
                results.append(error.read_text())
                continue
            results.append({
                path.name[len(f"call{i}."):-len(".pb")]: tf.make_ndarray(
                    tensor_pb2.TensorProto.FromString(path.read_bytes()))
                for path in outputs_dir.glob(f"call{i}.*.pb")})
            if timings is not None:
                timings.append(int((outputs_dir / f"call{i}.micros").read_text()) / 1e3)
        return results


def signature_calls(examples: Sequence[bytes],
                    signatures: Mapping[str, Sequence[str]]) -> list[Call]:
    """One call per signature on serialized examples: `rank` gets the first as its
    context and all as candidates; the others get all as `examples`.

    Args:
        examples: serialized serving `tf.Example`s.
        signatures: signature name → its input aliases.
    """
    # object arrays: a fixed-width bytes array would cut trailing NUL bytes
    every = np.array(list(examples), dtype=object)
    calls = []
    for name, inputs in sorted(signatures.items()):
        if set(inputs) == {INPUT_CONTEXT, INPUT_CANDIDATES}:
            calls.append((name, {INPUT_CONTEXT: every[:1], INPUT_CANDIDATES: every}))
        elif set(inputs) == {INPUT_EXAMPLES}:
            calls.append((name, {INPUT_EXAMPLES: every}))
    return calls


@dataclass
class CheckedCall:
    """One call of `check_export`: where it came from, and how the two loaders agreed."""

    source: str  # "warmup request 0", "examples"
    signature: str
    rows: int  # the length of its longest input
    max_abs_diff: float  # over every output, C++ against `ServedModel`


def version_dir(path: Union[str, Path]) -> Path:
    """`path` if it is a SavedModel directory, else its highest numeric version
    directory (the one TF Serving's default policy serves).

    Raises:
        ValueError: `path` is neither.
    """
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    versions = [d for d in path.iterdir() if d.name.isdigit()] if path.is_dir() else []
    if not versions:
        raise ValueError(f"{path} is neither a SavedModel directory nor a base path "
                         "of numeric version directories")
    return max(versions, key=lambda d: int(d.name))


def check_export(export_dir: Union[str, Path], examples: Sequence[bytes] = (),
                 atol: float = 1e-5) -> list[CheckedCall]:
    """Runs an export under TensorFlow's C++ loader and checks it answers as served here.

    The calls: the export's warmup requests (what TF Serving replays before it serves
    a version, `--enable_model_warmup`), then every signature on `examples`, or on the
    serialized examples of the warmup requests when `examples` is empty
    (`signature_calls`). Each call's outputs from the C++ runner are compared with
    `ServedModel` (this package's server) on the same inputs.

    Returns:
        One `CheckedCall` per call.

    Raises:
        CcLoaderError: the export does not load in C++, a call fails there (its
            TensorFlow status in the message), or the outputs differ by more than
            `atol`.
        ValueError: no warmup request and no examples: nothing to check with.
    """
    import tensorflow as tf

    from serving.model_manager import read_warmup_requests
    from serving.served_model import ServedModel

    export_dir = Path(export_dir)
    served = ServedModel(export_dir, version=0)
    warmup = read_warmup_requests(export_dir)
    calls, sources = [], []
    for i, request in enumerate(warmup):
        calls.append((request.model_spec.signature_name or SIGNATURE_SERVING_DEFAULT,
                      {k: tf.make_ndarray(v) for k, v in request.inputs.items()}))
        sources.append(f"warmup request {i}")
    if not examples:
        examples = [bytes(e) for _, inputs in calls
                    for e in np.asarray(inputs.get(INPUT_EXAMPLES, [])).reshape(-1)]
    if not calls and not examples:
        raise ValueError(f"{export_dir}: no warmup requests and no examples to check with")
    signatures = {name: list(served.signature(name).structured_input_signature[1])
                  for name in served.signature_names}
    for call in signature_calls(examples, signatures):
        calls.append(call)
        sources.append("examples")
    results = run_signatures(export_dir, calls)
    checked = []
    for source, (signature, inputs), result in zip(sources, calls, results):
        if isinstance(result, str):
            raise CcLoaderError(f"{export_dir}: {source}, signature {signature!r}, "
                                f"failed under TensorFlow's C++ loader: {result}")
        expected = served.run(signature, inputs, sorted(result))
        diff = max(float(np.max(np.abs(result[k].astype(np.float64)
                                       - expected[k].astype(np.float64)), initial=0.0))
                   for k in result)
        if not diff <= atol:
            raise CcLoaderError(f"{export_dir}: {source}, signature {signature!r}: the "
                                f"C++ loader's outputs differ from tf.saved_model.load's "
                                f"by {diff:.3g} (> {atol})")
        rows = max(int(np.asarray(v).size) for v in inputs.values())
        checked.append(CheckedCall(source, signature, rows, diff))
    return checked
