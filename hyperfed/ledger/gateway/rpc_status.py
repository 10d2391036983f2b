"""Rich gRPC status (``google.rpc.Status`` with ``gateway.ErrorDetail`` details).

The Fabric gateway puts one ``gateway.ErrorDetail`` per failing peer/orderer into the
``grpc-status-details-bin`` trailer — that is where a chaincode's own error message
travels. ``googleapis-common-protos``/``grpcio-status`` are not dependencies, so the tiny
``google.rpc.Status`` message is declared here in a private descriptor pool (it cannot
clash with a ``google.rpc`` package installed later).
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from fabric_protos.gateway import gateway_pb2
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory

__all__ = ["STATUS_DETAILS_KEY", "RpcStatus", "error_details", "encode_status"]

STATUS_DETAILS_KEY = "grpc-status-details-bin"


def _status_class() -> type:
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(any_pb2.DESCRIPTOR.serialized_pb)
    file = descriptor_pb2.FileDescriptorProto(
        name="google/rpc/status.proto",
        package="google.rpc",
        syntax="proto3",
        dependency=["google/protobuf/any.proto"],
    )
    msg = file.message_type.add(name="Status")
    label = descriptor_pb2.FieldDescriptorProto
    msg.field.add(name="code", number=1, type=label.TYPE_INT32, label=label.LABEL_OPTIONAL)
    msg.field.add(name="message", number=2, type=label.TYPE_STRING, label=label.LABEL_OPTIONAL)
    msg.field.add(
        name="details",
        number=3,
        type=label.TYPE_MESSAGE,
        label=label.LABEL_REPEATED,
        type_name=".google.protobuf.Any",
    )
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.Status"))


_Status = _status_class()


@dataclass(frozen=True)
class RpcStatus(grpc.Status):
    """A ``grpc.Status`` for ``ServicerContext.abort_with_status``."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, bytes], ...] = ()


def encode_status(code: grpc.StatusCode, message: str, details: list[gateway_pb2.ErrorDetail] = ()) -> RpcStatus:
    """Build the status a Fabric gateway would return, details attached as trailer."""
    status = _Status(code=code.value[0], message=message)
    for detail in details:
        packed = status.details.add()
        packed.Pack(detail)
    trailer = ((STATUS_DETAILS_KEY, status.SerializeToString()),) if details else ()
    return RpcStatus(code, message, trailer)


def error_details(error: grpc.RpcError) -> list[gateway_pb2.ErrorDetail]:
    """The ``gateway.ErrorDetail`` entries attached to a failed call (may be empty)."""
    trailers = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailers or ():
        if key != STATUS_DETAILS_KEY:
            continue
        try:
            status = _Status.FromString(value)
        except Exception:  # a malformed trailer must not hide the original error
            return []
        out = []
        for packed in status.details:
            detail = gateway_pb2.ErrorDetail()
            if packed.Unpack(detail):
                out.append(detail)
        return out
    return []
