"""One valid request per RPC, made of a populated tenant's identifiers.

The cross-tenant table sends these with another tenant's identity; the fuzzer
uses them as seeds that generated fields are merged into, so its requests
reach past the first validation. Keyed like rpcs.METHOD_NAMES; a new RPC
needs an entry here (both users check that).
"""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf.message import Message

from kaireon.audit.v1 import audit_pb2
from kaireon.dsar.v1 import dsar_pb2
from kaireon.erasure.v1 import erasure_pb2
from kaireon.flow.v1 import flow_pb2
from kaireon.provenance.v1 import provenance_pb2
from kaireon.requests.v1 import requests_pb2
from tests.security.conftest import World, flow_definition

SQL_READ = "SELECT customer_id, offer_id FROM interaction_history"


def start_run(world: World) -> flow_pb2.StartRunRequest:
    """A new run under the world's run id that also reads a platform table with SQL."""
    definition = flow_definition(f"start-{world.marker}")
    read = definition.nodes.add(id="read", type="source.sql")
    read.config.update({"query": SQL_READ})
    return flow_pb2.StartRunRequest(definition=definition, run_id=world.run_id)


REQUESTS: dict[str, Callable[[World], Message]] = {
    "AuditService.ListAuditEvents": lambda w: audit_pb2.ListAuditEventsRequest(page_size=1000),
    "AuditService.VerifyChain": lambda w: audit_pb2.VerifyChainRequest(),
    "AuditService.GetCheckpoint": lambda w: audit_pb2.GetCheckpointRequest(),
    # Tree size 2: a checkpoint A has, not the fresh tenant B (one row).
    "AuditService.GetInclusionProof": lambda w: audit_pb2.GetInclusionProofRequest(
        index=0, tree_size=2
    ),
    "AuditService.GetConsistencyProof": lambda w: audit_pb2.GetConsistencyProofRequest(
        first_size=1, second_size=2
    ),
    "AuditService.ListEntries": lambda w: audit_pb2.ListEntriesRequest(start=0, end=1, tree_size=2),
    "AuditService.AddCosignature": lambda w: audit_pb2.AddCosignatureRequest(
        tree_size=2, cosignature="\u2014 witness.example/w " + "A" * 96
    ),
    "AuditService.VerifyLog": lambda w: audit_pb2.VerifyLogRequest(),
    "AuditService.GetLogResource": lambda w: audit_pb2.GetLogResourceRequest(
        path="tile/entries/000.p/2"
    ),
    "AuditService.StreamVerifyLog": lambda w: audit_pb2.StreamVerifyLogRequest(),
    "DsarService.CreateDsarRequest": lambda w: dsar_pb2.CreateDsarRequestRequest(
        request_type="export", subject_id=w.customer, idempotency_key=w.idempotency_key
    ),
    "DsarService.GetDsarRequest": lambda w: dsar_pb2.GetDsarRequestRequest(id=w.dsar_id),
    "DsarService.ListDsarRequests": lambda w: dsar_pb2.ListDsarRequestsRequest(
        subject_id=w.customer, status="completed"
    ),
    "DsarService.WatchDsarRequest": lambda w: dsar_pb2.WatchDsarRequestRequest(id=w.dsar_id),
    "DsarService.StreamDsarExport": lambda w: dsar_pb2.StreamDsarExportRequest(id=w.dsar_id),
    "ErasureService.EraseCustomer": lambda w: erasure_pb2.EraseCustomerRequest(
        customer_id=w.customer
    ),
    "ErasureService.SetLegalHold": lambda w: erasure_pb2.SetLegalHoldRequest(
        customer_id=w.held_customer, reason="case-other"
    ),
    "ErasureService.ReleaseLegalHold": lambda w: erasure_pb2.ReleaseLegalHoldRequest(
        customer_id=w.held_customer
    ),
    "ErasureService.ListLegalHolds": lambda w: erasure_pb2.ListLegalHoldsRequest(),
    "FlowRunnerService.StartRun": start_run,
    "FlowRunnerService.RetryRun": lambda w: flow_pb2.RetryRunRequest(run_id=w.run_id),
    "FlowRunnerService.GetRun": lambda w: flow_pb2.GetRunRequest(run_id=w.run_id),
    "FlowRunnerService.ListRuns": lambda w: flow_pb2.ListRunsRequest(
        state=flow_pb2.RUN_STATE_SUCCEEDED
    ),
    "FlowRunnerService.ClearCheckpoints": lambda w: flow_pb2.ClearCheckpointsRequest(
        run_id=w.run_id
    ),
    "FlowRunnerService.CancelRun": lambda w: flow_pb2.CancelRunRequest(run_id=w.run_id),
    "FlowRunnerService.WatchRun": lambda w: flow_pb2.WatchRunRequest(run_id=w.run_id),
    # A's node whose output carries A's marker.
    "FlowRunnerService.GetNodeOutput": lambda w: flow_pb2.GetNodeOutputRequest(
        run_id=w.run_id, node_id="records"
    ),
    "ProvenanceService.GetDecisionProvenance": lambda w: (
        provenance_pb2.GetDecisionProvenanceRequest(decision_id=w.decision)
    ),
    "ProvenanceService.GetSigningKey": lambda w: provenance_pb2.GetSigningKeyRequest(),
    "ProvenanceService.StreamDecisionProvenance": lambda w: (
        provenance_pb2.StreamDecisionProvenanceRequest(decision_ids=[w.decision])
    ),
    "RequestService.CreateRequest": lambda w: requests_pb2.CreateRequestRequest(
        kind="erasure", subject_id=w.customer, regulation="gdpr"
    ),
    "RequestService.GetRequest": lambda w: requests_pb2.GetRequestRequest(id=w.subject_request_id),
    "RequestService.ListRequests": lambda w: requests_pb2.ListRequestsRequest(state="received"),
    "RequestService.VerifyIdentity": lambda w: requests_pb2.VerifyIdentityRequest(
        id=w.subject_request_id,
        method="email_link",
        evidence_reference="ticket-other",
        result=requests_pb2.VERIFICATION_RESULT_VERIFIED,
    ),
    # A's request is verified: approving it would erase A's customer.
    "RequestService.ApproveRequest": lambda w: requests_pb2.ApproveRequestRequest(
        id=w.subject_request_id
    ),
    "RequestService.DenyRequest": lambda w: requests_pb2.DenyRequestRequest(
        id=w.subject_request_id, reason="other"
    ),
    "RequestService.ExtendRequest": lambda w: requests_pb2.ExtendRequestRequest(
        id=w.subject_request_id, reason="other"
    ),
    "RequestService.PauseRequest": lambda w: requests_pb2.PauseRequestRequest(
        id=w.subject_request_id, reason="other"
    ),
    "RequestService.ResumeRequest": lambda w: requests_pb2.ResumeRequestRequest(
        id=w.subject_request_id
    ),
    "RequestService.CancelRequest": lambda w: requests_pb2.CancelRequestRequest(
        id=w.subject_request_id, reason="other"
    ),
    "RequestService.SetRequestPolicy": lambda w: requests_pb2.SetRequestPolicyRequest(
        policy=requests_pb2.RequestPolicy(
            regulation="gdpr", period_months=1, max_extension_months=2, require_verification=True
        )
    ),
    "RequestService.ListRequestPolicies": lambda w: requests_pb2.ListRequestPoliciesRequest(),
    # A's processor name: B gets its own processor, not ALREADY_EXISTS.
    "RequestService.RegisterProcessor": lambda w: requests_pb2.RegisterProcessorRequest(
        name=w.processor_name, url="https://processor.example/hooks"
    ),
    "RequestService.ListProcessors": lambda w: requests_pb2.ListProcessorsRequest(),
    "RequestService.TestProcessor": lambda w: requests_pb2.TestProcessorRequest(
        processor_id=w.processor_id
    ),
    "RequestService.WaiveDelivery": lambda w: requests_pb2.WaiveDeliveryRequest(
        request_id=w.subject_request_id, processor_id=w.processor_id, reason="erased by hand"
    ),
}
