// DSAR create + watch: CreateDsarRequest then WatchDsarRequest until the job
// is completed (or failed), over gRPC; POST /api/v1/dsar then the NDJSON
// stream GET /api/v1/dsar/{id}/watch over REST. The figure is the time from
// create to the completed state (kaireon_e2e), i.e. queueing + export of one
// seeded customer. A twentieth of the level.

import { options as makeOptions } from './lib/config.js';
import { scenarioCalls } from './lib/ops.js';

export { handleSummary } from './lib/summary.js';

export const options = makeOptions(0.05, 2000, 300, true);
export const { grpcCall, restCall } = scenarioCalls('dsar', true);
