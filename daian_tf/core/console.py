"""What a `daian` run prints: our own lines, and the libraries' only when they matter.

`setup_console(verbose, log_file)` is called by the CLI before anything imports
TensorFlow (the C++ log level is read once, when TensorFlow loads), so this module imports
no TensorFlow, Keras, Beam or TFX at module level (only `absl.logging`, inside a function).

Quiet (the default), each silenced item with the reason it is noise:

C++ logging (environment variables, inherited by child processes; a value the user set
already is kept):
- ``TF_CPP_MIN_LOG_LEVEL=3``: TensorFlow's C++ log keeps FATAL only. Level 2 (ERROR)
  is not enough: the CUDA build logs "Unable to register cuFFT/cuDNN/cuBLAS factory"
  at E level on every import (plugins registered twice, harmless, with or without a
  GPU), and "oneDNN supports DT_INT64 only on platforms with AVX-512" is E level too
  (a fallback, not a failure). A real TensorFlow error reaches us as a Python exception
  with the same message, so nothing is lost; `--verbose` shows the C++ log.
- ``GRPC_VERBOSITY=ERROR``: gRPC's C core logs its start-up at INFO/WARNING ("All log
  messages before absl::InitializeLog() is called are written to STDERR" comes from the
  absl logging inside gRPC and TensorFlow).
- ``GLOG_minloglevel=2``: the same for the glog-based libraries (TFX-BSL, ML Metadata).

C++ lines that no level reaches: TensorFlow 2.16 logs part of its C++ (grappler's cost
model) through absl's C++ logging, which reads no environment variable and writes to
file descriptor 2 directly ("All log messages before absl::InitializeLog() ..." and
"W0000 ... op_level_cost_estimator.cc ... Error in PredictCost()"). `filter_cxx_stderr`
puts a small filter process between file descriptor 2 and the terminal: it drops the
lines of `CXX_NOISE` (to the log file when there is one) and passes everything else,
byte for byte and at once (tracebacks, our errors, a crash's last words: the filter is a
separate process that ignores SIGINT/SIGTERM and drains the pipe until every writer is
gone). `DAIAN_STDERR_FILTER=0` or `--verbose` turns it off.

Python warnings (`warnings` is routed into `logging`, logger ``py.warnings``, so a log
file keeps them) and library log records, dropped from the console by
`NoiseFilter` when they match `NOISE` (each with its reason, below). Records below
WARNING of any logger but ours (`OUR_LOGGERS`) never reach the console (TFX, Beam and TensorFlow log their progress at
INFO; `tfx_pipeline/progress.py` turns TFX's into our own lines). Anything else, every
ERROR and every exception with its traceback is printed as before: only known noise is
silenced.

Exit: Beam's `apache_beam.utils.shared` keeps the object a DoFn last acquired alive in a
module global (`_shared_map._keepalive`): after an in-process pipeline that is TFMA's
loaded SavedModel, hundreds of TensorFlow functions that would otherwise be freed while
Python tears its modules down, in whatever order; when TensorFlow's function registry is
gone first, each prints "Exception ignored in AtomicFunction.__del__ ... TypeError:
'NoneType' object is not subscriptable" (harmless, the process is ending).
`release_at_exit` drops that reference and collects at exit, while every module is still
there, so they are freed cleanly.

`verbose=True` silences nothing: the environment is left alone, the libraries log at
INFO to stderr. `log_file=PATH` keeps the console quiet and writes every library log
record (INFO and up, noise included, with times) and every Python warning to PATH.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import List, NamedTuple, Optional

# environment of the C++ loggers in quiet mode (see the module docstring)
QUIET_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "GRPC_VERBOSITY": "ERROR",
    "GLOG_minloglevel": "2",
}

# child Python processes (Beam workers with --direct_running_mode=multi_processing)
# inherit this instead of our logging set-up; prefix matches, no colons or commas.
QUIET_PYTHONWARNINGS = ("ignore:You are using a non-supported Python version:"
                        "FutureWarning")

# our loggers; every other logger is a library's, whose records below WARNING never
# reach a quiet console
OUR_LOGGERS = ("daian_tf", "tfx_pipeline", "serving", "__main__")


class Noise(NamedTuple):
    logger: str  # logger name (prefix); "py.warnings" for Python warnings
    pattern: str  # regular expression searched in the formatted message
    reason: str


NOISE: List[Noise] = [
    # Python warnings
    Noise("py.warnings", r"FutureWarning: You are using a non-supported Python version",
          "google-api-core, once per google-cloud package imported by TFX/Beam: the "
          "TFX 1.16 stack needs Python 3.10"),
    Noise("py.warnings", r"FutureWarning: Support for google-cloud-storage < 3\.0\.0",
          "google-cloud-aiplatform (imported by TFX) about a version the TFX 1.16 pins "
          "choose"),
    Noise("py.warnings", r"UserWarning: Your input ran out of data; interrupting "
          r"training",
          "Keras 3 at the end of every first pass over a tf.data input of unknown "
          "length; our fits pass steps_per_epoch only with a repeating input, which "
          "cannot run out"),
    Noise("py.warnings", r"DeprecationWarning|PendingDeprecationWarning",
          "deprecations inside the libraries (pkg_resources, protobuf, Beam, TFX); "
          "nothing a user of daian can change"),
    Noise("py.warnings", r"Tensorflow Addons|tensorflow_addons|TFA has entered",
          "TFMA/TFX probe for the retired tensorflow-addons"),
    Noise("py.warnings", r"SwigPyPacked|SwigPyObject|swigvarlink",
          "SWIG-generated extension types without __module__ (Python 3.10 + pyarrow)"),
    # absl (TFX, TFMA, TF-Transform and TensorFlow log through absl's Python logger)
    Noise("absl", r"`custom_executor_spec` is deprecated",
          "TFX on the ExampleGen that runs our Beam sample builder as its executor; "
          "the supported way for a custom executor in TFX 1.16"),
    Noise("absl", r"ArtifactQuery\.property_predicate is not supported",
          "TFX's input resolution with the local SQLite ML Metadata, once per input "
          "channel; the query falls back to a full match"),
    Noise("absl", r"Tables initialized inside a tf\.function +will be re-initialized",
          "TensorFlow while TF-Transform traces its vocabularies; the tables are "
          "built once per saved graph, not per call"),
    Noise("absl", r"Examples artifact does not have payload_format custom property",
          "TFX reading our TFRecords of tf.Example (the format it falls back to is "
          "the one we write)"),
    Noise("absl", r"Function `_wrapped_model` contains input name\(s\)|"
          r"Found untraced functions such as|"
          r"Compiled the loaded model, but the compiled metrics have yet to be built|"
          r"No training configuration found in save file|"
          r"Skipping full serialization of Keras layer|"
          r"Importing a function .* with ops with unsaved custom gradients",
          "TensorFlow's SavedModel save/load of Keras 3 models (signatures, traces, "
          "metrics not needed to serve)"),
    Noise("absl", r"tensorflow_text is not available|"
          r"Tensorflow version .* is not supported",
          "TFX/TFMA optional-dependency probes"),
    Noise("tensorflow", r"From .*: The name tf\.\w+ is deprecated|"
          r"is deprecated and will be removed in a future version",
          "TensorFlow deprecation notices raised inside TF-Transform and TFMA"),
    Noise("tensorflow", r"SavedModel saved prior to TF 2\.5 detected when loading Keras model",
          "TFMA's Evaluator first tries to load the SavedModel as a Keras model; ours is "
          "a SavedModel with signatures, which it then evaluates through "
          "`serving_default`"),
    Noise("apache_beam", r"This output type hint will be ignored|"
          r"Make sure that locally built Python SDK docker image|"
          r"Missing pipeline option \(runner\)|"
          r"is not a valid name of Beam type|"
          r"Using provided Python SDK container image",
          "Beam's DirectRunner start-up and type-hint notices"),
    Noise("apache_beam", r"Unparseable argument: --flink_conf_dir=",
          "Beam's Python SDK about a Flink job-server option it does not know itself; "
          "it passes the option on to the job server, which applies it "
          "(daian_tf/data/beam_runners.py sets it for the embedded cluster)"),
    Noise("root", r"Waiting for grpc channel to be ready at ",
          "Beam's portable runners (--runner=FlinkRunner) poll the job server's port "
          "while its JVM starts (5-10 s); a JVM that fails to start is an error of its "
          "own, with its exit status"),
]

# C++ lines that reach stderr without passing through Python (see the docstring)
CXX_NOISE: List[Noise] = [
    Noise("c++", r"Unable to register cu(FFT|DNN|BLAS) factory",
          "XLA's CUDA plugins registered twice at import (E level)"),
    Noise("c++", r"oneDNN custom operations are on|oneDNN supports DT_INT64 only",
          "oneDNN start-up and fallback notices"),
    Noise("c++", r"TF-TRT Warning: Could not find TensorRT",
          "TensorRT is not used"),
    Noise("c++", r"This TensorFlow binary is optimized to use available CPU "
          r"instructions", "CPU feature notice"),
    Noise("c++", r"computation placer already registered",
          "XLA plugin registered twice at import"),
    Noise("c++", r"All log messages before absl::InitializeLog\(\) is called",
          "absl C++ logging's first line"),
    Noise("c++", r"op_level_cost_estimator\.cc.*Error in PredictCost\(\)",
          "grappler's cost model has no estimate for an op of unknown shape "
          "(Softmax); the graph still runs"),
    Noise("c++", r"coordination_service_agent\.cc.*Coordination agent has successfully "
          r"connected", "a multi-worker process joined its cluster (I level, once a "
          "worker; training/multi_worker.py)"),
]

_CONSOLE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s %(filename)s:%(lineno)d] %(message)s"


def _is_ours(name: str) -> bool:
    return any(name == ours or name.startswith(ours + ".") for ours in OUR_LOGGERS)


class NoiseFilter(logging.Filter):
    """Drops, on the handler it is attached to, library records below WARNING and the
    known noise of `NOISE`; keeps ours, every ERROR and everything unknown."""

    def __init__(self, noise: Optional[List[Noise]] = None):
        super().__init__()
        self._noise = [(n.logger, re.compile(n.pattern))
                       for n in (NOISE if noise is None else noise)]

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if _is_ours(name):
            return True
        if record.levelno >= logging.ERROR:
            return True
        if record.levelno < logging.WARNING:
            return False
        try:
            message = record.getMessage()
        except Exception:  # a library's bad format string: show it, it is not noise
            return True
        return not any((name == logger or name.startswith(logger + "."))
                       and pattern.search(message) for logger, pattern in self._noise)


def is_noise_line(line: str) -> bool:
    """Whether a line of stderr is known noise (Python warning, library log or C++ log
    line); for tests and for reading old logs."""
    for n in NOISE + CXX_NOISE:
        if re.search(n.pattern, line):
            return True
    return False


_STATE: dict = {}


def quiet_libraries() -> None:
    """The environment of the quiet mode (C++ log levels); call before TensorFlow is
    imported. Values the user set are kept."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    current = os.environ.get("PYTHONWARNINGS")
    if not current:
        os.environ["PYTHONWARNINGS"] = QUIET_PYTHONWARNINGS
    elif QUIET_PYTHONWARNINGS not in current:
        os.environ["PYTHONWARNINGS"] = f"{current},{QUIET_PYTHONWARNINGS}"


