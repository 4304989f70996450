// Flow start: StartRun over gRPC and POST /api/v1/flow/runs over REST, with a
// small no-op definition (one inline source, one filter that keeps every record). The
// call returns once the run is accepted; the per-node overhead of a running
// flow is measured by perf/run separately (a chain of no-op nodes). A tenth
// of the level.

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
  record,
} from './lib/config.js';

export { handleSummary } from './lib/summary.js';

export const options = makeOptions(0.1, 500, 50);

const DEFINITION = JSON.parse(open('./lib/flow_definition.json'));
const client = new grpc.Client();

export function grpcCall() {
  if (!connect(client, GRPC_TARGET)) {
    record(false, 'grpc');
    return;
  }
  const ok = invoke(
    client,
    'kaireon.flow.v1.FlowRunnerService/StartRun',
    { definition: DEFINITION },
    { metadata: METADATA, timeout: '10s', discardResponseMessage: true },
  );
  record(ok, 'grpc');
}

export function restCall() {
  const res = http.post(`${BASE_URL}/api/v1/flow/runs`, JSON.stringify({ definition: DEFINITION }), {
    headers: { ...HEADERS, 'Content-Type': 'application/json' },
    timeout: '10s',
    responseType: 'none',
    tags: { name: 'POST /api/v1/flow/runs' },
  });
  record(res.status === 200, 'rest');
}
