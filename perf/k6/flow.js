// Flow start: StartRun over gRPC and POST /api/v1/flow/runs over REST, with a
// small no-op definition (one inline source, one filter that keeps every record). The
// call returns once the run is accepted; the per-node overhead of a running
// flow is measured by perf/run separately (a chain of no-op nodes). A tenth
// of the level.

import { options as makeOptions } from './lib/config.js';
import { scenarioCalls } from './lib/ops.js';

export { handleSummary } from './lib/summary.js';

export const options = makeOptions(0.1, 500, 50);
export const { grpcCall, restCall } = scenarioCalls('flow');