# the filter process of `filter_cxx_stderr`: argv[1] a log file ("" none), then the
# patterns; drops matching lines, passes the rest; an incomplete line (a progress bar's
# carriage return) goes out when nothing more arrives within 0.1 s
_FILTER_CODE = r"""
import os, re, select, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
log = open(sys.argv[1], "ab") if sys.argv[1] else None
noise = re.compile("|".join("(?:%s)" % p for p in sys.argv[2:]).encode())
out = sys.stdout.fileno()
def write(data):
    while data:
        data = data[os.write(out, data):]
start = re.compile(rb"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] |"
                   rb"[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ |WARNING: All log messages)")
def emit(line, held=0):
    # `held` bytes of the line were an unfinished line before it: unless the whole
    # line is one C++ log line, they are someone else's and always pass
    if held and not start.match(line):
        write(line[:held])
        line = line[held:]
    if noise.search(line):
        # an unfinished line that reached the pipe in the same read as a C++ log line
        # (a loaded machine): what comes before the log line's prefix is someone else's
        first = start.search(line)
        if first and first.start() > 0:
            write(line[:first.start()])
            line = line[first.start():]
        if log:
            log.write(line if line.endswith(b"\n") else line + b"\n")
            log.flush()
    else:
        write(line)
tail = b""
while True:
    ready = select.select([0], [], [], 0.1 if tail else None)[0]
    if not ready:
        write(tail)
        tail = b""
        continue
    chunk = os.read(0, 65536)
    if not chunk:
        break
    held = len(tail)
    *lines, tail = (tail + chunk).split(b"\n")
    for i, line in enumerate(lines):
        emit(line + b"\n", held if i == 0 else 0)
if tail:
    emit(tail)
"""


