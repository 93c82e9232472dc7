"""`TirSampleGen`: the pipeline's ExampleGen, running the library's Beam sample builder.

It reads a raw TIR log directory (spec/DATA.md §1) and writes an `Examples` artifact with
`Split-train`, `Split-validation` and `Split-eval` (gzipped TFRecords of `tf.Example`,
DATA.md §2) plus the builder's `report.json` at the artifact root; the artifact's custom
properties hold the report and the I-2 similarity range (`sim_range`, read by Transform
and Trainer). The Beam code is `daian_tf.data.sample_builder` itself, applied to the
pipeline that TFX builds from `beam_pipeline_args`, so the same code runs under the CLI,
LocalDagRunner and Kubeflow with Dataflow/Flink/Spark."""


import json
import os

import apache_beam as beam
from tfx.dsl.component.experimental.annotations import (
    BeamComponentParameter, OutputArtifact, Parameter)
from tfx.dsl.component.experimental.decorators import component
from tfx.components.util import examples_utils
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_artifacts

from daian_tf.core import similarity_range as SR
from daian_tf.core.names import SPLITS


def split_dir(uri: str, split: str) -> str:
    """The directory of one split inside an Examples artifact (TFX's layout)."""
    return os.path.join(uri, f"Split-{split}")


@component(use_beam=True)
def TirSampleGen(  # noqa: N802 - TFX component names are classes by convention
    raw_dir: Parameter[str],
    sample_config: Parameter[str],
    examples: OutputArtifact[standard_artifacts.Examples],
    code_version: Parameter[str] = "",
    beam_pipeline: BeamComponentParameter[beam.Pipeline] = None,
) -> None:
    """Builds training examples from raw TIR logs with the library's Beam builder.

    Args:
      raw_dir: the raw-log directory (local path or any Beam filesystem URI).
      sample_config: `SampleConfig` as JSON (the `samples:` section of the config).
      examples: the output `Examples` artifact (splits `train`, `validation`, `eval`).
      code_version: the package's code hash; part of the cache key, so that a code
        change re-runs the component (PITFALLS: TFX caches).
      beam_pipeline: provided by TFX from the pipeline's `beam_pipeline_args`.
    """
    del code_version  # only a cache key
    from daian_tf.data.sample_builder import (build_sample_pipeline, output_order,
                                              run_pipeline)
    from daian_tf.data.sample_report import check_splits_hold_requests, finalize_report
    from daian_tf.core.config import config_from_dict

    cfg = config_from_dict({"samples": json.loads(sample_config)}).samples
    output_dirs = {split: split_dir(examples.uri, split) for split in SPLITS}
    build_sample_pipeline(beam_pipeline, raw_dir, output_dirs, cfg, examples.uri)
    report = finalize_report(run_pipeline(beam_pipeline), examples.uri, cfg,
                             raw_dir=raw_dir, output_order=output_order(cfg))
    check_splits_hold_requests(report, f"TirSampleGen ({examples.uri})")
    examples.split_names = artifact_utils.encode_split_names(list(SPLITS))
    examples_utils.set_payload_format(
        examples, example_gen_pb2.PayloadFormat.FORMAT_TF_EXAMPLE)
    examples_utils.set_file_format(examples, "tfrecords_gzip")
    # the I-2 range, which Transform and Trainer read from here (sim_range_executors)
    examples.set_string_custom_property(SR.ARTIFACT_PROPERTY,
                                        SR.to_json(report[SR.REPORT_KEY]))
    examples.set_string_custom_property("report", json.dumps(report, sort_keys=True))
