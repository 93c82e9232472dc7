"""End-to-end workflows on the library: what `daian train`, the experiments and the quick
start call.

- `prepare_data`: raw logs → the sample builder (Beam) → Transform → a `PreparedData`;
- `transform_built_samples`: built samples → Transform → a `PreparedData`, with the I-2
  range of the builder's `report.json` (never estimated again);
- `train_from_samples` (`daian train`): transform, fit, evaluate, export.

With `train.distribution: multi_worker` every worker runs `train_from_samples` (`daian
train ... --workers N` starts them on one machine): the chief (worker 0) transforms the
samples while the others wait, all of them fit (`training.fit.fit_model`), and the chief
alone evaluates, exports and writes the summary while the others wait for it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from daian_tf.core import similarity_range as SR
from daian_tf.core.errors import DaianInputError
from daian_tf.core.names import (EVAL, REPORT_FILE, SAMPLES_GLOB, SPLITS, TRAIN,
                                  VALIDATION)
from daian_tf.data.catalog import read_model_catalog
from daian_tf.data.dataset import file_shard, matching_files
from daian_tf.data.sample_builder import run_build_samples
from daian_tf.data.sample_report import check_splits_hold_requests
from daian_tf.data.transform_beam import (TRANSFORM_OUTPUT, TRANSFORM_OUTPUT_DIR,
                                          TRANSFORMED_DIR, transform_samples)
from daian_tf.evaluation.columns import popularity_metrics, predict_split
from daian_tf.evaluation.tables import ranking_metrics
from daian_tf.export.saved_model import export_serving_model
from daian_tf.models.factory import needs_catalog
from daian_tf.training import multi_worker as mw
from daian_tf.training.fit import fit_model, jsonable_history

# `daian train --workers N`: the cli reaches training through this layer
PeerFailed, WorkerFailed = mw.PeerFailed, mw.WorkerFailed
check_batch_size, launch_local = mw.check_batch_size, mw.launch_local

SERVING_MODEL_DIR = "serving_model"
SUMMARY_FILE = "train_summary.json"
CHECKPOINT_DIR = "checkpoints"
SAMPLES_DIR = "samples"
NUM_WARMUP_EXAMPLES = 4


@dataclass
class PreparedData:
    """One built and transformed data set."""

    num_levels: int
    train: str  # glob of transformed train TFRecords
    validation: str  # what fits choose by (best epoch, early stop)
    eval: str  # the held-out test split: reported on, never chosen by
    tf_transform_output: object
    sim_range: List[float]  # the sample builder's [lo, hi] (I-2)
    report: dict  # the sample builder's report
    transform_output_dir: str


def read_report(samples_dir: str) -> dict:
    """The sample builder's `report.json` of `samples_dir`, with a valid I-2 range."""
    path = Path(samples_dir) / REPORT_FILE
    if not path.exists():
        raise DaianInputError(f"{path} not found: is {samples_dir} the output of "
                              f"`daian build-samples`?")
    with open(path) as f:
        report = json.load(f)
    try:
        SR.check_range(report.get(SR.REPORT_KEY), f"{path} [{SR.REPORT_KEY!r}]")
    except ValueError as e:
        raise DaianInputError(str(e)) from None
    return report


def transform_built_samples(samples_dir: str, out_dir: str, cfg,
                            beam_args: Optional[Sequence[str]] = None) -> PreparedData:
    """Transform the sample builder's output with the range of its report."""
    import tensorflow_transform as tft

    samples = Path(samples_dir)
    for split in SPLITS:
        if not list((samples / split).glob(SAMPLES_GLOB)):
            raise DaianInputError(f"{samples / split}: no {SAMPLES_GLOB} files; is "
                                  f"{samples} the output of `daian build-samples`?")
    report = read_report(str(samples))
    check_splits_hold_requests(report, str(samples / REPORT_FILE))
    sim_range = list(SR.check_range(report[SR.REPORT_KEY]))
    paths = transform_samples(str(samples), out_dir, cfg, sim_range, beam_args)
    return PreparedData(cfg.samples.num_intent_levels, paths[TRAIN], paths[VALIDATION],
                        paths[EVAL], tft.TFTransformOutput(paths[TRANSFORM_OUTPUT]), sim_range,
                        report, paths[TRANSFORM_OUTPUT])