def filter_cxx_stderr(log_file: Optional[str] = None) -> bool:
    """Routes file descriptor 2 through the filter process (see the module docstring);
    returns whether it did. Call before TensorFlow is imported; once per process."""
    import atexit
    import subprocess

    if _STATE.get("filter") or os.environ.get("DAIAN_STDERR_FILTER", "1") == "0":
        return False
    try:
        sys.stderr.flush()
        original = os.dup(2)
    except (OSError, ValueError, AttributeError):
        return False  # no real stderr (embedded, closed): leave it alone
    try:
        proc = subprocess.Popen(
            [sys.executable, "-S", "-E", "-c", _FILTER_CODE,
             os.path.abspath(log_file) if log_file else ""]
            + [n.pattern for n in CXX_NOISE],
            stdin=subprocess.PIPE, stdout=original, stderr=original, close_fds=True)
    except OSError:
        os.close(original)
        return False
    os.dup2(proc.stdin.fileno(), 2)
    _STATE["filter"] = proc

    def _drain() -> None:  # our last lines before the shell prompt
        try:
            sys.stderr.flush()
        except Exception:
            pass
        os.dup2(original, 2)
        proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except Exception:
            pass

    atexit.register(_drain)
    return True


def _release_shared_objects() -> None:
    """Frees what Beam's `shared` module keeps alive (see "Exit" in the module
    docstring) while the modules are intact."""
    import gc

    shared = sys.modules.get("apache_beam.utils.shared")
    shared_map = getattr(shared, "_shared_map", None)
    if shared_map is not None and hasattr(shared_map, "_keepalive"):
        shared_map._keepalive = (None, None)
    gc.collect()


