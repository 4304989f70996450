"""Several hosts on one machine: network namespaces on a bridge, PostgreSQL and
server replicas each in a namespace of their own, nginx in front.

    lab = Lab.create()                      # switch namespace + bridge; this process gets .1
    pg = lab.postgres()                     # PostgreSQL listening on its host's address
    r1 = lab.replica(pg.dsn("kaireon"))     # kaireon-server inside its own namespace
    lb = lab.nginx([r1, ...])               # grpc_pass + proxy_pass, in its own namespace
    lab.partition(r1.host, pg.host)         # silent DROP both ways (nft), no FIN, no RST
    lab.heal(r1.host)
    lab.close()                             # kills what it started, deletes the namespaces

Needs root (`ip netns`, veth, nft) and nginx (tools/dev/setup.sh installs
nginx-light and nftables when run as root). Everything lives in the lab's own
namespaces and one 10.251.x.0/24 subnet; the host's interfaces, routes and
firewall are not touched apart from the one veth that gives the test process a
leg on the bridge (deleted by `close`).

`tc netem` needs the kernel's sch_netem. The lab machine's kernel
(6.18.44-fc-v1252) has none: `tc qdisc add dev lo root netem delay 50ms 20ms`
in a namespace fails with "Error: Specified qdisc kind is unknown.", its
/proc/config.gz says `# CONFIG_NET_SCH_NETEM is not set` and
`# CONFIG_MODULES is not set` (no loadable modules, no /lib/modules: `modprobe
sch_netem` answers "Module sch_netem not found"). `Lab.netem_unavailable()`
probes at run time; where netem is missing, `DelayProxy` stands in for it.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# Relative: this file is also perf/'s `kaireon_testkit.netns` (tests/testkit).
from .pg_cluster import USER, PostgresCluster, _bin
from .server import ServerProcess, base_env

GRPC_PORT = 50051
HTTP_PORT = 8080
PG_PORT = 5432


def run(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=timeout)


def unavailable_reason() -> str | None:
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nft", "nginx"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (bash tools/dev/setup.sh installs it as root)"
    return None


@dataclass(frozen=True)
class Host:
    namespace: str
    address: str

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.namespace]


@dataclass
class Lab:
    token: str
    subnet: int
    switch: str
    hosts: list[Host] = field(default_factory=list)
    processes: list[subprocess.Popen[str]] = field(default_factory=list)
    servers: list[ServerProcess] = field(default_factory=list)
    clusters: list[PostgresCluster] = field(default_factory=list)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="klab-")))

    # Held (flock) while the lab lives: two labs at once never share a subnet.
    subnet_lock: int | None = None

    @classmethod
    def create(cls) -> Lab:
        # A random token keeps two labs (parallel workers, sessions) apart in names;
        # the subnet is reserved.
        token = secrets.token_hex(2)
        subnet, lock = _reserve_subnet()
        lab = cls(token=token, subnet=subnet, switch=f"kl{token}sw", subnet_lock=lock)
        try:
            lab.workdir.chmod(0o755)  # nginx's workers (nobody) write temp files below
            run("ip", "netns", "add", lab.switch)
            lab._in(lab.switch, "ip", "link", "set", "lo", "up")
            lab._in(lab.switch, "ip", "link", "add", "br0", "type", "bridge")
            lab._in(lab.switch, "ip", "link", "set", "br0", "up")
            # This process's leg: a veth from the root namespace onto the bridge.
            root_if = f"kl{token}r"
            run(
                "ip", "link", "add", root_if, "type", "veth",
                "peer", "name", "up0", "netns", lab.switch,
            )  # fmt: skip
            lab._in(lab.switch, "ip", "link", "set", "up0", "master", "br0", "up")
            run("ip", "addr", "add", f"{lab.address(1)}/24", "dev", root_if)
            run("ip", "link", "set", root_if, "up")
        except BaseException:
            lab.close()
            raise
        return lab

    def address(self, index: int) -> str:
        return f"10.251.{self.subnet}.{index}"

    @staticmethod
    def _in(namespace: str, *args: str) -> None:
        run("ip", "netns", "exec", namespace, *args)

    def host(self, role: str) -> Host:
        """A namespace with one interface (eth0) on the bridge."""
        index = len(self.hosts) + 2
        name = f"kl{self.token}{role}{index}"
        veth = f"kl{self.token}p{index}"
        run("ip", "netns", "add", name)
        host = Host(name, self.address(index))
        self.hosts.append(host)
        run(
            "ip", "link", "add", "eth0", "netns", name, "type", "veth",
            "peer", "name", veth, "netns", self.switch,
        )  # fmt: skip
        self._in(self.switch, "ip", "link", "set", veth, "master", "br0", "up")
        self._in(name, "ip", "link", "set", "lo", "up")
        self._in(name, "ip", "addr", "add", f"{host.address}/24", "dev", "eth0")
        self._in(name, "ip", "link", "set", "eth0", "up")
        return host

    # --- faults -------------------------------------------------------------

    def partition(self, host: Host, peer: Host) -> None:
        """Silently drop every packet between `host` and `peer`, both ways: what a
        failed switch or a security-group change does (no FIN, no RST)."""
        rules = f"""
