// Shared settings of the k6 scenarios (perf/README.md lists every variable).
//
// LEVEL selects the arrival rate: smoke (20 RPS), 1k, 5k or 10k — the three
// levels of the platform's W3.4 baseline — or 2k (DSAR's 100/s goal). Each scenario runs at its SHARE of
// the level: reads at the full rate, write paths (erasure, DSAR, flow) at a
// tenth or less, because every such call is a transaction that also appends
// to the tenant's audit chain. RATE overrides the computed rate outright.

import { Counter, Rate, Trend } from 'k6/metrics';

export const LEVELS = { smoke: 20, '1k': 1000, '2k': 2000, '5k': 5000, '10k': 10000 };

function env(name, fallback) {
  const value = __ENV[name];
  return value === undefined || value === '' ? fallback : value;
}

export const LEVEL = env('LEVEL', '1k');
if (!(LEVEL in LEVELS)) {
  throw new Error(`LEVEL must be one of ${Object.keys(LEVELS).join(', ')}, got ${LEVEL}`);
}
export const DURATION = env('DURATION', '30s');
export const PROTOCOL = env('PROTOCOL', 'both'); // grpc | rest | both
export const GRPC_TARGET = env('GRPC_TARGET', '127.0.0.1:50051');
export const BASE_URL = env('BASE_URL', 'http://127.0.0.1:8080');
export const TENANT = env('TENANT', 'perf');
export const ROLE = env('ROLE', 'admin');
export const CUSTOMERS = parseInt(env('CUSTOMERS', '10000'), 10);
export const MAX_ERROR_RATE = parseFloat(env('MAX_ERROR_RATE', '0.01'));

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
// (microsecond timers; JavaScript's Date.now() only has milliseconds);
// operations of several calls (DSAR create + watch) record kaireon_e2e.
export const e2e = new Trend('kaireon_e2e', true);
export const errors = new Rate('kaireon_errors');
export const requests = new Counter('kaireon_requests');

export function rateFor(share) {
  const explicit = env('RATE', '');
  return Math.max(1, explicit === '' ? Math.round(LEVELS[LEVEL] * share) : parseInt(explicit, 10));
}

// One constant-arrival-rate scenario. VUs are sized for ~50 ms calls; k6 adds
// more (up to maxVUs) when the server slows down, and counts iterations it
// could not start as dropped_iterations (the harness reports them as errors).
export function arrival(share, exec, expectedMs = 50) {
  const rate = rateFor(share);
  const needed = Math.ceil((rate * expectedMs) / 1000);
  return {
    executor: 'constant-arrival-rate',
    rate,
    timeUnit: '1s',
    duration: DURATION,
    preAllocatedVUs: Math.min(Math.max(needed, 5), 400),
    maxVUs: Math.min(Math.max(needed * 4, 20), 1000),
    gracefulStop: '5s',
    exec,
  };
}

// PROTOCOL=grpc|rest|both picks the scenarios; both run side by side, each at the rate.
export function scenarios(share, expectedMs, protocol = PROTOCOL) {
  const chosen = protocol === 'both' ? ['grpc', 'rest'] : [protocol];
  if (!chosen.every((p) => p === 'grpc' || p === 'rest')) {
    throw new Error(`PROTOCOL must be grpc, rest or both, got ${protocol}`);
  }
  return Object.fromEntries(chosen.map((p) => [p, arrival(share, `${p}Call`, expectedMs)]));
}

// Error rate below MAX_ERROR_RATE and p99 below p99Ms (P99_MS overrides), of
// each chosen scenario's timer, or of kaireon_e2e for composite operations.
export function thresholds(p99Ms, share, chosen, composite = false) {
  const p99 = parseFloat(env('P99_MS', String(p99Ms)));
  const offered = rateFor(share) * seconds(DURATION) * Object.keys(chosen).length;
  const out = {
    kaireon_errors: [`rate<${MAX_ERROR_RATE}`],
    // Iterations k6 could not start on time mean the target rate was not offered.
    dropped_iterations: [`count<${Math.max(1, Math.round(offered * 0.01))}`],
  };
  const timers = Object.keys(chosen).map((p) => `${p === 'grpc' ? 'grpc' : 'http'}_req_duration`);
  for (const name of composite ? ['kaireon_e2e'] : timers) {
    out[name] = [`p(99)<${p99}`];
  }
  return out;
}

// share: fraction of the level's rate; p99Ms: the p99 threshold; expectedMs:
// the expected call time (sizes the VU pool); composite: kaireon_e2e latency.
export function options(share, p99Ms, expectedMs, composite = false, protocol = PROTOCOL) {
  const chosen = scenarios(share, expectedMs, protocol);
  return {
    scenarios: chosen,
    thresholds: thresholds(p99Ms, share, chosen, composite),
    summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(50)', 'p(95)', 'p(99)'],
  };
}

// '30s', '2m', '1m30s', '500ms' -> seconds.
export function seconds(duration) {
  let total = 0;
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;
  let match;
  while ((match = re.exec(duration)) !== null) {
    const unit = { ms: 0.001, s: 1, m: 60, h: 3600 }[match[2]];
    total += parseFloat(match[1]) * unit;
  }
  if (total === 0) {
    throw new Error(`cannot read duration ${duration}`);
  }
  return total;
}

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

// Connects a VU's client on its first call, with the descriptors it loaded
// (no reflection). False when it cannot; the caller counts an error.
const connected = new Set(); // per VU: module state is not shared between VUs

export function connect(client, target) {
  try {
    if (!connected.has(client)) {
      client.connect(target, { plaintext: true, reflect: false, timeout: '10s' });
      connected.add(client);
    }
    return true;
  } catch (_) {
    return false;
  }
}

// A unary gRPC call that never throws: { status, res }, status null when k6
// threw (a connection or serialisation failure, which would otherwise end the
// iteration before it is counted).
export function call(client, method, request, params) {
  try {
    const res = client.invoke(method, request, params);
    return { status: res ? res.status : null, res };
  } catch (_) {
    return { status: null, res: null };
  }
}

// Count one operation; ms (optional) is its end-to-end time, outcome
// (optional, lib/ops.js) and op (optional: the operation of a mix) tag the
// samples. Failed operations count in the latency too: a fast error must not
// flatter it.
export function record(ok, protocol, ms, outcome, op) {
  const tags = outcome === undefined ? { protocol } : { protocol, outcome };
  if (op !== undefined) {
    tags.op = op;
  }
  requests.add(1, tags);
  errors.add(!ok, tags);
  if (ms !== undefined) {
    e2e.add(ms, tags);
  }
}
