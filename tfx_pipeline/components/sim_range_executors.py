"""Transform and Trainer executors that receive the I-2 range as data.

The sample builder owns the similarity range `[lo, hi]` (`daian_tf.core.
similarity_range`): `TirSampleGen` writes it as the `sim_range` custom property of its
`Examples` artifact. TFX fixes a component's `custom_config` when the pipeline is built,
before that artifact exists, so these thin subclasses of TFX's own executors read the
property from their input artifact at run time and put it into `custom_config`:

- `TransformExecutor`: `preprocessing_fn` gets it (the similarity bins), and the
  transformed `Examples` it writes carry the same property (the Trainer's input);
- `TrainerExecutor`: `run_fn` gets it (DAIAN's bins and explicit-intent threshold).

A missing or malformed property stops the component with a message naming the artifact.
Recorded in ML Metadata with the artifacts, so the lineage shows which range a model got.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

from tfx import types
from tfx.components.trainer import executor as trainer_executor
from tfx.components.transform import executor as transform_executor
from tfx.types import standard_component_specs as specs
from tfx.utils import json_utils

from daian_tf.core import similarity_range as SR


def sim_range_of(examples: List[types.Artifact]) -> Tuple[float, float]:
    """The `sim_range` property of an `Examples` channel's artifact."""
    if len(examples) != 1:
        raise ValueError(f"expected one Examples artifact, got {len(examples)}")
    artifact = examples[0]
    value = (artifact.get_string_custom_property(SR.ARTIFACT_PROPERTY)
             if artifact.has_custom_property(SR.ARTIFACT_PROPERTY) else None)
    return SR.from_json(value, f"Examples artifact {artifact.uri}")


def with_sim_range(exec_properties: Dict[str, Any],
                   sim_range: Tuple[float, float]) -> Dict[str, Any]:
    """`exec_properties` whose JSON `custom_config` holds `sim_range`."""
    props = dict(exec_properties)
    config = json_utils.loads(props.get(specs.CUSTOM_CONFIG_KEY) or "null") or {}
    config[SR.REPORT_KEY] = list(sim_range)
    props[specs.CUSTOM_CONFIG_KEY] = json_utils.dumps(config)
    return props


class TransformExecutor(transform_executor.Executor):
    """TFX's Transform executor with the input artifact's `sim_range` in
    `custom_config`, and on the transformed `Examples`."""

    def Do(self, input_dict, output_dict, exec_properties) -> None:  # noqa: N802
        sim_range = sim_range_of(input_dict[specs.EXAMPLES_KEY])
        super().Do(input_dict, output_dict, with_sim_range(exec_properties, sim_range))
        for artifact in output_dict.get(specs.TRANSFORMED_EXAMPLES_KEY, []):
            artifact.set_string_custom_property(SR.ARTIFACT_PROPERTY,
                                                SR.to_json(sim_range))


class TrainerExecutor(trainer_executor.GenericExecutor):
    """TFX's generic Trainer executor with the input artifact's `sim_range` in
    `custom_config`."""

    def Do(self, input_dict, output_dict, exec_properties) -> None:  # noqa: N802
        sim_range = sim_range_of(input_dict[specs.EXAMPLES_KEY])
        super().Do(input_dict, output_dict, with_sim_range(exec_properties, sim_range))
