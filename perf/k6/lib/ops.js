// The operations the scenarios of soak.js call, one function per operation and
// protocol (OPS). Each calls done(result) exactly once, with
//   { ok, outcome, ms }
// outcome: ok | shed (RESOURCE_EXHAUSTED / HTTP 429: the server refused the
// work) | unavailable (UNAVAILABLE / 503) | timeout (DEADLINE_EXCEEDED / 504 /
// k6 gave up waiting) | network (no connection) | error (anything else, a
// DSAR that ended "failed" included); ms: milliseconds from the first call to
// the answer (Date.now(): millisecond resolution). The DSAR watch is a stream
// whose messages arrive as events, hence the callback.

import encoding from 'k6/encoding';
import http from 'k6/http';
import grpc from 'k6/net/grpc';

import {
  BASE_URL,
  GRPC_TARGET,
  HEADERS,
  METADATA,
  randomCustomer,
  randomDecision,
} from './config.js';

// One client per VU (module state is per VU), its services loaded from the
// protos at init, not by reflection: k6 registers reflected descriptors in a
// process-wide registry, and VUs that connect at the same moment (an
// arrival-rate executor starting more of them under load) can panic the whole
// run with "message ... is already registered" (grafana/k6#3961). The echo
// servers of the ceilings (perf/harness/echo_server.py) have no reflection either.
const client = new grpc.Client();
let connected = false; // it connects on the VU's first call
const PROTOS = {
  provenance: 'kaireon/provenance/v1/provenance.proto',
  erasure: 'kaireon/erasure/v1/erasure.proto',
  dsar: 'kaireon/dsar/v1/dsar.proto',
  flow: 'kaireon/flow/v1/flow.proto',
  echo: 'echo.proto',
};

// At init: the protos of the operations a plan calls, no more (parsing all of
// Kaireon's in every VU would add to the echo row's k6 CPU, what k6 itself costs).
export function loadProtos(ops) {
  // Relative to the entry script (perf/k6/soak.js), as k6 resolves them.
  const paths = ['../../protos', '../../third_party/googleapis', 'proto'];
  client.load(paths, ...new Set(ops.map((op) => PROTOS[op])));
}
const DEFINITION = JSON.parse(open('./flow_definition.json'));
const JSON_HEADERS = { ...HEADERS, 'Content-Type': 'application/json' };
const WATCH_TIMEOUT = __ENV.WATCH_TIMEOUT || '30s';

export const OUTCOMES = ['ok', 'shed', 'unavailable', 'timeout', 'network', 'error'];

const GRPC_OUTCOMES = {
  [grpc.StatusOK]: 'ok',
  [grpc.StatusResourceExhausted]: 'shed',
  [grpc.StatusUnavailable]: 'unavailable',
  [grpc.StatusDeadlineExceeded]: 'timeout',
};
const HTTP_OUTCOMES = { 200: 'ok', 429: 'shed', 503: 'unavailable', 504: 'timeout' };

// status null: k6 threw (no connection, or it broke).
function grpcOutcome(status) {
  return status === null ? 'network' : GRPC_OUTCOMES[status] || 'error';
}

function httpOutcome(res) {
  if (res.status === 0) {
    // k6 error code 1050: the request timed out; the others: no connection.
    return res.error_code === 1050 ? 'timeout' : 'network';
  }
  return HTTP_OUTCOMES[res.status] || 'error';
}

function result(outcome, started) {
  return { ok: outcome === 'ok', outcome, ms: Date.now() - started };
}

// A unary gRPC call that never throws: { outcome, res }; keep: decode the response
// message. k6 throws on a connection or serialisation failure, which would
// otherwise end the iteration before it is counted.
function grpcCall(method, request, timeout, keep = false) {
  try {
    if (!connected) {
      client.connect(GRPC_TARGET, { plaintext: true, reflect: false, timeout: '10s' });
      connected = true;
    }
    const params = { metadata: METADATA, timeout, discardResponseMessage: !keep };
    const res = client.invoke(method, request, params);
    return { outcome: grpcOutcome(res ? res.status : null), res };
  } catch (_) {
    return { outcome: 'network', res: null };
  }
}

function unary(method, request, timeout, done) {
  const started = Date.now();
  done(result(grpcCall(method, request, timeout).outcome, started));
}

