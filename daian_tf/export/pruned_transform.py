"""The part of the tf.Transform graph that a set of its outputs needs (serving's `rank`).

tf.Transform's `TransformFeaturesLayer` runs the whole transform graph on every call,
whatever is fed and whatever is read: it fills the raw features it is not given with
defaults, and the graph's table lookups are stateful, so nothing is pruned at run time.
`rank` transforms one context and N candidates, and each needs only a part: the
candidates carry the target features alone (135 of the quick start's 1,014 graph
operations compute their outputs), the context everything else (its target features
would be computed for nothing: 24 fewer kernels a call). `PrunedTransform` is that
part, cut from the same loaded graph with TensorFlow's `WrappedFunction.prune`, as
tf.Transform prunes its own exported functions
(`saved_transform_io_v2.optimize_concrete_function`): the same operations on the same
tables, so it computes what the layer computes on those outputs (tested equal:
`tests/integration/test_transform_train_export.py`).

It reads the layer's loaded graph through tf.Transform's `SavedModelLoader`
(`_saved_model_loader`, with its `_wrapped_function`, `_structured_inputs`,
`_structured_outputs` and `_output_to_inputs_map`), which tf.Transform keeps private;
the pinned version is in the lock file, and the tests fail if those names change.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Mapping

import tensorflow as tf
from tensorflow.python.eager import wrap_function
from tensorflow_transform import tf2_utils


def _components(value) -> List[tf.Tensor]:
    return tf.nest.flatten(value, expand_composites=True)


class PrunedTransform:
    """The outputs `outputs` of a tf.Transform graph, computed from only the raw
    features they depend on.

    Args:
        tft_layer: `tf_transform_output.transform_features_layer()`; the pruned
            function shares its loaded graph and tables (nothing is loaded twice).
        outputs: transformed feature names to compute.

    Attributes:
        input_keys: the raw features the outputs depend on, sorted: exactly what a
            call needs.

    Raises:
        KeyError: an output the transform does not produce.
    """

    def __init__(self, tft_layer, outputs: Iterable[str]):
        loader = tft_layer._saved_model_loader
        graph = loader._wrapped_function.graph
        outputs = sorted(set(outputs))
        unknown = [k for k in outputs if k not in loader._structured_outputs]
        if unknown:
            raise KeyError(f"the transform has no output(s) {unknown}; it has "
                           f"{sorted(loader._structured_outputs)}")
        sources = set()
        for key in outputs:
            sources.update(id(t) for t in loader._output_to_inputs_map[key])
        inputs = loader._structured_inputs
        self.input_keys: List[str] = sorted(
            k for k, v in inputs.items() if any(id(t) in sources for t in _components(v)))
        # the lookups are stateful: without their control edges, the pruned graph
        # keeps only what the outputs read (as tf.Transform does for its exports)
        fetches = {k: loader._structured_outputs[k] for k in outputs}
        self._shapes = {k: v.shape for k, v in fetches.items()}
        flat, _ = tf2_utils.strip_and_get_tensors_and_control_dependencies(
            _components(fetches))
        fetches = tf.nest.pack_sequence_as(fetches, flat, expand_composites=True)
        wrapped = wrap_function.WrappedFunction(
            graph, variable_holder=wrap_function.VariableHolder(share_variables=True))
        self._function = wrapped.prune(
            feeds=_components({k: inputs[k] for k in self.input_keys}), fetches=fetches)

    def __call__(self, raw: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        """`raw`: at least `input_keys`, parsed as for the layer (other keys are
        ignored) → the outputs, by name."""
        missing = [k for k in self.input_keys if k not in raw]
        if missing:
            raise KeyError(f"the pruned transform needs raw feature(s) {missing}")
        values = []
        for key in self.input_keys:
            values += _components(raw[key])
        result = self._function(*values)
        for key, shape in self._shapes.items():  # prune drops the static shapes
            result[key].set_shape(shape)
        return result
