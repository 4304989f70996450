// Erasure of freshly seeded customers: EraseCustomer over gRPC and
// POST /api/v1/gdpr/erasure over REST. Every iteration erases a customer no
// one erased before, from the pool perf/run seeds (ecust_0000001…): erasing a
// customer twice would measure an empty transaction. A tenth of the level.
//
//   ERASE_OFFSET  pool index to start from (the harness gives each run its own slice)
//   ERASE_POOL    pool size; iterations past it count as errors (pool exhausted)

import exec from 'k6/execution';

import { PROTOCOL, options as makeOptions, pad } from './lib/config.js';
import { scenarioCalls } from './lib/ops.js';

export { handleSummary } from './lib/summary.js';

export const options = makeOptions(0.1, 500, 50);

const OFFSET = parseInt(__ENV.ERASE_OFFSET || '0', 10);
const POOL = parseInt(__ENV.ERASE_POOL || '1000000', 10);

// With PROTOCOL=both the two scenarios take alternate customers of the slice.
function nextCustomer(lane) {
  const i = exec.scenario.iterationInTest;
  const index = PROTOCOL === 'both' ? 2 * i + lane : i;
  const n = OFFSET + index + 1;
  return n > POOL ? null : `ecust_${pad(n, 7)}`;
}

export const { grpcCall, restCall } = scenarioCalls('erasure', false, nextCustomer);