table inet kaireon_partition {{
  chain input {{
    type filter hook input priority 0; policy accept;
    ip saddr {peer.address} drop
  }}
  chain output {{
    type filter hook output priority 0; policy accept;
    ip daddr {peer.address} drop
  }}
}}
"""
        subprocess.run(
            [*host.exec_prefix(), "nft", "-f", "-"],
            input=rules,
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        )

    def netem_unavailable(self) -> str | None:
        """Why `tc netem` cannot run here (tc's own error), or None: a probe on the
        switch namespace's loopback, removed again."""
        if shutil.which("tc") is None:
            return "`tc` is not installed (Debian package iproute2)"
        probe = run(
            "ip", "netns", "exec", self.switch,
            "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "50ms", "20ms",
            check=False,
        )  # fmt: skip
        if probe.returncode != 0:
            return (probe.stderr or probe.stdout).strip() or f"tc exited {probe.returncode}"
        run("ip", "netns", "exec", self.switch, "tc", "qdisc", "del", "dev", "lo", "root")
        return None

    def netem(self, host: Host, *, delay_ms: int, jitter_ms: int) -> None:
        """`tc netem` on the host's egress (eth0): every packet it sends waits
        delay ± jitter, so each round trip with it grows by that once."""
        run(
            *host.exec_prefix(), "tc", "qdisc", "add", "dev", "eth0", "root",
            "netem", "delay", f"{delay_ms}ms", f"{jitter_ms}ms",
        )  # fmt: skip

    def heal(self, host: Host) -> None:
        run(*host.exec_prefix(), "nft", "delete", "table", "inet", "kaireon_partition", check=False)

    # --- processes ----------------------------------------------------------

    def postgres(self, *, extra_conf: str = "") -> LabPostgres:
        host = self.host("pg")
        cluster = LabPostgres(host=host).init()
        with (cluster.pgdata / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '{host.address}'\nmax_connections = 200\n"
                # PostgreSQL's own keepalive settings stay at their defaults (the
                # kernel's: two hours): the server sets its own per session
                # (platform/db/database.PEER_LOSS_SETTINGS), which the partition
                # tests measure.
                + extra_conf
            )
        with (cluster.pgdata / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all 10.251.{self.subnet}.0/24 trust\n")
            hba.write(f"host replication all 10.251.{self.subnet}.0/24 trust\n")
        self.clusters.append(cluster)
        cluster.start()
        return cluster

    def standby(self, primary: LabPostgres) -> LabPostgres:
        """A streaming standby of `primary` (pg_basebackup -R), in a namespace of its
        own, listening on its address; `promote()` makes it the primary."""
        host = self.host("pg")
        cluster = LabPostgres(host=host)
        if cluster.system_user:
            shutil.chown(cluster.root, cluster.system_user)
        cluster.root.chmod(0o755)
        cluster._run(
            _bin("pg_basebackup"),
            "-h", primary.host.address, "-p", str(PG_PORT), "-U", USER,
            "-D", str(cluster.pgdata), "-R", "-X", "stream", "--no-sync",
        )  # fmt: skip
        with (cluster.pgdata / "postgresql.conf").open("a") as conf:
            # The copied configuration names the primary's address and socket.
            conf.write(
                f"listen_addresses = '{host.address}'\nunix_socket_directories = '{cluster.root}'\n"
            )
        self.clusters.append(cluster)
        cluster.start()
        return cluster

    def replica(self, database_url: str, **env: str) -> LabServer:
        host = self.host("app")
        server = LabServer(
            host=host,
            env=base_env(
                database_url,
                KAIREON_GRPC_HOST="0.0.0.0",
                KAIREON_GRPC_PORT=str(GRPC_PORT),
                KAIREON_HTTP_PORT=str(HTTP_PORT),
                # Identity comes from JWTs: the balancer's address is no trusted proxy.
                KAIREON_TRUST_HEADERS="false",
                **env,
            ),
        )
        self.servers.append(server)
        return server

    def nginx(self, replicas: Sequence[LabServer], *, client_keepalive: bool = True) -> Nginx:
        host = self.host("lb")
        root = self.workdir / f"nginx-{host.namespace}"
        lb = Nginx(host=host, root=root, client_keepalive=client_keepalive)
        lb.start(replicas)
        self.processes.append(lb.proc)  # type: ignore[arg-type]
        return lb

    def close(self) -> None:
        for server in self.servers:
            server.stop()
        for proc in self.processes:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGQUIT)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        for cluster in self.clusters:
            cluster.destroy()
        # Deleting a namespace deletes its end of each veth, and so both ends.
        for host in self.hosts:
            run("ip", "netns", "del", host.namespace, check=False)
        run("ip", "link", "del", f"kl{self.token}r", check=False)
        run("ip", "netns", "del", self.switch, check=False)
        shutil.rmtree(self.workdir, ignore_errors=True)
        if self.subnet_lock is not None:
            os.close(self.subnet_lock)  # releases the flock
            self.subnet_lock = None


def _reserve_subnet() -> tuple[int, int]:
    """A 10.251.x.0/24 no other live lab on this machine uses: x and the open
    descriptor whose flock reserves it (released by the kernel if we die)."""
    folder = Path(tempfile.gettempdir()) / "kaireon-lab-subnets"
    folder.mkdir(exist_ok=True)
    candidates = list(range(20, 220))
    random.shuffle(candidates)
    for subnet in candidates:
        fd = os.open(folder / f"{subnet}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return subnet, fd
    raise RuntimeError("every lab subnet is in use")


@dataclass
class LabPostgres(PostgresCluster):
    """PostgresCluster started inside its host's namespace, on TCP there; the test
    process still reaches it over the unix socket in `root` (unix sockets are not
    scoped by network namespace)."""

    host: Host = field(default=Host("", ""))

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = list(args)
        if self.system_user:
            command = ["runuser", "-u", self.system_user, "--", *command]
        if self.host.namespace and Path(args[0]).name == "pg_ctl":
            command = [*self.host.exec_prefix(), *command]
        subprocess.run(
            command,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
        )

    def promote(self) -> None:
        self._run(_bin("pg_ctl"), "-D", str(self.pgdata), "promote", "-w")

    def tcp_dsn(self, database: str) -> str:
        return f"postgresql://{USER}@{self.host.address}:{PG_PORT}/{database}"


@dataclass
class LabServer(ServerProcess):
    host: Host = field(default=Host("", ""))

    def __post_init__(self) -> None:
        self.prefix = self.host.exec_prefix()

    @property
    def target(self) -> str:
        return f"{self.host.address}:{GRPC_PORT}"

    @property
    def rest(self) -> str:
        return f"http://{self.host.address}:{HTTP_PORT}"


async def wait_serving(server: LabServer, timeout: float = 60.0) -> None:
    """Until the replica's gRPC health check answers SERVING."""
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        async with asyncio.timeout(timeout):
            while True:
                try:
                    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.2)


def _accepts(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=1).close()
    except OSError:
        return False
    return True


def render_nginx_conf(
    root: Path, listen: str, replicas: Sequence[LabServer], *, client_keepalive: bool = True
) -> str:
    """nginx in front of the replicas: gRPC (HTTP/2, grpc_pass) on 50051, REST
    (proxy_pass) on 8080. Calls are never retried on another replica once sent
    (gRPC calls are POSTs: nginx retries a non-idempotent request only when it
    could not be sent), so a failed call shows as one.

    `client_keepalive=False`: REST clients get a connection per request. A reload
    closes the old workers' idle keep-alive connections, and a POST a client sends
    on one at that moment is lost on nginx's side before any replica sees it: HTTP/1.1's
    keep-alive close race, which no client may retry for a non-idempotent request.
    A test of what the replicas do across reloads turns it off (HTTP/2 announces a
    worker's shutdown with GOAWAY, so gRPC clients are not exposed to it)."""
    rest_keepalive = "" if client_keepalive else "\n    keepalive_timeout 0;"
    grpc_servers = "\n".join(
        f"    server {r.host.address}:{GRPC_PORT} max_fails=1 fail_timeout=2s;" for r in replicas
    )
    rest_servers = "\n".join(
        f"    server {r.host.address}:{HTTP_PORT} max_fails=1 fail_timeout=2s;" for r in replicas
    )
    return f"""
daemon off;
master_process on;
worker_processes 1;
user nobody nogroup;
pid {root}/nginx.pid;
error_log {root}/error.log notice;
events {{ worker_connections 4096; }}
http {{
  log_format upstream '$status $upstream_addr $request_time';
  access_log {root}/access.log upstream;
  client_body_temp_path {root}/body;
  proxy_temp_path {root}/proxy;
  fastcgi_temp_path {root}/fastcgi;
  uwsgi_temp_path {root}/uwsgi;
  scgi_temp_path {root}/scgi;
  upstream kaireon_grpc {{
{grpc_servers}
    keepalive 32;
  }}
  upstream kaireon_rest {{
{rest_servers}
    keepalive 32;
  }}
  server {{
    listen {listen}:{GRPC_PORT} http2;
    location / {{
      grpc_pass grpc://kaireon_grpc;
      grpc_read_timeout 1h;
      grpc_send_timeout 1h;
    }}
  }}
  server {{
    listen {listen}:{HTTP_PORT};{rest_keepalive}
    location / {{
      proxy_pass http://kaireon_rest;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 1h;
    }}
  }}
}}
"""


@dataclass
class Nginx:
    host: Host
    root: Path
    client_keepalive: bool = True
    proc: subprocess.Popen[str] | None = None

    @property
    def conf(self) -> Path:
        return self.root / "nginx.conf"

    @property
    def grpc_target(self) -> str:
        return f"{self.host.address}:{GRPC_PORT}"

    @property
    def rest(self) -> str:
        return f"http://{self.host.address}:{HTTP_PORT}"

    def _write(self, replicas: Sequence[LabServer]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        conf = render_nginx_conf(
            self.root, self.host.address, replicas, client_keepalive=self.client_keepalive
        )
        self.conf.write_text(conf)
        run(*self.host.exec_prefix(), "nginx", "-t", "-q", "-c", str(self.conf))

    def start(self, replicas: Sequence[LabServer]) -> None:
        self._write(replicas)
        self.proc = subprocess.Popen(
            [*self.host.exec_prefix(), "nginx", "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Serving once both ports accept connections (the pid file comes earlier).
        deadline = time.monotonic() + 10
        for port in (GRPC_PORT, HTTP_PORT):
            while not _accepts(self.host.address, port):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"nginx did not start: {self.error_log()}")
                time.sleep(0.05)

    def reload(self, replicas: Sequence[LabServer]) -> None:
        """New upstream list; old workers finish their requests (SIGHUP)."""
        self._write(replicas)
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def upstreams_used(self) -> dict[str, int]:
        """Calls per upstream address (host:port) so far, from the access log."""
        counts: dict[str, int] = {}
        log = self.root / "access.log"
        for line in log.read_text().splitlines() if log.exists() else []:
            for upstream in line.split()[1].split(","):
                counts[upstream.strip()] = counts.get(upstream.strip(), 0) + 1
        return counts

    def error_log(self) -> str:
        log = self.root / "error.log"
        return log.read_text()[-3000:] if log.exists() else ""


class DelayProxy:
    """A user-space stand-in for `tc netem delay D J` on the path to PostgreSQL
    where the kernel has no sch_netem (module docstring): every chunk from the
    client side is held D ± J seconds (uniform), in order, before it is
    forwarded; replies pass at once, so a round trip grows by D ± J once, as
    with netem on one side's egress. Delay only: no loss, no reordering, and
    per read chunk rather than per packet. Runs in the test's event loop on the
    lab's root leg (.1)."""

    def __init__(self, lab: Lab, target: Host, delay: float, jitter: float) -> None:
        self.listen = lab.address(1)
        self.target = target
        self.delay = delay
        self.jitter = jitter
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> DelayProxy:
        self._server = await asyncio.start_server(self._handle, self.listen, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def dsn(self, database: str) -> str:
        return f"postgresql://{USER}@{self.listen}:{self.port}/{database}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target.address, PG_PORT)
        except OSError:
            writer.close()
            return
        for coro in (self._delayed(reader, up_writer), self._direct(up_reader, writer)):
            task = asyncio.create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _delayed(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def release() -> None:
            while True:
                due, data = await queue.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if not data:
                    writer.close()
                    return
                writer.write(data)
                await writer.drain()

        releaser = asyncio.create_task(release())
        last_due = 0.0
        try:
            while True:
                data = await reader.read(65536)
                sample = self.delay + random.uniform(-self.jitter, self.jitter)
                # In order, as netem without reordering: never before the previous chunk.
                last_due = max(last_due, loop.time() + max(0.0, sample))
                queue.put_nowait((last_due, data))
                if not data:
                    break
            await releaser
        except (OSError, asyncio.CancelledError):
            releaser.cancel()
            writer.close()

    @staticmethod
    async def _direct(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
