// handleSummary for every scenario: the full JSON to $SUMMARY (read by the
// harness) and a few lines on stdout. k6's own text summary lives in a
// remote jslib module, and these scripts load nothing from the network.

function fmt(value) {
  return value === undefined ? '-' : Number(value).toFixed(2);
}

export function handleSummary(data) {
  const m = data.metrics;
  const values = (name) => (m[name] ? m[name].values : {});
  const latencyMetric = ['kaireon_e2e', 'grpc_req_duration', 'http_req_duration'].find(
    (name) => m[name],
  );
  const [lat, req, err] = [latencyMetric, 'kaireon_requests', 'kaireon_errors'].map(values);
  const lines = [
    `requests ${req.count || 0} (${fmt(req.rate)}/s)  errors ${fmt((err.rate || 0) * 100)}%  ` +
      `dropped ${values('dropped_iterations').count || 0}`,
    `${latencyMetric || 'latency'} ms  p50 ${fmt(lat['p(50)'])}  p95 ${fmt(lat['p(95)'])}  p99 ${fmt(lat['p(99)'])}  ` +
      `max ${fmt(lat.max)}`,
  ];
  for (const [name, metric] of Object.entries(m)) {
    for (const [threshold, result] of Object.entries(metric.thresholds || {})) {
      lines.push(`threshold ${name} ${threshold}: ${result.ok ? 'ok' : 'CROSSED'}`);
    }
  }
  const out = { stdout: lines.join('\n') + '\n' };
  if (__ENV.SUMMARY) {
    out[__ENV.SUMMARY] = JSON.stringify(data, null, 1);
  }
  return out;
}
