"""A non-editable install (a wheel built from a clean copy of the sources, installed
into a temporary directory) carries the default config and runs `daian simulate`."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("setup.py", "pyproject.toml", "README.md", "daian_tf", "tfx_pipeline",
           "serving")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """`pip install --target` of a copy of the sources (no dependencies: the test's
    environment has them); returns (target directory, environment to run it with)."""
    root = tmp_path_factory.mktemp("install")
    src, target = root / "src", root / "site"
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(path, src / name)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--no-index", "--target", str(target),
                    str(src)], check=True, timeout=600)
    shutil.rmtree(src)  # nothing of the sources is left to import but the install
    env = dict(os.environ, PYTHONPATH=str(target), TF_CPP_MIN_LOG_LEVEL="2")
    return target, env


def test_the_installed_package_is_the_one_imported(installed, tmp_path):
    target, env = installed
    out = subprocess.run(
        [sys.executable, "-c", "import daian_tf.core.config as c; "
         "print(c.DEFAULT_CONFIG_FILE); print(c.DEFAULT_CONFIG_FILE.exists())"],
        cwd=tmp_path, env=env, check=True, capture_output=True, text=True).stdout
    path, exists = out.split()
    assert Path(path).is_relative_to(target) and exists == "True"


def test_daian_simulate_runs_from_the_install_with_the_packaged_default(installed,
                                                                        tmp_path):
    target, env = installed
    script = target / "bin" / "daian"
    assert script.exists()
    run = subprocess.run([sys.executable, str(script), "simulate", str(tmp_path / "raw"),
                          "--scale", "0.05"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    default = yaml.safe_load((target / "daian_tf" / "core" / "base.yaml").read_text())
    with open(tmp_path / "raw" / "users.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # the default's world (400 users × 0.05) and its profile columns
    assert len(rows) == round(default["simulation"]["num_users"] * 0.05)
    assert set(default["samples"]["user_columns"]) <= set(rows[0])
    for name in ("items.csv", "item_embeddings.parquet", "behaviors.csv",
                 "impressions.csv", "truth.csv"):
        assert (tmp_path / "raw" / name).stat().st_size > 0


def test_the_installed_cli_has_the_commands_of_the_packages_above(installed, tmp_path):
    """`pipeline`, `quickstart` and `serve` come through the installed entry points."""
    target, env = installed
    run = subprocess.run([sys.executable, str(target / "bin" / "daian"), "--help"],
                         cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    for command in ("simulate", "build-samples", "train", "experiment", "pipeline",
                    "quickstart", "serve"):
        assert command in run.stdout
