// Erasure of freshly seeded customers: EraseCustomer over gRPC and
// POST /api/v1/gdpr/erasure over REST. Every iteration erases a customer no
// one erased before, from the pool perf/run seeds (ecust_0000001…): erasing a
// customer twice would measure an empty transaction. A tenth of the level.
//
//   ERASE_OFFSET  pool index to start from (the harness gives each run its own slice)
//   ERASE_POOL    pool size; iterations past it count as errors (pool exhausted)

import exec from 'k6/execution';
import http from 'k6/http';
import grpc from 'k6/net/grpc';

import {
  BASE_URL,
  connect,
  GRPC_TARGET,
  HEADERS,
  METADATA,
  PROTOCOL,
  invoke,
  options as makeOptions,
  pad,
  record,
} from './lib/config.js';

export { handleSummary } from './lib/summary.js';

export const options = makeOptions(0.1, 500, 50);

const OFFSET = parseInt(__ENV.ERASE_OFFSET || '0', 10);
const POOL = parseInt(__ENV.ERASE_POOL || '1000000', 10);
const METHOD = 'kaireon.erasure.v1.ErasureService/EraseCustomer';
const client = new grpc.Client();

// With PROTOCOL=both the two scenarios take alternate customers of the slice.
function nextCustomer(lane) {
  const i = exec.scenario.iterationInTest;
  const index = PROTOCOL === 'both' ? 2 * i + lane : i;
  const n = OFFSET + index + 1;
  return n > POOL ? null : `ecust_${pad(n, 7)}`;
}

export function grpcCall() {
  if (!connect(client, GRPC_TARGET)) {
    record(false, 'grpc');
    return;
  }
  const customer = nextCustomer(0);
  if (customer === null) {
    record(false, 'grpc');
    return;
  }
  const ok = invoke(
    client,
    METHOD,
    { customer_id: customer },
    { metadata: METADATA, timeout: '30s', discardResponseMessage: true },
  );
  record(ok, 'grpc');
}

export function restCall() {
  const customer = nextCustomer(1);
  if (customer === null) {
    record(false, 'rest');
    return;
  }
  const res = http.post(`${BASE_URL}/api/v1/gdpr/erasure`, JSON.stringify({ customerId: customer }), {
    headers: { ...HEADERS, 'Content-Type': 'application/json' },
    timeout: '30s',
    responseType: 'none',
    tags: { name: 'POST /api/v1/gdpr/erasure' },
  });
  record(res.status === 200, 'rest');
}