def release_at_exit() -> None:
    """Registers `_release_shared_objects` to run at exit; once per process."""
    import atexit

    if not _STATE.get("release"):
        atexit.register(_release_shared_objects)
        _STATE["release"] = True


def setup_console(verbose: bool = False, log_file: Optional[str] = None) -> None:
    """Sets up what a run prints (see the module docstring). Idempotent: a second call
    replaces the handlers of the first."""
    root = logging.getLogger()
    for handler in _STATE.pop("handlers", []):
        root.removeHandler(handler)
        handler.close()

    if not verbose:
        quiet_libraries()
        filter_cxx_stderr(log_file)
    release_at_exit()  # after the filter's own exit step: atexit runs it first
    # Python warnings become `py.warnings` records, so that the console can drop the
    # known ones and a log file keeps them all.
    logging.captureWarnings(True)

    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter(_CONSOLE_FORMAT))
    handlers: List[logging.Handler] = [console]
    console.setLevel(logging.INFO)  # our INFO (`daian serve`'s log) shows
    if not verbose:
        console.addFilter(NoiseFilter())
    if log_file:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        to_file = logging.FileHandler(log_file)
        to_file.setLevel(logging.INFO)
        to_file.setFormatter(logging.Formatter(_FILE_FORMAT))
        handlers.append(to_file)
    for handler in handlers:
        root.addHandler(handler)
    _STATE["handlers"] = handlers

    detailed = verbose or bool(log_file)
    root.setLevel(logging.INFO if detailed else logging.WARNING)
    # absl's Python logger (TFX, TF-Transform, TFMA log through it): INFO when someone
    # wants the full output
    from absl import logging as absl_logging

    absl_logger = logging.getLogger("absl")
    absl_logger.__dict__.pop("setLevel", None)
    absl_logging.set_verbosity(absl_logging.INFO if detailed else absl_logging.WARNING)
    if detailed:
        # held there: TFX's Beam executors parse absl's flags, which would set it back
        # to the --verbosity default (WARNING) in the middle of the run
        absl_logger.setLevel = lambda level: None
    # a root handler exists now, so TensorFlow adds none of its own to "tensorflow"
    # and absl does not call logging.basicConfig()