def read_transformed(samples_dir: str, out_dir: str, cfg) -> PreparedData:
    """The `PreparedData` of a transform that `transform_built_samples` already wrote
    into `out_dir` (multi-worker: the chief's, read by the other workers)."""
    import tensorflow_transform as tft

    report = read_report(samples_dir)
    out = Path(out_dir)
    return PreparedData(cfg.samples.num_intent_levels,
                        *(str(out / TRANSFORMED_DIR / split / SAMPLES_GLOB)
                          for split in (TRAIN, VALIDATION, EVAL)),
                        tft.TFTransformOutput(str(out / TRANSFORM_OUTPUT_DIR)),
                        list(SR.check_range(report[SR.REPORT_KEY])), report,
                        str(out / TRANSFORM_OUTPUT_DIR))


def _transform_once(strategy, samples_dir: str, out_dir: str, cfg,
                    beam_args) -> PreparedData:
    """The transform of `daian train`: run here without a strategy; with one, by the
    chief while the other workers wait, then read by them."""
    what = "transforming the samples"
    if strategy is None:
        return transform_built_samples(samples_dir, out_dir, cfg, beam_args)
    if not mw.is_chief(strategy):
        mw.barrier(strategy, ok=True, what=what)
        return read_transformed(samples_dir, out_dir, cfg)
    try:
        data = transform_built_samples(samples_dir, out_dir, cfg, beam_args)
    except BaseException:
        mw.barrier(strategy, ok=False, what=what)
        raise
    mw.barrier(strategy, ok=True, what=what)
    return data


def _shards(strategy, data: PreparedData) -> dict:
    """Which files each worker read, per split (`data.dataset.file_shard`)."""
    n = mw.num_workers(strategy)
    out = {}
    for split, pattern in ((TRAIN, data.train), (VALIDATION, data.validation),
                           (EVAL, data.eval)):
        files = matching_files(pattern)
        shards = [file_shard(files, (n, i)) for i in range(n)]
        out[split] = {"sharding": "data" if shards[0][1] else "file",
                      "files": {f"worker{i}": [Path(f).name for f in part]
                                for i, (part, _) in enumerate(shards)}}
    return out


def prepare_data(raw_dir: str, out_dir: str, cfg,
                 beam_args: Optional[Sequence[str]] = None) -> PreparedData:
    """Build samples from `raw_dir` into `out_dir/samples` and transform them."""
    samples = str(Path(out_dir) / SAMPLES_DIR)
    run_build_samples(raw_dir, samples, cfg.samples, list(beam_args or []))
    return transform_built_samples(samples, out_dir, cfg, beam_args)


def catalog_for(cfg, raw_dir: Optional[str]) -> Optional[Tuple[List[str], np.ndarray]]:
    """The model's multimodal catalog from `raw_dir`; None for models without one."""
    if not needs_catalog(cfg):
        return None
    if not raw_dir:
        raise DaianInputError("DAIAN needs the raw-log directory for its multimodal "
                              "catalog: pass --raw (the sample report names none)")
    return read_model_catalog(raw_dir)


def _first_examples(file_pattern: str, count: int) -> List[bytes]:
    files = sorted(tf.io.gfile.glob(file_pattern))
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP").take(count)
    return [x.numpy() for x in ds]