// An HTTP call of the REST adapter (body: JSON or null); keep: read the response
// body. path: {id} stands for id in the URL; the request's name tag keeps {id}.
function httpCall(method, path, id, body, timeout, keep = false) {
  const url = BASE_URL + path.replace('{id}', id);
  return http.request(method, url, body === null ? null : JSON.stringify(body), {
    headers: body === null ? HEADERS : JSON_HEADERS,
    timeout,
    responseType: keep ? 'text' : 'none',
    tags: { name: `${method} ${path}` },
  });
}

function rest(method, path, id, body, timeout, done) {
  const started = Date.now();
  done(result(httpOutcome(httpCall(method, path, id, body, timeout)), started));
}

// The framework ceiling through k6: Echo of the bare grpc.aio server (GRPC_TARGET
// being its address). Beside the same call from h2load it shows what k6 costs.
const PAYLOAD = encoding.b64encode('kaireon-perf-echo-payload-64-bytes..............................');

// customer: an id nobody erased before, or null when the caller's slice is used up.
function erasure(send) {
  return (done, customer) =>
    customer === null ? done(result('error', Date.now())) : send(done, customer);
}

// CreateDsarRequest, then WatchDsarRequest until the job is terminal.
function dsarGrpc(done) {
  const started = Date.now();
  const request = { request_type: 'export', subject_id: randomCustomer() };
  const created = grpcCall('kaireon.dsar.v1.DsarService/CreateDsarRequest', request, '10s', true);
  if (created.outcome !== 'ok') {
    done(result(created.outcome, started));
    return;
  }
  const stream = new grpc.Stream(client, 'kaireon.dsar.v1.DsarService/WatchDsarRequest', {
    metadata: METADATA,
    timeout: WATCH_TIMEOUT,
  });
  let finished = false;
  const finish = (outcome) => {
    if (!finished) {
      finished = true;
      done(result(outcome, started));
    }
  };
  stream.on('data', (message) => {
    const status = message.request ? message.request.status : '';
    if (status === 'completed' || status === 'failed') {
      finish(status === 'completed' ? 'ok' : 'error');
    }
  });
  stream.on('error', (e) => finish(e && e.code !== undefined ? grpcOutcome(e.code) : 'error'));
  // A stream that ends before a terminal state is a failed watch.
  stream.on('end', () => finish('error'));
  stream.write({ id: created.res.message.request.id });
  stream.end();
}

// POST /api/v1/dsar, then the NDJSON watch, which ends once the job is terminal.
function dsarRest(done) {
  const started = Date.now();
  const request = { requestType: 'export', subjectId: randomCustomer() };
  const created = httpCall('POST', '/api/v1/dsar', '', request, '10s', true);
  let id = '';
  try {
    id = created.json('request.id');
  } catch (_) {
    id = '';
  }
  if (created.status !== 200 || !id) {
    const outcome = httpOutcome(created);
    done(result(outcome === 'ok' ? 'error' : outcome, started));
    return;
  }
  const watched = httpCall('GET', '/api/v1/dsar/{id}/watch', id, null, WATCH_TIMEOUT, true);
  let outcome = httpOutcome(watched);
  if (outcome === 'ok' && !/"status":\s*"completed"/.test(watched.body || '')) {
    outcome = 'error';
  }
  done(result(outcome, started));
}

const PROVENANCE = 'kaireon.provenance.v1.ProvenanceService/GetDecisionProvenance';
const ERASE = 'kaireon.erasure.v1.ErasureService/EraseCustomer';
const START_RUN = 'kaireon.flow.v1.FlowRunnerService/StartRun';

export const OPS = {
  echo: { grpc: (done) => unary('kaireon.perf.v1.Echo/Echo', { data: PAYLOAD }, '10s', done) },
  provenance: {
    // The bundle is ~5 KB of JSON; k6 need not decode it to count the call.
    grpc: (done) => unary(PROVENANCE, { decision_id: randomDecision() }, '10s', done),
    rest: (done) =>
      rest('GET', '/api/v1/decisions/{id}/provenance', randomDecision(), null, '10s', done),
  },
  erasure: {
    grpc: erasure((done, customer) => unary(ERASE, { customer_id: customer }, '30s', done)),
    rest: erasure((done, customer) =>
      rest('POST', '/api/v1/gdpr/erasure', '', { customerId: customer }, '30s', done),
    ),
  },
  dsar: { grpc: dsarGrpc, rest: dsarRest },
  flow: {
    grpc: (done) => unary(START_RUN, { definition: DEFINITION }, '10s', done),
    rest: (done) => rest('POST', '/api/v1/flow/runs', '', { definition: DEFINITION }, '10s', done),
  },
};
