"""Server reflection under both names: `grpc.reflection.v1` and `grpc.reflection.v1alpha`.

grpcio-reflection ships only v1alpha; current clients (grpcurl, Postman, buf
curl) ask v1 first. The two protocols have the same messages (field names and
numbers) under another package, so one servicer serves both: the v1 method is
registered with the v1alpha message codecs, and a v1 copy of the reflection
file is added to the descriptor pool so `describe grpc.reflection.v1…` works.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2
from grpc_reflection.v1alpha._async import ReflectionServicer

from kaireon_server.platform.reflection_pool import MethodResolvingPool

V1ALPHA_SERVICE = "grpc.reflection.v1alpha.ServerReflection"
V1_SERVICE = "grpc.reflection.v1.ServerReflection"
_V1_FILE = "grpc/reflection/v1/reflection.proto"


def _add_v1_file(pool: descriptor_pool.DescriptorPool) -> None:
    """The v1alpha file renamed to v1 (same messages), unless the pool has it already."""
    try:
        pool.FindFileByName(_V1_FILE)
        return
    except KeyError:
        pass
    renamed = descriptor_pb2.FileDescriptorProto()
    v1alpha_pb2.DESCRIPTOR.CopyToProto(renamed)
    renamed.name = _V1_FILE
    renamed.package = "grpc.reflection.v1"
    for message in renamed.message_type:
        for field in message.field:
            if field.HasField("type_name"):  # set only on message fields: keep scalars unset
                field.type_name = field.type_name.replace(".v1alpha.", ".v1.")
    for service in renamed.service:
        for method in service.method:
            method.input_type = method.input_type.replace(".v1alpha.", ".v1.")
            method.output_type = method.output_type.replace(".v1alpha.", ".v1.")
    renamed.options.Clear()
    pool.Add(renamed)


def enable_reflection(server: grpc.aio.Server, service_names: Sequence[str]) -> None:
    """Serve reflection of `service_names` (plus both reflection services) on `server`."""
    pool = descriptor_pool.Default()
    _add_v1_file(pool)
    names = [*service_names, V1_SERVICE, V1ALPHA_SERVICE]
    servicer = ReflectionServicer(names, pool=MethodResolvingPool(pool))
    method = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=v1alpha_pb2.ServerReflectionRequest.FromString,
        response_serializer=v1alpha_pb2.ServerReflectionResponse.SerializeToString,
    )
    for service in (V1_SERVICE, V1ALPHA_SERVICE):
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, {"ServerReflectionInfo": method}),)
        )
