// DSAR create + watch: CreateDsarRequest then WatchDsarRequest until the job
// is completed (or failed), over gRPC; POST /api/v1/dsar then the NDJSON
// stream GET /api/v1/dsar/{id}/watch over REST. The figure is the time from
// create to the completed state (kaireon_e2e), i.e. queueing + export of one
// seeded customer. A twentieth of the level.

import http from 'k6/http';
import grpc from 'k6/net/grpc';

import {
  BASE_URL,
  connect,
  GRPC_TARGET,
  HEADERS,
  METADATA,
  options as makeOptions,
  randomCustomer,
  record,
} from './lib/config.js';

export { handleSummary } from './lib/summary.js';

export const options = makeOptions(0.05, 2000, 300, true);

const WATCH_TIMEOUT = __ENV.WATCH_TIMEOUT || '30s';
const TERMINAL = ['completed', 'failed'];
const client = new grpc.Client();

export function grpcCall() {
  if (!connect(client, GRPC_TARGET)) {
    record(false, 'grpc');
    return;
  }
  const started = Date.now();
  let created = null;
  try {
    created = client.invoke(
      'kaireon.dsar.v1.DsarService/CreateDsarRequest',
      { request_type: 'export', subject_id: randomCustomer() },
      { metadata: METADATA, timeout: '10s' },
    );
  } catch (_) {
    created = null;
  }
  if (!created || created.status !== grpc.StatusOK) {
    record(false, 'grpc', Date.now() - started);
    return;
  }
  const stream = new grpc.Stream(client, 'kaireon.dsar.v1.DsarService/WatchDsarRequest', {
    metadata: METADATA,
    timeout: WATCH_TIMEOUT,
  });
  let done = false;
  const finish = (ok) => {
    if (!done) {
      done = true;
      record(ok, 'grpc', Date.now() - started);
    }
  };
  stream.on('data', (message) => {
    const status = message.request ? message.request.status : '';
    if (TERMINAL.includes(status)) {
      finish(status === 'completed');
    }
  });
  stream.on('error', () => finish(false));
  // A stream that ends before a terminal state is a failed watch.
  stream.on('end', () => finish(false));
  stream.write({ id: created.message.request.id });
  stream.end();
}

export function restCall() {
  const started = Date.now();
  const created = http.post(
    `${BASE_URL}/api/v1/dsar`,
    JSON.stringify({ requestType: 'export', subjectId: randomCustomer() }),
    {
      headers: { ...HEADERS, 'Content-Type': 'application/json' },
      timeout: '10s',
      tags: { name: 'POST /api/v1/dsar' },
    },
  );
  let id = '';
  try {
    id = created.json('request.id');
  } catch (_) {
    id = '';
  }
  if (created.status !== 200 || !id) {
    record(false, 'rest', Date.now() - started);
    return;
  }
  // The watch answers NDJSON and ends once the job is terminal.
  const watched = http.get(`${BASE_URL}/api/v1/dsar/${id}/watch`, {
    headers: HEADERS,
    timeout: WATCH_TIMEOUT,
    tags: { name: 'GET /api/v1/dsar/{id}/watch' },
  });
  const ok = watched.status === 200 && /"status":\s*"completed"/.test(watched.body || '');
  record(ok, 'rest', Date.now() - started);
}
