"""What a new user sees: `daian quickstart` on a tiny world, run as a new user runs it
(no TF_CPP_MIN_LOG_LEVEL, no PYTHONWARNINGS), prints our lines and no library noise;
`--verbose` keeps the libraries' output."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]

# a world small enough for a couple of minutes on two cores, every component still runs
TINY = """\
simulation: {num_users: 30, num_items: 200, num_categories: 16, num_shops: 20,
             request_days: 3, history_days: 3}
samples: {history_days: 3, max_seq_len: 10}
model: {hidden_units: [16], attention_units: [8], embedding_dim: 8, intent_dim: 8,
        attention_width: 16, attention_heads: 2, uim_hidden_units: [16],
        projection_units: [16], gate_hidden_units: [16], explicit_max_steps: 4}
train: {epochs: 1, stage1_epochs: 1, stage2_epochs: 1, stage3_epochs: 1,
        batch_size: 256}
"""

# stderr lines the libraries print that are known noise (observed on a run without the
# quiet console; the reasons are in daian_tf/core/console.py); written out here, not
# imported from there, so that the check does not trust the code it checks
NOISE = [
    r"Unable to register cu(FFT|DNN|BLAS) factory",
    r"oneDNN custom operations are on",
    r"oneDNN supports DT_INT64 only",
    r"TF-TRT Warning",
    r"This TensorFlow binary is optimized",
    r"All log messages before absl::InitializeLog",
    r"computation placer already registered",
    r"op_level_cost_estimator",
    r"Logging before flag parsing",
    # objects freed during interpreter teardown (console.release_at_exit)
    r"Exception ignored in",
    # library log records, in Python's default format and in the console's
    r"(^|\d )(WARNING|INFO)[: ](absl|tensorflow|apache_beam|tfx|py\.warnings)\b",
    r"UserWarning",
    r"DeprecationWarning",
    r"FutureWarning",
    r"non-supported Python version",
    r"warnings\.warn\(",
    r"^\s+self\._interrupted_warning\(\)",
    # TensorFlow's and absl's C++ log formats, any level
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] ",
    r"^[IWE]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ ",
]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "PYTHONWARNINGS", "GRPC_VERBOSITY",
                        "GLOG_minloglevel")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _daian(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """The `daian` console script of this environment (its entry point), or the same
    `main` through `python -m` where the script is not installed."""
    script = Path(sys.executable).parent / "daian"
    cmd = ([sys.executable, str(script)] if script.exists()
           else [sys.executable, "-m", "daian_tf.cli"])
    return subprocess.run(cmd + list(args), cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    root = tmp_path_factory.mktemp("console")
    config = root / "tiny.yaml"
    config.write_text(TINY)
    run = _daian("quickstart", "--workdir", str(root / "qs"), "--config", str(config))
    return root, run


def _node_ids(metadata: Path) -> list:
    """The ids of the pipeline's components, from its ML Metadata (node contexts)."""
    with sqlite3.connect(metadata) as db:
        names = [row[0] for row in db.execute(
            "SELECT c.name FROM Context c JOIN Type t ON c.type_id = t.id "
            "WHERE t.name = 'node'")]
    return sorted(name.split(".", 1)[1] for name in names)


def test_quickstart_exits_0(quickstart):
    _, run = quickstart
    assert run.returncode == 0, run.stderr[-5000:]


def test_quickstart_stderr_has_no_known_library_noise(quickstart):
    _, run = quickstart
    lines = run.stderr.splitlines()
    noisy = [line for line in lines if any(re.search(p, line) for p in NOISE)]
    assert not noisy, f"{len(noisy)} of {len(lines)} stderr lines are library " \
        "noise:\n" + "\n".join(noisy[:40])


def test_quickstart_stdout_shows_each_component_and_the_tables(quickstart):
    root, run = quickstart
    assert run.returncode == 0, run.stderr[-5000:]
    out = run.stdout
    nodes = _node_ids(root / "qs" / "pipeline" / "metadata.sqlite")
    assert nodes
    table = out.split("] finished in", 1)[-1]
    for node in nodes:
        assert re.search(rf"^\[pipeline \d\d:\d\d:\d\d\] {node}: started$", out,
                         re.M), f"no start line of {node}:\n{out}"
        assert re.search(rf"^\[pipeline \d\d:\d\d:\d\d\] {node}: "
                         rf"(done in \d+\.\d s|cached)", out, re.M), \
            f"no result line of {node}:\n{out}"
        assert re.search(rf"^{node} +(ran|cached) +\d+\.\d$", table, re.M), \
            f"{node} is not in the summary table:\n{table}"
    assert re.search(r"^total +\d+\.\d$", table, re.M)
    assert "| model | AUC | GAUC | logloss |" in out  # the quick start's own table


def test_verbose_keeps_the_library_output(quickstart, tmp_path):
    """A cheap command (the Beam sample builder on the quick start's tiny raw logs):
    with --verbose its stderr carries library log records, which a quiet run never
    prints (checked on the quick start's stderr)."""
    root, run = quickstart
    assert run.returncode == 0, run.stderr[-5000:]
    library = re.compile(r"(^|\d )(INFO|WARNING)[: ](apache_beam|absl|tensorflow)[.: ]",
                         re.M)
    assert not library.search(run.stderr)
    verbose = _daian("--verbose", "build-samples", str(root / "qs" / "raw"),
                     str(tmp_path / "samples"), "--config", str(root / "tiny.yaml"),
                     timeout=600)
    assert verbose.returncode == 0, verbose.stderr[-5000:]
    assert library.search(verbose.stderr), verbose.stderr[-3000:]
