// Shared settings of the k6 operations: where, as whom, over which population
// (perf/README.md lists every variable); the metrics every operation records.

import { Counter, Rate, Trend } from 'k6/metrics';

function env(name, fallback) {
  const value = __ENV[name];
  return value === undefined || value === '' ? fallback : value;
}

export const GRPC_TARGET = env('GRPC_TARGET', '127.0.0.1:50051');
export const BASE_URL = env('BASE_URL', 'http://127.0.0.1:8080');
export const TENANT = env('TENANT', 'perf');
export const ROLE = env('ROLE', 'admin');
export const CUSTOMERS = parseInt(env('CUSTOMERS', '10000'), 10);

// Identity as a trusted gateway would pass it (KAIREON_TRUST_HEADERS=true), or,
// with AUTHORIZATION set ("Bearer <JWT>"), the token a client sends to servers
// that do not trust headers (the multi-host lab behind nginx).
export const AUTHORIZATION = env('AUTHORIZATION', '');
export const METADATA = AUTHORIZATION
  ? { authorization: AUTHORIZATION }
  : { 'x-tenant-id': TENANT, 'x-user-role': ROLE };
export const HEADERS = AUTHORIZATION
  ? { Authorization: AUTHORIZATION }
  : { 'X-Tenant-Id': TENANT, 'X-User-Role': ROLE };

// The same names in every scenario, so the harness reads one set of metrics.
// Latency of a single call is k6's own grpc_req_duration / http_req_duration
// (microsecond timers; JavaScript's Date.now() only has milliseconds); every
// operation also records its end-to-end time, kaireon_e2e, the figure of those
// of several calls (DSAR create + watch).
export const e2e = new Trend('kaireon_e2e', true);
export const errors = new Rate('kaireon_errors');
export const requests = new Counter('kaireon_requests');

export function pad(n, width) {
  return String(n).padStart(width, '0');
}

// A random decision of the read population: dec_00001_1 … dec_<CUSTOMERS>_3.
export function randomDecision() {
  const customer = 1 + Math.floor(Math.random() * CUSTOMERS);
  const k = 1 + Math.floor(Math.random() * 3);
  return `dec_${pad(customer, 5)}_${k}`;
}

export function randomCustomer() {
  return `cust_${pad(1 + Math.floor(Math.random() * CUSTOMERS), 5)}`;
}

// Count one operation with its end-to-end time (ms), its samples tagged with
// the protocol, the outcome (lib/ops.js) and the operation. Failed operations
// count in the latency too: a fast error must not flatter it.
export function record(ok, protocol, ms, outcome, op) {
  const tags = { protocol, outcome, op };
  requests.add(1, tags);
  errors.add(!ok, tags);
  e2e.add(ms, tags);
}
