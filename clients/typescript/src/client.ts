// createKaireonClient: typed Connect clients for the six services over the
// gRPC protocol (HTTP/2, @connectrpc/connect-node), mirroring the Python
// client (clients/python/kaireon_client/client.py):
// - identity on every call (x-tenant-id / x-user-role, or a bearer token from a
//   provider); per-call headers win over these defaults;
// - a default deadline for unary calls only (watches and downloads are long);
// - retries on UNAVAILABLE for idempotent methods (google.api.http rule is a GET,
//   read from the same descriptors the server uses): 4 attempts, backoff 0.1 s
//   doubling to 2 s, like the Python service config; streams are retried only
//   when they fail before their first message (as gRPC core does).
import {
  getOption,
  hasOption,
  type DescMessage,
  type DescMethod,
  type DescMethodStreaming,
  type DescService,
  type MessageInitShape,
  type MessageShape,
} from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createClient,
  type Client,
  type ContextValues,
  type Interceptor,
  type StreamResponse,
  type Transport,
} from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { http } from "./gen/google/api/annotations_pb.js";
import { AuditService } from "./gen/kaireon/audit/v1/audit_pb.js";
import { DsarService } from "./gen/kaireon/dsar/v1/dsar_pb.js";
import { ErasureService } from "./gen/kaireon/erasure/v1/erasure_pb.js";
import { FlowRunnerService } from "./gen/kaireon/flow/v1/flow_pb.js";
import { ProvenanceService } from "./gen/kaireon/provenance/v1/provenance_pb.js";
import { RequestService } from "./gen/kaireon/requests/v1/requests_pb.js";

export const SERVICES = [
  AuditService,
  DsarService,
  ErasureService,
  FlowRunnerService,
  ProvenanceService,
  RequestService,
] as const;

export type RoleName = "viewer" | "operator" | "admin";

export interface TlsOptions {
  /** PEM CA bundle that signed the server's certificate (default: Node's roots). */
  ca?: string | Buffer;
  /** Client certificate and key (PEM) when the server requires mTLS. */
  cert?: string | Buffer;
  key?: string | Buffer;
  /** Expected server name when it differs from the URL's host. */
  servername?: string;
}

export interface CallRetryPolicy {
  maxAttempts: number;
  initialBackoffMs: number;
  maxBackoffMs: number;
  backoffMultiplier: number;
}

export const DEFAULT_RETRY: CallRetryPolicy = {
  maxAttempts: 4,
  initialBackoffMs: 100,
  maxBackoffMs: 2000,
  backoffMultiplier: 2,
};

export interface KaireonClientOptions {
  /** http://host:port (plaintext HTTP/2) or https://host:port (TLS). */
  baseUrl: string;
  /** Trusted-header identity (servers with KAIREON_TRUST_HEADERS, e.g. --demo). */
  tenant?: string;
  role?: RoleName;
  /** Bearer token (JWT), or a provider asked on every call; excludes tenant/role. */
  token?: string | (() => string | Promise<string>);
  tls?: TlsOptions;
  /** Default deadline of unary calls in ms (Python client: 30 s). 0 = none. */
  timeoutMs?: number;
  retry?: CallRetryPolicy;
  /** Largest message accepted / sent (16 MiB, as the Python client). */
  maxMessageBytes?: number;
  /** Extra interceptors, run after the identity one. */
  interceptors?: Interceptor[];
}

export interface KaireonClient {
  audit: Client<typeof AuditService>;
  dsar: Client<typeof DsarService>;
  erasure: Client<typeof ErasureService>;
  flow: Client<typeof FlowRunnerService>;
  provenance: Client<typeof ProvenanceService>;
  requests: Client<typeof RequestService>;
  transport: Transport;
}

/** True when the method's google.api.http rule is a GET (safe to retry). */
export function isIdempotent(method: DescMethod): boolean {
  return hasOption(method, http) && getOption(method, http).pattern.case === "get";
}

export function idempotentMethods(services: readonly DescService[] = SERVICES): string[] {
  return services.flatMap((s) => s.methods.filter(isIdempotent).map((m) => `${s.typeName}/${m.name}`));
}

const HEADER_TOKEN = /^[\x21-\x7e]+$/;

