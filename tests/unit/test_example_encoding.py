"""The hand-written tf.Example wire encoding against protobuf's own messages."""

from __future__ import annotations

import tensorflow as tf

from daian_tf.data import example_encoding as E


def reference(features: dict) -> tf.train.Example:
    """The same example built with the protobuf API (kind, values per key)."""
    ex = tf.train.Example()
    for key, (kind, values) in features.items():
        feature = ex.features.feature[key]
        getattr(feature, kind).SetInParent()
        getattr(feature, kind).value.extend(values)
    return ex


def test_parses_to_the_protobuf_built_example():
    features = {
        "ascii": ("bytes_list", [b"a", b"", b"x" * 300]),
        "unicode \u00e9": ("bytes_list", ["\u00e9\u4e2d".encode("utf-8")]),
        "floats": ("float_list", [0.1, -2.5, 1e-30, 3.4e38]),
        "ints": ("int64_list", [0, 1, 127, 128, 300, 2**14 - 1, 2**14, 2**21 - 1,
                                2**21, 2**40, -1, -(2**63), 2**63 - 1]),
        "empty_bytes": ("bytes_list", []),
        "empty_floats": ("float_list", []),
        "empty_ints": ("int64_list", []),
    }
    encoders = {"bytes_list": E.bytes_feature, "float_list": E.float_feature,
                "int64_list": E.int64_feature}
    parts = []
    for key, (kind, values) in features.items():
        if kind == "bytes_list":
            values = [v.decode("utf-8") for v in values]
        parts.append(encoders[kind](key, values))
    parsed = tf.train.Example.FromString(E.example(*parts))
    expected = reference(features)
    assert parsed == expected
    # every feature keeps its kind, the empty ones included
    assert {k: f.WhichOneof("kind") for k, f in parsed.features.feature.items()} == {
        k: kind for k, (kind, _) in features.items()}
    # floats are rounded to float32 exactly as protobuf rounds them
    assert list(parsed.features.feature["floats"].float_list.value) == list(
        expected.features.feature["floats"].float_list.value)


def test_tf_parse_example_reads_it():
    serialized = E.example(E.bytes_feature("s", ["u1"]), E.int64_feature("n", [7]),
                           E.float_feature("f", [0.5, 0.25]))
    out = tf.io.parse_single_example(serialized, {
        "s": tf.io.FixedLenFeature([], tf.string),
        "n": tf.io.FixedLenFeature([], tf.int64),
        "f": tf.io.FixedLenFeature([2], tf.float32)})
    assert out["s"].numpy() == b"u1" and out["n"].numpy() == 7
    assert out["f"].numpy().tolist() == [0.5, 0.25]
