"""`model.fit` training: the TFX Trainer's core (`fit_model`) and `daian train`.

`train_from_samples` is the experiment path on built samples (no TFX): tf.Transform with
Beam (the same `preprocessing_fn` as the pipeline) → `model.fit` → evaluation (AUC, GAUC,
log loss; and the popularity baseline) → SavedModel export.
"""

from __future__ import annotations

import functools
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import keras
import numpy as np
import tensorflow as tf

from daian_tf.data import features as F
from daian_tf.data.dataset import make_dataset
from daian_tf.data.transform import (CFG_SIM_RANGE, preprocessing_fn, raw_schema,
                                     transform_custom_config, vocab_sizes)
from daian_tf.errors import DaianInputError
from daian_tf.evaluation import ranking_metrics
from daian_tf.export.saved_model import export_serving_model
from daian_tf.models import serving_input_keys
from daian_tf.models.daian import build_daian
from daian_tf.models.din import build_din
from daian_tf.models.popularity import PopularityBaseline
from daian_tf.training.stages import make_optimizer, train_daian

FilePattern = Union[str, Sequence[str]]

TRAIN_SPLIT, EVAL_SPLIT = "train", "eval"
SAMPLES_REPORT = "report.json"
SAMPLES_GLOB = "data-*.tfrecord.gz"
TRANSFORMED_DIR = "transformed"
TRANSFORM_OUTPUT_DIR = "transform_output"
SERVING_MODEL_DIR = "serving_model"
SUMMARY_FILE = "train_summary.json"
CHECKPOINT_DIR = "checkpoints"
NUM_WARMUP_EXAMPLES = 4
_EVAL_BATCH_SIZE = 4096


def model_catalog(raw_dir: str) -> Tuple[List[str], np.ndarray]:
    """The catalog's item ids and multimodal vectors (item_embeddings.parquet of the
    raw-log directory, checked as the sample builder checks it), for DAIAN's frozen
    table."""
    from apache_beam.io.filesystems import FileSystems

    from daian_tf.data.raw_logs import read_embeddings

    return read_embeddings(FileSystems.join(raw_dir, F.EMBEDDINGS_FILE))


def estimate_sim_range(file_pattern: FilePattern, tf_transform_output,
                       percentiles: Sequence[float] = (1.0, 99.0),
                       max_examples: int = 2_000_000) -> List[float]:
    """[I-2] `[lo, hi]` as percentiles of the raw `target_sim` of a transformed split
    (the first `max_examples` examples); used where no sample-builder report gives it."""
    key = F.raw(F.TARGET_SIM)
    ds = make_dataset(file_pattern, tf_transform_output, _EVAL_BATCH_SIZE, shuffle=False,
                      input_keys=[key])
    values, seen = [], 0
    for inputs, _ in ds:
        values.append(inputs[key].numpy())
        seen += len(values[-1])
        if seen >= max_examples:
            break
    lo, hi = np.percentile(np.concatenate(values), list(percentiles))
    if not lo < hi:
        raise DaianInputError(f"target_sim percentiles {list(percentiles)} of "
                              f"{file_pattern} give an empty range [{lo}, {hi}]")
    return [float(lo), float(hi)]


def build_model(cfg, tf_transform_output, sim_range: Optional[Sequence[float]] = None,
                catalog: Optional[Tuple[Sequence[str], np.ndarray]] = None
                ) -> keras.Model:
    """The model named by `cfg.model.name`, sized from the transform's vocabularies.

    DAIAN also needs the I-2 `sim_range` and the `catalog` (`model_catalog(raw_dir)`).
    """
    user_columns = tuple(cfg.samples.user_columns)
    sizes = vocab_sizes(tf_transform_output, user_columns)
    if cfg.model.name == "din":
        return build_din(cfg.model, sizes, user_columns)
    if cfg.model.name == "daian":
        if sim_range is None or catalog is None:
            raise ValueError("build_model: DAIAN needs sim_range and catalog")
        return build_daian(cfg, sizes, sim_range, *catalog)
    raise ValueError(f"build_model: unknown model.name {cfg.model.name!r}")


