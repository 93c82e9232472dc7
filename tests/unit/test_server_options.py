"""The gRPC server's options: TF Serving's message limit and its
`--grpc_channel_arguments` text (model_servers/server.cc)."""

from __future__ import annotations

import pytest

from serving.contract import MAX_MESSAGE_BYTES
from serving.server import parse_grpc_channel_arguments, server_options


def test_channel_arguments_are_key_value_pairs_with_int32_values_as_ints():
    assert parse_grpc_channel_arguments(
        "grpc.max_receive_message_length=1048576, grpc.primary_user_agent=me,"
        "grpc.keepalive_time_ms=-1,grpc.x=2147483648,grpc.y=") == [
        ("grpc.max_receive_message_length", 1048576),
        ("grpc.primary_user_agent", "me"),
        ("grpc.keepalive_time_ms", -1),
        ("grpc.x", "2147483648"),  # beyond int32: a string, as safe_strto32 fails
        ("grpc.y", ""),
    ]
    assert parse_grpc_channel_arguments("") == []


@pytest.mark.parametrize("text, item", [("grpc.nothing", "grpc.nothing"),
                                        ("a=1,=2", "=2")])
def test_an_item_without_key_and_value_is_named(text, item):
    with pytest.raises(ValueError, match=f"'{item}' is not key=value"):
        parse_grpc_channel_arguments(text)


def test_the_server_takes_tf_servings_message_limit_unless_told_otherwise():
    assert dict(server_options()) == {
        "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
        "grpc.max_send_message_length": MAX_MESSAGE_BYTES}
    assert MAX_MESSAGE_BYTES == 2 ** 31 - 1  # tensorflow::kint32max
    options = server_options("grpc.max_receive_message_length=5,grpc.so_reuseport=0")
    assert options == [("grpc.max_receive_message_length", 5),
                       ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                       ("grpc.so_reuseport", 0)]
