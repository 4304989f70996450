from kaireon.audit.v1 import audit_pb2, audit_pb2_grpc

from tests.support.server import metadata


async def test_verify_empty_chain(channel, tenant):
    stub = audit_pb2_grpc.AuditServiceStub(channel)
    reply = await stub.VerifyChain(audit_pb2.VerifyChainRequest(), metadata=metadata(tenant))
    assert reply.valid and reply.rows_checked == 0