def train_from_samples(samples_dir: str, out_dir: str, cfg,
                       beam_args: Optional[Sequence[str]] = None,
                       raw_dir: Optional[str] = None) -> dict:
    """`daian train`: transform, fit, evaluate and export on built samples.

    Args:
        samples_dir: the sample builder's output: `train/`, `validation/` and `eval/`
            with `data-*.tfrecord.gz`, and `report.json`, whose `sim_range` is the I-2 range
            of the similarity bins and of the model.
        out_dir: where `transform_output/`, `transformed/`, `serving_model/<version>/`
            and `train_summary.json` go.
        cfg: the full `Config`.
        beam_args: Beam pipeline flags for the transform (e.g. `--direct_num_workers`).
        raw_dir: DAIAN only: the raw-log directory whose item_embeddings.parquet fills
            the multimodal catalog; None: the one the sample report names.

    Returns:
        The JSON-able summary also written to `out_dir/train_summary.json`: paths,
        the model's metrics on validation (what the fit chose by) and on eval (the
        held-out split), the popularity baseline's on eval, the fit history and
        the training time; with `train.distribution: multi_worker` also the workers
        and the files each read (`distribution`). A worker other than the chief
        writes nothing into `out_dir` and returns its index, fit time and history.
    """
    strategy = mw.strategy_for(cfg.train)  # multi-worker: before any TensorFlow op
    out = Path(out_dir)
    start = time.time()
    data = _transform_once(strategy, samples_dir, str(out), cfg, beam_args)
    transform_seconds = time.time() - start
    catalog = catalog_for(cfg, raw_dir or data.report.get("raw_dir"))

    chief = mw.is_chief(strategy)
    checkpoints = str(out / CHECKPOINT_DIR) if chief else tempfile.mkdtemp(
        prefix="daian_worker_checkpoints_")
    start = time.time()
    try:
        model, history = fit_model(cfg, data.tf_transform_output, data.train,
                                   data.validation, sim_range=data.sim_range, catalog=catalog,
                                   checkpoint_dir=checkpoints)
    finally:
        if not chief:
            shutil.rmtree(checkpoints, ignore_errors=True)
    train_seconds = time.time() - start
    if not chief:  # the chief evaluates and writes; wait until it has
        mw.barrier(strategy, ok=True, what="evaluating and writing the run's outputs")
        return {"worker": mw.worker_index(strategy), "train_seconds": round(train_seconds, 2),
                "history": jsonable_history(history)}
    try:
        summary = _evaluate_and_write(model, history, data, samples_dir, out, cfg,
                                      transform_seconds, train_seconds, strategy)
    except BaseException:
        if strategy is not None:
            mw.barrier(strategy, ok=False, what="evaluating and writing the run's outputs")
        raise
    if strategy is not None:
        mw.barrier(strategy, ok=True, what="evaluating and writing the run's outputs")
    return summary


def _evaluate_and_write(model, history, data: PreparedData, samples_dir: str, out: Path,
                        cfg, transform_seconds: float, train_seconds: float,
                        strategy) -> dict:
    """`train_from_samples`' eval metrics, export and summary file."""
    validation = ranking_metrics(*predict_split(model, data.validation,
                                                data.tf_transform_output))
    metrics = ranking_metrics(*predict_split(model, data.eval, data.tf_transform_output))
    baseline = popularity_metrics(data.train, data.eval, data.tf_transform_output)
    export_dir = out / SERVING_MODEL_DIR / str(int(time.time()))
    export_serving_model(
        model, data.tf_transform_output, str(export_dir), cfg.samples,
        warmup_examples=_first_examples(str(Path(samples_dir) / VALIDATION / SAMPLES_GLOB),
                                        NUM_WARMUP_EXAMPLES))
    summary = {
        "model": cfg.model.name,
        "samples_dir": str(samples_dir),
        SR.REPORT_KEY: data.sim_range,
        TRANSFORM_OUTPUT: data.transform_output_dir,
        "transformed": {TRAIN: data.train, VALIDATION: data.validation, EVAL: data.eval},
        "serving_model_dir": str(export_dir),
        VALIDATION: validation,
        EVAL: metrics,
        "baselines": {"popularity": baseline},
        "history": jsonable_history(history),
        "transform_seconds": round(transform_seconds, 2),
        "train_seconds": round(train_seconds, 2),
    }
    if strategy is not None:
        summary["distribution"] = {"strategy": "MultiWorkerMirroredStrategy",
                                   "workers": mw.num_workers(strategy),
                                   "shards": _shards(strategy, data)}
    with open(out / SUMMARY_FILE, "w") as f:
        json.dump(summary, f, indent=2)
    return summary
