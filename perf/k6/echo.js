// The framework ceiling through k6: kaireon.perf.v1.Echo/Echo on the bare
// grpc.aio server of perf/harness/echo_server.py (proto file: no reflection
// there). Compared with the same call from h2load it shows what k6 itself
// costs on a 2-core machine. ECHO_TARGET is that server's host:port.

import grpc from 'k6/net/grpc';
import encoding from 'k6/encoding';

import { call, connect, options as makeOptions, record } from './lib/config.js';

export { handleSummary } from './lib/summary.js';

const TARGET = __ENV.ECHO_TARGET || '127.0.0.1:50151';

// The echo server speaks gRPC only.
export const options = makeOptions(1.0, 50, 5, false, 'grpc');

const client = new grpc.Client();
client.load(['proto'], 'echo.proto');
const PAYLOAD = encoding.b64encode('kaireon-perf-echo-payload-64-bytes..............................');

export function grpcCall() {
  if (!connect(client, TARGET)) {
    record(false, 'grpc');
    return;
  }
  const { status } = call(client, 'kaireon.perf.v1.Echo/Echo', { data: PAYLOAD }, { timeout: '10s' });
  record(status === grpc.StatusOK, 'grpc');
}