def fit_model(cfg, tf_transform_output, train_pattern: FilePattern,
              eval_pattern: FilePattern, log_dir: Optional[str] = None,
              steps_per_epoch: Optional[int] = None,
              validation_steps: Optional[int] = None,
              sim_range: Optional[Sequence[float]] = None,
              catalog: Optional[Tuple[Sequence[str], np.ndarray]] = None,
              checkpoint_dir: Optional[str] = None, verbose: int = 2
              ) -> Tuple[keras.Model, dict]:
    """Build and fit the configured model on transformed TFRecords.

    DIN: one `model.fit`, binary cross-entropy on the click label, AUC metric. DAIAN: the
    schedule of `training.stages.train_daian` (three stages by default).

    Args:
        cfg: the full `Config`.
        tf_transform_output: `tft.TFTransformOutput` of the transformed data.
        train_pattern, eval_pattern: glob(s) of gzipped transformed TFRecords.
        log_dir: TensorBoard directory (the TFX Trainer's model_run_dir); None: none.
        steps_per_epoch: DIN only: batches per epoch (the training data then
            repeats); None: one pass over the data per epoch.
        validation_steps: DIN only: eval batches per epoch; None: the whole split.
        sim_range, catalog: DAIAN only (see `build_model`); `sim_range` None: estimated
            from the training split (`estimate_sim_range`).
        checkpoint_dir: DAIAN only: where each stage's weights go.
        verbose: Keras' fit verbosity.

    Returns:
        `(model, history)`: history is {metric: [per epoch]} for DIN, {stage: {metric:
        [per epoch]}} for DAIAN.
    """
    keras.utils.set_random_seed(cfg.train.seed)
    callbacks = [keras.callbacks.TensorBoard(log_dir=log_dir)] if log_dir else []
    if cfg.model.name == "daian":
        if sim_range is None:
            sim_range = estimate_sim_range(train_pattern, tf_transform_output,
                                           cfg.samples.sim_percentiles)
        model = build_model(cfg, tf_transform_output, sim_range, catalog)
        history = train_daian(model, train_pattern, eval_pattern, tf_transform_output,
                              cfg.train, checkpoint_dir=checkpoint_dir,
                              callbacks=callbacks, verbose=verbose)
        return model, history
    model = build_model(cfg, tf_transform_output)
    model.compile(optimizer=make_optimizer(cfg.train.optimizer, cfg.train.learning_rate),
                  loss=keras.losses.BinaryCrossentropy(),
                  metrics=[keras.metrics.AUC(name="auc")])
    keys = serving_input_keys(model)
    train_ds = make_dataset(train_pattern, tf_transform_output, cfg.train.batch_size,
                            shuffle=True, seed=cfg.train.seed,
                            num_epochs=None if steps_per_epoch else 1,
                            input_keys=keys, shuffle_buffer=cfg.train.shuffle_buffer,
                            cache=cfg.train.cache,
                            shuffle_unit=cfg.train.shuffle_unit)
    eval_ds = make_dataset(eval_pattern, tf_transform_output, cfg.train.batch_size,
                           shuffle=False, input_keys=keys)
    history = model.fit(train_ds, validation_data=eval_ds, epochs=cfg.train.epochs,
                        steps_per_epoch=steps_per_epoch,
                        validation_steps=validation_steps, callbacks=callbacks,
                        verbose=verbose)
    return model, history.history


def collect_columns(model: Optional[keras.Model], file_pattern: FilePattern,
                    tf_transform_output, keys: Sequence[str] = (),
                    with_intent: bool = False,
                    batch_size: int = _EVAL_BATCH_SIZE) -> Dict[str, np.ndarray]:
    """A transformed split in file order, as columns: "label", the transformed
    features `keys`, and with a model its "score" (click probability) and, with
    `with_intent`, its "intent" (p̂, DAIAN's `predict_intent`)."""
    inputs_keys = serving_input_keys(model) if model is not None else []
    ds = make_dataset(file_pattern, tf_transform_output, batch_size, shuffle=False,
                      input_keys=sorted(set(inputs_keys) | set(keys)))
    out: Dict[str, list] = {k: [] for k in list(keys) + ["label", "score", "intent"]}
    for inputs, label in ds:
        out["label"].append(label.numpy())
        for k in keys:
            out[k].append(inputs[k].numpy())
        if model is not None:
            batch = {k: inputs[k] for k in inputs_keys}
            out["score"].append(np.asarray(model.predict_on_batch(batch)).reshape(-1))
            if with_intent:
                out["intent"].append(np.asarray(model.predict_intent(batch,
                                                                     training=False)))
    return {k: np.concatenate(v) for k, v in out.items() if v}


