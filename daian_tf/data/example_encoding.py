"""Serialized `tf.Example` bytes written directly in protobuf's wire format.

The sample builder writes about one example per impression, each made of a
request-level part (history, trigger, profile: built once per request), an item
part (built once per item) and a few per-impression scalars. Building these with
the protobuf message classes needs `tensorflow` imported in every Beam worker
(seconds each) and a message object per part; this module produces the same
bytes from plain Python values with `struct` and byte joins.

Wire layout (tensorflow/core/example/{example,feature}.proto):

    Example      { Features features = 1; }
    Features     { map<string, Feature> feature = 1; }   entry: key = 1, value = 2
    Feature      { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2;
                                Int64List int64_list = 3; } }
    BytesList    { repeated bytes value = 1; }
    FloatList    { repeated float value = 1 [packed = true]; }
    Int64List    { repeated int64 value = 1 [packed = true]; }

A `Features` message is a concatenation of map entries, so the parts above are
`bytes` that are joined and wrapped once by `example`. An empty list still sets
its `kind` (an empty `BytesList`, ...), so every feature keeps its type.
"""

from __future__ import annotations

import functools
import struct
from typing import Iterable, Sequence

_UINT64 = (1 << 64) - 1
_ONE_BYTE = [bytes((n,)) for n in range(0x80)]  # varints below 128
_BYTES_LIST, _FLOAT_LIST, _INT64_LIST = 1, 2, 3  # Feature's `kind` field numbers


def _varint(n: int) -> bytes:
    """Base-128 varint of an int64 (negative values as their two's complement)."""
    if 0 <= n < 0x80:
        return _ONE_BYTE[n]
    if 0 < n < 0x200000:  # two or three bytes: most lengths and time deltas
        if n < 0x4000:
            return bytes((n & 0x7F | 0x80, n >> 7))
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14))
    n &= _UINT64
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _tag(field: int) -> bytes:
    """The tag of a length-delimited field (wire type 2)."""
    return bytes((field << 3 | 2,))


def _delimited(field: int, payload: bytes) -> bytes:
    return _tag(field) + _varint(len(payload)) + payload


@functools.lru_cache(maxsize=8192)
def _prefix(key: str, kind: int, size: int) -> bytes:
    """Everything of one `Features.feature` map entry before its list's `size`
    payload bytes: the entry, key, Feature and list headers. All lengths follow from
    `size`, so the prefix is computed once per (key, kind, size)."""
    list_header = _tag(kind) + _varint(size)
    feature_size = len(list_header) + size
    body = _delimited(1, key.encode("utf-8")) + _tag(2) + _varint(feature_size)
    return _tag(1) + _varint(len(body) + feature_size) + body + list_header


def _packed(data: bytes) -> bytes:
    """The list message of a packed repeated field 1 (empty when there are no
    values, as protobuf writes it)."""
    return _delimited(1, data) if data else b""


@functools.lru_cache(maxsize=1 << 16)
def _bytes_value(value: str) -> bytes:
    """One `BytesList.value` field; cached, as ids repeat across examples."""
    return _delimited(1, value.encode("utf-8"))


def bytes_feature(key: str, values: Iterable[str]) -> bytes:
    """A `bytes_list` feature of UTF-8 encoded strings."""
    payload = b"".join(map(_bytes_value, values))
    return _prefix(key, _BYTES_LIST, len(payload)) + payload


def float_feature(key: str, values: Sequence[float]) -> bytes:
    """A `float_list` feature (values rounded to float32, as protobuf does)."""
    payload = _packed(struct.pack(f"<{len(values)}f", *values))
    return _prefix(key, _FLOAT_LIST, len(payload)) + payload


def int64_feature(key: str, values: Sequence[int]) -> bytes:
    """An `int64_list` feature; negative values take ten bytes, as in protobuf."""
    payload = _packed(b"".join(map(_varint, values)))
    return _prefix(key, _INT64_LIST, len(payload)) + payload


def example(*features: bytes) -> bytes:
    """A serialized `tf.Example` holding the given feature entries (each key once)."""
    return _delimited(1, b"".join(features))
