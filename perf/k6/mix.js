// A mix of reads and erasures over gRPC and REST side by side: the offered load
// of the scale-out scenario (perf/harness/scenarios/scaleout.py: 1 vs 3 replicas
// behind nginx) and of the rolling-restart test (tests/multihost). Four
// constant-arrival-rate scenarios:
//
//   read_grpc, read_rest    provenance of a random decision, READ_RATE/s each
//   erase_grpc, erase_rest  erasure of a customer nobody erased before (ecust_…
//                           from ERASE_OFFSET; the two take alternate ones),
//                           ERASE_RATE/s each
//
// Every call records kaireon_requests / kaireon_errors (tagged protocol, op,
// outcome) and kaireon_e2e (its milliseconds), so one latency covers the mix.
//
//   READ_RATE=40 ERASE_RATE=5 DURATION=30s GRPC_TARGET=… BASE_URL=… \
//     AUTHORIZATION="Bearer $JWT" k6 run perf/k6/mix.js

import exec from 'k6/execution';

import { DURATION, MAX_ERROR_RATE, pad, record } from './lib/config.js';
import { erasureGrpc, erasureRest, OUTCOMES, provenanceGrpc, provenanceRest } from './lib/ops.js';

export { handleSummary } from './lib/summary.js';

const READ_RATE = parseInt(__ENV.READ_RATE || '40', 10);
const ERASE_RATE = parseInt(__ENV.ERASE_RATE || '5', 10);
const OFFSET = parseInt(__ENV.ERASE_OFFSET || '0', 10);
const POOL = parseInt(__ENV.ERASE_POOL || '1000000', 10);

function scenario(exec_, rate, expectedMs) {
  const needed = Math.ceil((rate * expectedMs) / 1000);
  return {
    executor: 'constant-arrival-rate',
    rate,
    timeUnit: '1s',
    duration: DURATION,
    preAllocatedVUs: Math.min(Math.max(needed, 5), 400),
    maxVUs: Math.min(Math.max(needed * 4, 40), 1000),
    gracefulStop: '10s',
    exec: exec_,
  };
}

const chosen = {};
if (READ_RATE > 0) {
  chosen.read_grpc = scenario('readGrpc', READ_RATE, 50);
  chosen.read_rest = scenario('readRest', READ_RATE, 50);
}
if (ERASE_RATE > 0) {
  chosen.erase_grpc = scenario('eraseGrpc', ERASE_RATE, 200);
  chosen.erase_rest = scenario('eraseRest', ERASE_RATE, 200);
}

// The harness and the tests judge the figures; the always-true thresholds keep
// the sub-metrics (per protocol, operation and outcome) in the summary.
const thresholds = {
  kaireon_errors: [`rate<${MAX_ERROR_RATE}`],
  'kaireon_requests{protocol:grpc}': ['count>=0'],
  'kaireon_requests{protocol:rest}': ['count>=0'],
  'kaireon_errors{op:read}': ['rate>=0'],
  'kaireon_errors{op:erase}': ['rate>=0'],
  'kaireon_e2e{op:read}': ['p(99)>=0'],
  'kaireon_e2e{op:erase}': ['p(99)>=0'],
};
for (const outcome of OUTCOMES) {
  thresholds[`kaireon_requests{outcome:${outcome}}`] = ['count>=0'];
}

export const options = {
  scenarios: chosen,
  thresholds,
  summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(50)', 'p(95)', 'p(99)'],
};

function customer(lane) {
  const n = OFFSET + 2 * exec.scenario.iterationInTest + lane + 1;
  return n > POOL ? null : `ecust_${pad(n, 7)}`;
}

function recorder(protocol, op) {
  return (r) => record(r.ok, protocol, r.ms, r.outcome, op);
}

export function readGrpc() {
  provenanceGrpc(recorder('grpc', 'read'));
}

export function readRest() {
  provenanceRest(recorder('rest', 'read'));
}

export function eraseGrpc() {
  erasureGrpc(recorder('grpc', 'erase'), customer(0));
}

export function eraseRest() {
  erasureRest(recorder('rest', 'erase'), customer(1));
}
