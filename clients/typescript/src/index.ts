// @kaireon/compliance-client: generated messages and service descriptors
// (./gen, protobuf-es v2), typed gRPC clients, offline verification, DSAR envelopes.
export * from "./client.js";
export * from "./errors.js";
export * from "./verify.js";
export * from "./envelope.js";
export { canonicalize, canonicalBytes } from "./canonical.js";
export * from "./gen/kaireon/audit/v1/audit_pb.js";
export * from "./gen/kaireon/auth/v1/auth_pb.js";
export * from "./gen/kaireon/dsar/v1/dsar_pb.js";
export * from "./gen/kaireon/erasure/v1/erasure_pb.js";
export * from "./gen/kaireon/flow/v1/flow_pb.js";
export * from "./gen/kaireon/provenance/v1/provenance_pb.js";
export * from "./gen/kaireon/requests/v1/requests_pb.js";
