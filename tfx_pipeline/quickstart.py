"""The README's main job, end to end on the embedded default.

simulate a world → the TFX pipeline locally (the Beam sample builder as ExampleGen,
validation, Transform, DAIAN's three Trainer stages and DIN's Trainer, the TFMA
Evaluators, the push gate, the Pusher) → local gRPC server on the pushed model → score the
eval split over gRPC with the official stubs → one table: the served model, the
pipeline's DIN, a popularity baseline and the simulator's oracle (`truth.csv`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import List, Optional

import numpy as np

from daian_tf.core.config import Config
from daian_tf.core.names import DAIAN, EVAL, REPORT_FILE, TRAIN, VALIDATION


def _log(msg: str) -> None:
    print(f"[quickstart {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _saved_model_scores(serving_dir: str, requests) -> np.ndarray:
    """Scores serialized requests with a SavedModel's `serving_default`, in-process."""
    import tensorflow as tf

    from daian_tf.core.signatures import OUTPUT_CTR, SIGNATURE_SERVING_DEFAULT
    from daian_tf.evaluation.raw_split import score_in_batches

    signature = tf.saved_model.load(serving_dir).signatures[SIGNATURE_SERVING_DEFAULT]
    return score_in_batches(
        lambda batch: signature(examples=tf.constant(batch))[OUTPUT_CTR].numpy(),
        requests)


def _model_dir(metadata: str, component_id: str) -> str:
    """The serving SavedModel of a Trainer's newest `Model` artifact (TFX's layout)."""
    from tfx.utils import path_utils

    from tfx_pipeline.runner import latest_output_uri

    return path_utils.serving_model_path(latest_output_uri(metadata, component_id,
                                                           "model"))


def _score_over_grpc(serving_dir: str, evals, cfg: Config) -> np.ndarray:
    """Serves the pushed model with the local gRPC server; scores the eval split with
    the official TF Serving stubs."""
    from daian_tf.core.signatures import (DEFAULT_MODEL_NAME, OUTPUT_INTENT,
                                          SIGNATURE_INTENT)
    from daian_tf.evaluation.raw_split import score_in_batches
    from serving.client import PredictClient
    from serving.server import serve

    server = serve(serving_dir, model_name=DEFAULT_MODEL_NAME, port=0, wait=False)
    try:
        with PredictClient(f"127.0.0.1:{server.port}",
                           model_name=DEFAULT_MODEL_NAME) as client:
            client.wait_until_available(30.0)
            _log(f"gRPC server on 127.0.0.1:{server.port}: {client.model_status()}")
            few = client.predict_examples(evals.requests[:5])
            _log(f"5 requests over gRPC → ctr {np.round(few, 4).tolist()}")
            if cfg.model.name == DAIAN:
                intent = client.predict_examples(evals.requests[:1], SIGNATURE_INTENT,
                                                 OUTPUT_INTENT)
                _log(f"intent of the first request over gRPC → "
                     f"{np.round(intent[0], 3).tolist()}")
            return score_in_batches(client.predict_examples, evals.requests)
    finally:
        server.stop()


def run_quickstart(workdir: str, cfg: Config, scale: float = 1.0,
                   beam_args: Optional[List[str]] = None) -> dict:
    from daian_tf.data.simulator import simulate
    from daian_tf.evaluation.raw_split import metric_row, read_split
    from daian_tf.evaluation.tables import format_table
    from daian_tf.models.popularity import PopularityBaseline
    from tfx_pipeline.components.sample_gen import split_dir
    from tfx_pipeline.pipeline import candidate_trainer_id, trainer_id
    from tfx_pipeline.runner import latest_output_uri, run_local

    t0 = time.time()
    os.makedirs(workdir, exist_ok=True)
    raw = os.path.join(workdir, "raw")
    if scale != 1.0:
        cfg = dataclasses.replace(cfg, simulation=cfg.simulation.scaled(scale))
    _log(f"simulating a world into {raw}")
    summary = simulate(raw, cfg.simulation)
    _log(f"world: {json.dumps(summary)}")

    _log("running the TFX pipeline (LocalDagRunner, SQLite ML Metadata)")
    out = run_local(raw, os.path.join(workdir, "pipeline"), cfg, beam_args=beam_args)
    _log(out["reason"])
    if out["infra_reason"]:
        _log(out["infra_reason"])
    _log(f"pushed model: {out['pushed_model']}" if out["pushed"] else
         f"nothing pushed: {out['serving_dir']} is as it was")

    examples_uri = latest_output_uri(out["metadata"], "TirSampleGen", "examples")
    train = read_split(os.path.join(split_dir(examples_uri, TRAIN), "*"),
                       cfg.samples, with_requests=False)
    evals = read_split(os.path.join(split_dir(examples_uri, EVAL), "*"), cfg.samples)
    with open(os.path.join(examples_uri, REPORT_FILE)) as f:
        validation = json.load(f)["splits"][VALIDATION]["samples"]
    _log(f"scoring the eval split: {len(evals)} samples (train {len(train)}, validation "
         f"{validation}: what each fit chose its epochs by)")

    name = cfg.model.name.upper()
    if out["pushed"]:
        served = _score_over_grpc(out["serving_dir"], evals, cfg)
        rows = [metric_row(f"{name} (served over gRPC)", evals, served)]
    else:
        _log(f"scoring the unblessed {name} in-process instead of over gRPC")
        rows = [metric_row(f"{name} (not pushed; in-process)", evals, _saved_model_scores(
            _model_dir(out["metadata"], candidate_trainer_id(cfg)), evals.requests))]
    if cfg.pipeline.baseline != cfg.model.name:
        baseline = cfg.pipeline.baseline
        rows.append(metric_row(
            f"{baseline.upper()} (pipeline baseline, in-process)", evals,
            _saved_model_scores(_model_dir(out["metadata"], trainer_id(baseline)),
                                evals.requests)))
    popularity = PopularityBaseline().fit(train.items, train.labels)
    rows.append(metric_row("popularity", evals, popularity.predict(evals.items)))
    if not np.isnan(evals.p_true).any():
        rows.append(metric_row("oracle (truth.csv)", evals, evals.p_true))
    table = format_table(rows)
    print(table, flush=True)
    result = {"rows": rows, "seconds": round(time.time() - t0, 1), **out,
              "raw_dir": raw, "world": summary}
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(result, f, indent=2, default=str)
    _log(f"done in {result['seconds']} s; results in {workdir}/results.json")
    return result

