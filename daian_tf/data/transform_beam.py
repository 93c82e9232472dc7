"""tf.Transform on Beam over the sample builder's splits (`daian train`, experiments).

The same `preprocessing_fn` as the pipeline's Transform component: analyze the train
split only, transform every split (train, validation, eval), write the transform graph
and the transformed TFRecords.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path
from typing import Dict, Optional, Sequence

from daian_tf.core.names import (SAMPLES_GLOB, SAMPLES_PREFIX, SAMPLES_SUFFIX, SPLITS,
                                  TRAIN)
from daian_tf.data.beam_runners import pipeline_options
from daian_tf.data.raw_log_errors import quiet_runner_noise
from daian_tf.data.transform import preprocessing_fn, raw_schema, transform_custom_config

TRANSFORMED_DIR = "transformed"
TRANSFORM_OUTPUT_DIR = "transform_output"
TRANSFORM_OUTPUT = "transform_output"  # key of the paths `transform_samples` returns


def transform_samples(samples_dir: str, out_dir: str, cfg, sim_range: Sequence[float],
                      beam_args: Optional[Sequence[str]] = None) -> Dict[str, str]:
    """Analyze the train split, transform every split (tf.Transform on Beam).

    Writes `out_dir/transform_output` (the transform graph and vocabularies) and
    `out_dir/transformed/{train,validation,eval}/data-*.tfrecord.gz`; a rerun replaces
    them.

    Args:
        samples_dir: holds `train/`, `validation/` and `eval/` with `data-*.tfrecord.gz`.
        out_dir: output directory (created if needed).
        cfg: the full `Config`.
        sim_range: the sample builder's `[lo, hi]` (its report), for the similarity bins.
        beam_args: Beam pipeline flags.

    Returns:
        {"transform_output": dir, "train": glob, "validation": glob, "eval": glob}.
    """
    import apache_beam as beam
    import tensorflow_transform.beam as tft_beam
    from tfx_bsl.public import tfxio

    schema = raw_schema(cfg.samples)
    fn = functools.partial(preprocessing_fn,
                           custom_config=transform_custom_config(cfg, sim_range))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in (TRANSFORM_OUTPUT_DIR, TRANSFORMED_DIR):  # a rerun replaces its outputs
        shutil.rmtree(out / old, ignore_errors=True)
    paths = {TRANSFORM_OUTPUT: str(out / TRANSFORM_OUTPUT_DIR)}
    temp_dir = tempfile.mkdtemp(prefix="tft_", dir=str(out))
    try:
        with quiet_runner_noise(), \
                beam.Pipeline(options=pipeline_options(beam_args)) as p, \
                tft_beam.Context(temp_dir=temp_dir):
            datasets = {}
            for split in SPLITS:
                source = tfxio.TFExampleRecord(
                    file_pattern=str(Path(samples_dir) / split / SAMPLES_GLOB),
                    schema=schema)
                raw = p | f"Read_{split}" >> source.BeamSource()
                datasets[split] = (raw, source.TensorAdapterConfig())
            transformed = {}
            transformed[TRAIN], transform_fn = (
                datasets[TRAIN]
                | tft_beam.AnalyzeAndTransformDataset(fn, output_record_batches=True))
            for split in (s for s in SPLITS if s != TRAIN):
                transformed[split] = (
                    (datasets[split], transform_fn)
                    | f"Transform_{split}" >> tft_beam.TransformDataset(
                        output_record_batches=True))
            for split, data in transformed.items():
                prefix = out / TRANSFORMED_DIR / split / SAMPLES_PREFIX
                _ = (data
                     | f"Encode_{split}" >> tft_beam.EncodeTransformedDataset()
                     | f"Write_{split}" >> beam.io.WriteToTFRecord(
                         str(prefix), file_name_suffix=SAMPLES_SUFFIX))
                paths[split] = str(out / TRANSFORMED_DIR / split / SAMPLES_GLOB)
            _ = transform_fn | tft_beam.WriteTransformFn(paths[TRANSFORM_OUTPUT])
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    return paths