def predict_split(model: keras.Model, file_pattern: FilePattern, tf_transform_output,
                  batch_size: int = _EVAL_BATCH_SIZE
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels `(N,)`, predicted probabilities `(N,)` and user keys `(N,)` of a split."""
    cols = collect_columns(model, file_pattern, tf_transform_output, [F.USER_KEY],
                           batch_size=batch_size)
    return cols["label"].astype(np.int64), cols["score"], cols[F.USER_KEY]


def popularity_metrics(train_pattern: str, eval_pattern: str,
                       tf_transform_output) -> Dict[str, float]:
    """Fit the popularity baseline on train target ids, score the eval split."""
    keys = [F.xf(F.TARGET_ITEM_ID), F.USER_KEY]
    train = collect_columns(None, train_pattern, tf_transform_output, keys)
    test = collect_columns(None, eval_pattern, tf_transform_output, keys)
    baseline = PopularityBaseline().fit(train[keys[0]], train["label"].astype(np.int64))
    return ranking_metrics(test["label"].astype(np.int64),
                           baseline.predict(test[keys[0]]), test[F.USER_KEY])


def transform_samples(samples_dir: str, out_dir: str, cfg,
                      sim_range: Optional[Sequence[float]] = None,
                      beam_args: Optional[Sequence[str]] = None) -> Dict[str, str]:
    """Analyze the train split, transform both splits (tf.Transform on Beam).

    Writes `out_dir/transform_output` (the transform graph and vocabularies) and
    `out_dir/transformed/{train,eval}/data-*.tfrecord.gz`.

    Args:
        samples_dir: holds `train/` and `eval/` with `data-*.tfrecord.gz`.
        out_dir: output directory (created if needed).
        cfg: the full `Config`.
        sim_range: `[lo, hi]` of the similarity bins (see `transform_custom_config`).
        beam_args: Beam pipeline flags.

    Returns:
        {"transform_output": dir, "train": glob, "eval": glob}.
    """
    import apache_beam as beam
    import tensorflow_transform.beam as tft_beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from tfx_bsl.public import tfxio

    schema = raw_schema(cfg.samples)
    fn = functools.partial(preprocessing_fn,
                           custom_config=transform_custom_config(cfg, sim_range))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in (TRANSFORM_OUTPUT_DIR, TRANSFORMED_DIR):  # a rerun replaces its outputs
        shutil.rmtree(out / old, ignore_errors=True)
    paths = {"transform_output": str(out / TRANSFORM_OUTPUT_DIR)}
    temp_dir = tempfile.mkdtemp(prefix="tft_", dir=str(out))
    try:
        with beam.Pipeline(options=PipelineOptions(list(beam_args or []))) as p, \
                tft_beam.Context(temp_dir=temp_dir):
            datasets = {}
            for split in (TRAIN_SPLIT, EVAL_SPLIT):
                source = tfxio.TFExampleRecord(
                    file_pattern=str(Path(samples_dir) / split / SAMPLES_GLOB),
                    schema=schema)
                raw = p | f"Read_{split}" >> source.BeamSource()
                datasets[split] = (raw, source.TensorAdapterConfig())
            transformed_train, transform_fn = (
                datasets[TRAIN_SPLIT]
                | tft_beam.AnalyzeAndTransformDataset(fn, output_record_batches=True))
            transformed_eval = (
                (datasets[EVAL_SPLIT], transform_fn)
                | tft_beam.TransformDataset(output_record_batches=True))
            for split, data in ((TRAIN_SPLIT, transformed_train),
                                (EVAL_SPLIT, transformed_eval)):
                prefix = out / TRANSFORMED_DIR / split / "data"
                _ = (data
                     | f"Encode_{split}" >> tft_beam.EncodeTransformedDataset()
                     | f"Write_{split}" >> beam.io.WriteToTFRecord(
                         str(prefix), file_name_suffix=".tfrecord.gz"))
                paths[split] = str(out / TRANSFORMED_DIR / split / SAMPLES_GLOB)
            _ = transform_fn | tft_beam.WriteTransformFn(paths["transform_output"])
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    return paths


def read_report(samples_dir: str) -> dict:
    """The sample builder's `report.json` of `samples_dir` ({} when there is none)."""
    report = Path(samples_dir) / SAMPLES_REPORT
    if not report.exists():
        return {}
    with open(report) as f:
        return json.load(f)


def catalog_for(cfg, report: dict, raw_dir: Optional[str] = None):
    """DAIAN's catalog from `raw_dir`, else the raw-log directory the report names;
    None for models without one."""
    if cfg.model.name != "daian":
        return None
    raw_dir = raw_dir or report.get("raw_dir")
    if not raw_dir:
        raise DaianInputError("DAIAN needs the raw-log directory for its multimodal "
                              "catalog: pass --raw (the sample report names none)")
    return model_catalog(raw_dir)


def jsonable_history(history: dict) -> dict:
    """A (nested) Keras history dict with plain floats."""
    return {k: jsonable_history(v) if isinstance(v, dict) else [float(x) for x in v]
            for k, v in history.items()}


def _first_examples(file_pattern: str, count: int) -> List[bytes]:
    files = sorted(tf.io.gfile.glob(file_pattern))
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP").take(count)
    return [x.numpy() for x in ds]


def train_from_samples(samples_dir: str, out_dir: str, cfg,
                       beam_args: Optional[Sequence[str]] = None,
                       raw_dir: Optional[str] = None) -> dict:
    """`daian train`: transform, fit, evaluate and export on built samples.

    Args:
        samples_dir: the sample builder's output: `train/` and `eval/` with
            `data-*.tfrecord.gz`, and `report.json` whose `sim_range` fixes the
            similarity bins (if absent: `cfg.samples.sim_range`, else estimated).
        out_dir: where `transform_output/`, `transformed/`, `serving_model/<version>/`
            and `train_summary.json` go.
        cfg: the full `Config`.
        beam_args: Beam pipeline flags for the transform (e.g. `--direct_num_workers`).
        raw_dir: DAIAN only: the raw-log directory whose item_embeddings.parquet fills
            the multimodal catalog; None: the one the sample report names.

    Returns:
        The JSON-able summary also written to `out_dir/train_summary.json`: paths,
        eval metrics of the model and of the popularity baseline, the fit history and
        the training time.
    """
    import tensorflow_transform as tft

    samples = Path(samples_dir)
    for split in (TRAIN_SPLIT, EVAL_SPLIT):
        if not list((samples / split).glob(SAMPLES_GLOB)):
            raise DaianInputError(f"{samples / split}: no {SAMPLES_GLOB} files; is "
                                  f"{samples} the output of `daian build-samples`?")
    out = Path(out_dir)
    report = read_report(str(samples))
    sim_range = transform_custom_config(cfg, report.get("sim_range"))[CFG_SIM_RANGE]
    catalog = catalog_for(cfg, report, raw_dir)

    start = time.time()
    paths = transform_samples(str(samples), str(out), cfg, sim_range, beam_args)
    transform_seconds = time.time() - start
    tf_transform_output = tft.TFTransformOutput(paths["transform_output"])

    start = time.time()
    model, history = fit_model(cfg, tf_transform_output, paths[TRAIN_SPLIT],
                               paths[EVAL_SPLIT], sim_range=sim_range, catalog=catalog,
                               checkpoint_dir=str(out / CHECKPOINT_DIR))
    train_seconds = time.time() - start

    metrics = ranking_metrics(*predict_split(model, paths[EVAL_SPLIT],
                                             tf_transform_output))
    baseline = popularity_metrics(paths[TRAIN_SPLIT], paths[EVAL_SPLIT],
                                   tf_transform_output)
    export_dir = out / SERVING_MODEL_DIR / str(int(time.time()))
    export_serving_model(
        model, tf_transform_output, str(export_dir), cfg.samples,
        warmup_examples=_first_examples(str(samples / EVAL_SPLIT / SAMPLES_GLOB),
                                        NUM_WARMUP_EXAMPLES))
    summary = {
        "model": cfg.model.name,
        "samples_dir": str(samples),
        "sim_range": sim_range,
        **paths,
        "serving_model_dir": str(export_dir),
        "eval": metrics,
        "baselines": {"popularity": baseline},
        "history": jsonable_history(history),
        "transform_seconds": round(transform_seconds, 2),
        "train_seconds": round(train_seconds, 2),
    }
    with open(out / SUMMARY_FILE, "w") as f:
        json.dump(summary, f, indent=2)
    return summary
