"""One version of a SavedModel as TF Serving serves it, without the gRPC around it.

`ServedModel` loads one version directory `<model_base_path>/<version>` with the `serve`
tag, keeps the `SignatureDef`s of its `serve` meta graph (for `GetModelMetadata`), and
runs a signature on request `TensorProto`s, checking inputs, dtypes, shapes and the
output filter as TF Serving does, and answering `TensorProto`s. A request it refuses
is a `ServingError` carrying the gRPC status code to answer with; `serving/server.py`
puts the gRPC services around it, and `serving/model_manager.py` decides which
versions are loaded. Nothing here knows the DAIAN model: any SavedModel with
signatures is served.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

SAVED_MODEL_FILE = "saved_model.pb"
SERVE_TAG = "serve"


class ServingError(Exception):
    """A request the server refuses, with the gRPC status code to answer with."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


def _read_signature_defs(
        version_dir: Path) -> Mapping[str, meta_graph_pb2.SignatureDef]:
    """The SignatureDefs of the `serve` meta graph of `version_dir/saved_model.pb`."""
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((version_dir / SAVED_MODEL_FILE).read_bytes())
    for meta_graph in saved_model.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            return meta_graph.signature_def
    raise FileNotFoundError(
        f"{version_dir / SAVED_MODEL_FILE} has no meta graph tagged {SERVE_TAG!r}")


def _dtype_name(enum: int) -> str:
    """`DT_FLOAT`-style name of a `tensorflow.DataType` enum value."""
    return types_pb2.DataType.Name(enum)


class ServedModel:
    """One loaded version of a SavedModel and the calls TF Serving makes on it.

    Args:
        version_dir: `<model_base_path>/<version>`.
        version: the version number.
    """

    def __init__(self, version_dir: Path, version: int):
        self.version = version
        self.path = version_dir
        self.signature_defs = _read_signature_defs(version_dir)
        self._loaded = tf.saved_model.load(str(version_dir), tags=[SERVE_TAG])
        self._signatures = dict(self._loaded.signatures)
        if not self._signatures:
            raise ValueError(f"SavedModel {str(version_dir)!r} has no signatures")

    @property
    def signature_names(self) -> list[str]:
        """The callable signature names, sorted."""
        return sorted(self._signatures)

    def signature(self, name: str):
        """The concrete function of signature `name` (INVALID_ARGUMENT if absent)."""
        if name not in self._signatures:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f'Serving signature key "{name}" not found. Available signatures: '
                f"{{{', '.join(self.signature_names)}}}.")
        return self._signatures[name]

    def predict(self, signature_name: str,
                inputs: Mapping[str, tensor_pb2.TensorProto],
                output_filter: list[str]) -> dict[str, tensor_pb2.TensorProto]:
        """Runs one signature on request tensors.

        Args:
            signature_name: the signature to run.
            inputs: input name → `TensorProto`, exactly the signature's inputs.
            output_filter: output names to return; empty means all.

        Returns:
            output name → `TensorProto`.

        Raises:
            ServingError: INVALID_ARGUMENT for an unknown signature, a missing or
                extra input, a wrong dtype or shape, or an unknown output name.
            tf.errors.OpError: the graph failed (e.g. an example does not parse).
        """
        arrays, output_names = self.prepare(signature_name, inputs, output_filter)
        outputs = self.run(signature_name, arrays, output_names)
        return {n: tf.make_tensor_proto(v) for n, v in outputs.items()}

    def prepare(self, signature_name: str,
                inputs: Mapping[str, tensor_pb2.TensorProto],
                output_filter: list[str]) -> tuple[dict[str, np.ndarray], list[str]]:
        """Checks a request against signature `signature_name` (the checks of
        `predict`) and converts its tensors.

        Returns:
            (input name → array, the output names to return).
        """
        function = self.signature(signature_name)
        specs: Mapping[str, tf.TensorSpec] = function.structured_input_signature[1]
        sent, expected = set(inputs), set(specs)
        if sent != expected:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f'input size does not match signature "{signature_name}": '
                f"{len(sent)}!={len(expected)} len({{{','.join(sorted(sent))}}}) != "
                f"len({{{','.join(sorted(expected))}}}). "
                f"Sent extra: {{{','.join(sorted(sent - expected))}}}. "
                f"Missing but required: {{{','.join(sorted(expected - sent))}}}.")
        arrays = {}
        for name, spec in specs.items():
            proto = inputs[name]
            if proto.dtype != spec.dtype.as_datatype_enum:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f'input tensor "{name}" of signature "{signature_name}" has '
                    f"dtype {_dtype_name(proto.dtype)}, expected "
                    f"{_dtype_name(spec.dtype.as_datatype_enum)}")
            try:
                value = tf.make_ndarray(proto)
            except (TypeError, ValueError) as e:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f'input tensor "{name}" is not a valid TensorProto: {e}') from e
            if not spec.shape.is_compatible_with(value.shape):
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f'input tensor "{name}" of signature "{signature_name}" has '
                    f"shape {list(value.shape)}, expected {spec.shape}")
            arrays[name] = value
        output_names = sorted(function.structured_outputs)
        unknown = [n for n in output_filter if n not in output_names]
        if unknown:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"output tensor alias not found in signature: {', '.join(unknown)} "
                f"Outputs expected to be in the set {{{','.join(output_names)}}}.")
        return arrays, list(output_filter) or output_names

    def batchable(self, signature_name: str) -> bool:
        """Whether every input of the signature has a free batch dimension (what
        server-side batching concatenates along)."""
        specs = self.signature(signature_name).structured_input_signature[1]
        return all(spec.shape.rank and spec.shape[0] is None for spec in specs.values())

    def run(self, signature_name: str, arrays: Mapping[str, np.ndarray],
            output_names: list[str]) -> dict[str, np.ndarray]:
        """Runs the signature on arrays `prepare` checked; returns the named outputs."""
        function = self.signature(signature_name)
        specs = function.structured_input_signature[1]
        arguments = {n: tf.constant(v, dtype=specs[n].dtype) for n, v in arrays.items()}
        try:
            outputs = function(**arguments)
        except UnicodeDecodeError as e:
            # TF quotes the offending input in some errors (e.g. "Could not parse
            # example input, value: '...'"), and its Python binding fails to decode
            # that message when the input holds non-UTF-8 bytes.
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f'signature "{signature_name}" failed on its input, and '
                f"TensorFlow's error message, which quotes non-UTF-8 input bytes, "
                f"could not be decoded ({e}); e.g. a string input that is not a "
                "serialized tf.train.Example") from e
        return {n: outputs[n].numpy() for n in output_names}
