// The one k6 script: constant-arrival-rate scenarios from the plan the harness
// computes (harness/k6.py's Scenario; perf/README.md has an example) and passes
// as JSON in SOAK_PLAN. The soak (perf/soak) runs one per operation, protocol
// and phase (harness/soak_plan.py); perf/run one per k6 row (harness/run.py);
// the scale-out scenario and the rolling-restart test a mix of reads and
// erasures (harness/lab_load.py, with AUTHORIZATION set). The operations are
// those of lib/ops.js; an erasure erases customers nobody erased before
// (ecust_<eraseFirst + iteration>, up to eraseCount of them).
// Every sample is tagged with its scenario (k6 does it), its operation and its
// outcome (ok, shed, unavailable, timeout, network, error); the thresholds below
// exist only so that the summary carries those per-scenario sub-metrics —
// the harness judges the figures, not k6.

import exec from 'k6/execution';

import { pad, record } from './lib/config.js';
import { loadProtos, OPS, OUTCOMES } from './lib/ops.js';

export { handleSummary } from './lib/summary.js';

const PLAN = JSON.parse(__ENV.SOAK_PLAN || '[]');
if (PLAN.length === 0) {
  throw new Error('SOAK_PLAN is empty: run it through perf/run or perf/soak');
}
const BY_NAME = {};
for (const s of PLAN) {
  if (!(s.op in OPS) || !(s.protocol in OPS[s.op])) {
    throw new Error(`unknown operation ${s.op}/${s.protocol} in ${s.name}`);
  }
  BY_NAME[s.name] = s;
}
loadProtos(PLAN.map((s) => s.op));

// What a scenario of the plan does not say for itself (the operation, the
// protocol, the phase, the erasure's slice) is k6's: rate, timeUnit, startTime,
// duration, preAllocatedVUs, maxVUs, gracefulStop. Its iterations find it by the
// SCENARIO it sets (cheaper than exec.scenario, an object made at each call).
function scenarios() {
  const out = {};
  for (const { name, op, protocol, phase, eraseFirst, eraseCount, ...k6 } of PLAN) {
    out[name] = { executor: 'constant-arrival-rate', exec: 'run', env: { SCENARIO: name }, ...k6 };
  }
  return out;
}

// Always-true thresholds: each makes k6 keep (and summarise) one sub-metric.
function thresholds() {
  const out = {};
  for (const s of PLAN) {
    const tag = `scenario:${s.name}`;
    const timer = s.protocol === 'grpc' ? 'grpc_req_duration' : 'http_req_duration';
    out[`kaireon_e2e{op:${s.op}}`] = ['max>=0'];
    out[`kaireon_errors{${tag}}`] = ['rate>=0'];
    out[`dropped_iterations{${tag}}`] = ['count>=0'];
    out[`${timer}{${tag}}`] = ['max>=0'];
    // All of the scenario's calls, then those of each outcome.
    for (const part of [tag, ...OUTCOMES.map((outcome) => `${tag},outcome:${outcome}`)]) {
      out[`kaireon_requests{${part}}`] = ['count>=0'];
      out[`kaireon_e2e{${part}}`] = ['max>=0'];
    }
  }
  return out;
}

export const options = {
  scenarios: scenarios(),
  thresholds: thresholds(),
  summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(50)', 'p(95)', 'p(99)'],
};

function erasable(s) {
  const i = exec.scenario.iterationInTest;
  return i < s.eraseCount ? `ecust_${pad(s.eraseFirst + i, 7)}` : null;
}

// A failed call is also logged (stderr, kept by the harness) with its time, so
// that the report can say *when* failures happened: the summary only counts.
function done(s, r) {
  record(r.ok, s.protocol, r.ms, r.outcome, s.op);
  if (!r.ok) {
    console.log(`soak-failure ${Date.now()} ${s.name} ${r.outcome} ${r.ms}`);
  }
}

export function run() {
  const s = BY_NAME[__ENV.SCENARIO];
  const arg = s.op === 'erasure' ? erasable(s) : undefined;
  OPS[s.op][s.protocol]((r) => done(s, r), arg);
}
