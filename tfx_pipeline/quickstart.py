"""The README's main job, end to end on the embedded default.

simulate a world → TFX pipeline locally (its ExampleGen runs the Beam sample builder;
Transform, Trainer, Pusher) → local gRPC server on the pushed model → score the eval split
over gRPC with the official stubs → one table: the served model, a popularity baseline
and the simulator's oracle (`truth.csv`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import List, Optional

import numpy as np

from daian_tf.core.config import Config
from daian_tf.core.names import DAIAN, DIN, EVAL, TRAIN


def _log(msg: str) -> None:
    print(f"[quickstart {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _din_row(cfg: Config, metadata: str) -> dict:
    """DIN fitted in-process on the pipeline's transformed splits, scored on eval."""
    import tensorflow_transform as tft

    from daian_tf.evaluation.columns import predict_split
    from daian_tf.evaluation.tables import ranking_metrics
    from daian_tf.training.fit import fit_model
    from tfx_pipeline.components.sample_gen import split_dir
    from tfx_pipeline.runner import latest_output_uri

    din_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name=DIN))
    tfo = tft.TFTransformOutput(latest_output_uri(metadata, "Transform",
                                                  "transform_graph"))
    examples = latest_output_uri(metadata, "Transform", "transformed_examples")
    train, evals = (os.path.join(split_dir(examples, s), "*") for s in (TRAIN, EVAL))
    model, _ = fit_model(din_cfg, tfo, train, evals, verbose=0)
    return {"model": "DIN (in-process, same Transform output)",
            **ranking_metrics(*predict_split(model, evals, tfo))}


def run_quickstart(workdir: str, cfg: Config, scale: float = 1.0,
                   beam_args: Optional[List[str]] = None) -> dict:
    from daian_tf.data.simulator import simulate
    from daian_tf.core.signatures import (DEFAULT_MODEL_NAME, OUTPUT_INTENT,
                                            SIGNATURE_INTENT)
    from daian_tf.evaluation.raw_split import metric_row, read_split, score_in_batches
    from daian_tf.evaluation.tables import format_table
    from daian_tf.models.popularity import PopularityBaseline
    from serving.client import PredictClient
    from serving.server import serve
    from tfx_pipeline.components.sample_gen import split_dir
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
    _log(f"pushed model: {out['pushed_model']}")

    examples_uri = latest_output_uri(out["metadata"], "TirSampleGen", "examples")
    train = read_split(os.path.join(split_dir(examples_uri, TRAIN), "*"),
                       cfg.samples, with_requests=False)
    evals = read_split(os.path.join(split_dir(examples_uri, EVAL), "*"), cfg.samples)
    _log(f"eval split: {len(evals)} samples; train split: {len(train)} samples")

    server = serve(out["serving_dir"], model_name=DEFAULT_MODEL_NAME, port=0,
                   wait=False)
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
            served = score_in_batches(client.predict_examples, evals.requests)
    finally:
        server.stop()

    popularity = PopularityBaseline().fit(train.items, train.labels)
    rows = [metric_row(f"{cfg.model.name.upper()} (served over gRPC)", evals, served)]
    if cfg.model.name != DIN:
        _log("training DIN, the paper's baseline, on the pipeline's Transform output")
        rows.append(_din_row(cfg, out["metadata"]))
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

