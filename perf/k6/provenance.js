// Provenance read: GetDecisionProvenance over gRPC (the protos loaded by lib/ops.js) and
// GET /api/v1/decisions/{id}/provenance over REST, on random decisions of the
// seeded read population. Full rate of the level; p99 < 50 ms (issue 9's
// target at 1K RPS over REST).
//
//   LEVEL=1k PROTOCOL=rest .venv/bin/k6 run perf/k6/provenance.js

import { options as makeOptions } from './lib/config.js';
import { scenarioCalls } from './lib/ops.js';

export { handleSummary } from './lib/summary.js';

export const options = makeOptions(1.0, 50, 20);
export const { grpcCall, restCall } = scenarioCalls('provenance');