function identityInterceptor(options: KaireonClientOptions): Interceptor {
  const { tenant, role, token } = options;
  // One identity source per client: the server must not have to pick between two.
  if (token !== undefined && (tenant !== undefined || role !== undefined)) {
    throw new TypeError("give either token or tenant/role, not both");
  }
  for (const [name, value] of [
    ["tenant", tenant],
    ["role", role],
  ] as const) {
    if (value !== undefined && !HEADER_TOKEN.test(value)) {
      throw new TypeError(`${name} must be printable ASCII without spaces`);
    }
  }
  return (next) => async (req) => {
    if (token !== undefined && !req.header.has("authorization")) {
      let value: string;
      try {
        value = typeof token === "function" ? await token() : token;
      } catch (err) {
        throw new ConnectError(`token provider failed: ${String(err)}`, Code.Unauthenticated, undefined, undefined, err);
      }
      if (typeof value !== "string" || !HEADER_TOKEN.test(value)) {
        throw new ConnectError("token must be printable ASCII without spaces", Code.Unauthenticated);
      }
      req.header.set("authorization", `Bearer ${value}`);
    }
    if (tenant !== undefined && !req.header.has("x-tenant-id")) req.header.set("x-tenant-id", tenant);
    if (role !== undefined && !req.header.has("x-user-role")) req.header.set("x-user-role", role);
    return next(req);
  };
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(ConnectError.from(signal.reason, Code.Canceled));
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(ConnectError.from(signal?.reason, Code.Canceled));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

function backoff(policy: CallRetryPolicy, retry: number): number {
  const cap = Math.min(policy.maxBackoffMs, policy.initialBackoffMs * policy.backoffMultiplier ** retry);
  return Math.random() * cap; // full jitter, as gRPC's retry policy
}

function retryable(err: unknown): boolean {
  return ConnectError.from(err).code === Code.Unavailable;
}

/** Deadlines for unary calls and retries for idempotent ones, around any transport. */
export function withCallPolicy(inner: Transport, timeoutMs: number, policy: CallRetryPolicy): Transport {
  return {
    async unary(method, signal, callTimeoutMs, header, input, contextValues) {
      // As Connect: a per-call timeout of 0 or less means no deadline.
      const chosen = callTimeoutMs ?? timeoutMs;
      const budget = chosen > 0 ? chosen : undefined;
      const deadline = budget === undefined ? undefined : Date.now() + budget;
      const attempts = isIdempotent(method) ? policy.maxAttempts : 1;
      for (let attempt = 1; ; attempt++) {
        // One deadline for all attempts together, as gRPC's per-call deadline.
        const remaining = deadline === undefined ? undefined : Math.max(1, deadline - Date.now());
        try {
          return await inner.unary(method, signal, remaining, new Headers(header), input, contextValues);
        } catch (err) {
          const pause = backoff(policy, attempt - 1);
          if (attempt >= attempts || !retryable(err) || (deadline !== undefined && Date.now() + pause >= deadline)) {
            throw err;
          }
          await sleep(pause, signal);
        }
      }
    },
    async stream<I extends DescMessage, O extends DescMessage>(
      method: DescMethodStreaming<I, O>,
      signal: AbortSignal | undefined,
      callTimeoutMs: number | undefined,
      header: ConstructorParameters<typeof Headers>[0],
      input: AsyncIterable<MessageInitShape<I>>,
      contextValues?: ContextValues,
    ): Promise<StreamResponse<I, O>> {
      if (!isIdempotent(method) || method.methodKind !== "server_streaming") {
        return inner.stream(method, signal, callTimeoutMs, header, input, contextValues);
      }
      // A server stream has exactly one request message: keep it to send again.
      const messages: MessageInitShape<I>[] = [];
      for await (const m of input) messages.push(m);
      const replay = async function* (): AsyncIterable<MessageInitShape<I>> {
        yield* messages;
      };
      const openWithRetry = async (): Promise<StreamResponse<I, O>> => {
        for (let attempt = 1; ; attempt++) {
          try {
            return await inner.stream(method, signal, callTimeoutMs, new Headers(header), replay(), contextValues);
          } catch (err) {
            if (attempt >= policy.maxAttempts || !retryable(err)) throw err;
            await sleep(backoff(policy, attempt - 1), signal);
          }
        }
      };
      let response = await openWithRetry();
      async function* messagesWithRetry(): AsyncGenerator<MessageShape<O>> {
        for (let attempt = 1; ; attempt++) {
          let received = false;
          try {
            for await (const message of response.message) {
              received = true;
              yield message;
            }
            return;
          } catch (err) {
            if (received || attempt >= policy.maxAttempts || !retryable(err)) throw err;
          }
          await sleep(backoff(policy, attempt - 1), signal);
          response = await openWithRetry();
        }
      }
      const first = response;
      // header/trailer are those of the stream that delivered the messages.
      return {
        stream: true,
        service: first.service,
        method: first.method,
        get header() {
          return response.header;
        },
        get trailer() {
          return response.trailer;
        },
        message: messagesWithRetry(),
      };
    },
  };
}

/** Typed clients for the six Kaireon services over one HTTP/2 connection. */
export function createKaireonClient(options: KaireonClientOptions): KaireonClient {
  const url = new URL(options.baseUrl);
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new TypeError("baseUrl must be http://host:port or https://host:port");
  }
  if (options.tls !== undefined && url.protocol !== "https:") {
    throw new TypeError("tls options need an https:// baseUrl");
  }
  const maxBytes = options.maxMessageBytes ?? 16 * 1024 * 1024;
  const grpc = createGrpcTransport({
    baseUrl: options.baseUrl,
    interceptors: [identityInterceptor(options), ...(options.interceptors ?? [])],
    readMaxBytes: maxBytes,
    writeMaxBytes: maxBytes,
    ...(options.tls ? { nodeOptions: { ...options.tls } } : {}),
  });
  const transport = withCallPolicy(grpc, options.timeoutMs ?? 30_000, options.retry ?? DEFAULT_RETRY);
  return {
    audit: createClient(AuditService, transport),
    dsar: createClient(DsarService, transport),
    erasure: createClient(ErasureService, transport),
    flow: createClient(FlowRunnerService, transport),
    provenance: createClient(ProvenanceService, transport),
    requests: createClient(RequestService, transport),
    transport,
  };
}
