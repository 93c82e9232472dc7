"""Message classes for TF Serving protos the `tensorflow-serving-api` package lacks.

The package ships the request, model-config and logging protos, but not
`BatchingParameters` (session_bundle_config.proto) or `MonitoringConfig`
(monitoring_config.proto), whose text files `tensorflow_model_server` reads.
`message_class` builds such a message from its fields' names, numbers and types, in a
pool of its own, so protobuf's text format parser reads those files as TF Serving
does (unknown fields and wrong types are errors with a line and column).
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence, Tuple

from google.protobuf import (descriptor_pb2, descriptor_pool, message_factory, text_format,
                              wrappers_pb2)

# (number, name, descriptor_pb2.FieldDescriptorProto type, type name or None);
# a name in a repeated field's tuple is given as ("repeated", name)
Field = Tuple[int, object, int, Optional[str]]


def message_class(package: str, file_name: str,
                  messages: Mapping[str, Sequence[Field]], name: str):
    """The class of message `package.name`, from `messages` (message name → fields,
    in dependency order). Fields of `google.protobuf` wrapper types may be used."""
    kind = descriptor_pb2.FieldDescriptorProto
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    proto = descriptor_pb2.FileDescriptorProto(
        name=file_name, package=package, syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"])
    for message_name, fields in messages.items():
        message = proto.message_type.add(name=message_name)
        for number, field_name, field_type, type_name in fields:
            label = kind.LABEL_OPTIONAL
            if isinstance(field_name, tuple):
                label, field_name = kind.LABEL_REPEATED, field_name[1]
            field = message.field.add(name=field_name, number=number, label=label,
                                      type=field_type)
            if type_name:
                field.type_name = type_name
    pool.Add(proto)
    descriptor = pool.FindMessageTypeByName(f"{package}.{name}")
    return message_factory.MessageFactory(pool).GetPrototype(descriptor)


def parse_text(message_class, text: str, source: str):
    """`text` parsed as a `message_class` in text format; a ValueError naming `source`,
    the message and the parser's line and column if it is not one."""
    message = message_class()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as e:
        raise ValueError(f"{source}: not a {message.DESCRIPTOR.full_name} in text "
                         f"format: {e}") from e
    return message
