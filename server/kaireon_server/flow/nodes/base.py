"""What a node type is: a name, an implementation version, a config parser and `run`.

A node type parses (and so validates) its config once, before the run starts:
`parse_config` raises ConfigError naming the offending option. `run` receives
its dependencies' outputs by node id and returns a JSON value (records are a
list of JSON objects). It raises NodeError for failures whose message is fit
for users; messages never carry record values, which may be personal data.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from kaireon_server.platform.auth.identity import Role

if TYPE_CHECKING:
    import asyncpg

    from kaireon_server.platform.db import Database
    from kaireon_server.platform.signing import Signer

Records = list[dict[str, Any]]
C = TypeVar("C")
_MISSING: Any = object()


class NodeError(Exception):
    """A node failed. `retryable` says whether another attempt may succeed."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


class ConfigError(Exception):
    """Bad config of a node; `path` is relative to the node's config ("" = the whole)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


@dataclass(frozen=True)
class NodeSetup:
    """What a node type may look at while parsing its config."""

    node_id: str
    depends_on: tuple[str, ...]
    # The server's environment (Settings.env): keys and limits a node type reads.
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass
class NodeServices:
    """Process-wide dependencies the runner hands every node."""

    db: Database | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    # Signs erasure receipts (sink.erasure).
    signer: Signer | None = None
    # Free-form slots for embedding code and tests (e.g. a counter sink).
    extras: dict[str, Any] = field(default_factory=dict)


class Transactional(Protocol):
    """Gives a node the transaction its checkpoint is written in."""

    async def connection(self) -> asyncpg.Connection: ...


@dataclass
class NodeContext:
    tenant_id: str
    run_id: str
    node_id: str
    # Execution attempt of this node within the run attempt (1-based).
    attempt: int
    # How many times the run has been started (1 + retries).
    run_attempt: int
    services: NodeServices
    _tx: Transactional
    # Who started (or retried) the run: the actor of audit rows nodes write.
    actor: str = "flow"

    async def transaction(self) -> asyncpg.Connection:
        """A tenant-scoped connection in a transaction that commits together with
        this node's checkpoint (PostgresCheckpointStore) or right before it
        (InMemoryCheckpointStore). Writes made here are undone when the node
        fails, times out or is cancelled."""
        return await self._tx.connection()


class NodeType(abc.ABC, Generic[C]):
    """Subclass per node type; register built-ins in the registry, others via entry points."""

    name: ClassVar[str]
    # Bump when the same config and inputs would produce a different output:
    # it is part of the cache key, so old checkpoints stop matching.
    version: ClassVar[str] = "1"
    # The role a caller needs to start or retry a run containing this node type
    # (StartRun itself needs OPERATOR; e.g. sink.erasure needs ADMIN).
    min_role: ClassVar[Role] = Role.OPERATOR

    def implementation_version(self, config: C) -> str:
        """The version mixed into the cache key (may depend on config, e.g. a key id)."""
        return self.version

    @abc.abstractmethod
    def parse_config(self, config: Mapping[str, Any], setup: NodeSetup) -> C: ...

    @abc.abstractmethod
    async def run(self, ctx: NodeContext, config: C, inputs: Mapping[str, Any]) -> Any: ...


# --- config reading --------------------------------------------------------------


class Config:
    """Typed access to a node's config; unknown options are errors (typos surface early)."""

    def __init__(self, raw: Mapping[str, Any], allowed: Iterable[str]) -> None:
        if not isinstance(raw, Mapping):
            raise ConfigError("", "config must be an object")
        self.raw = raw
        unknown = sorted(set(raw) - set(allowed))
        if unknown:
            raise ConfigError(unknown[0], "unknown option")

    def value(self, key: str, default: Any = _MISSING) -> Any:
        if key not in self.raw or self.raw[key] is None:
            if default is _MISSING:
                raise ConfigError(key, "is required")
            return default
        return self.raw[key]

    def text(
        self, key: str, default: Any = _MISSING, *, choices: Sequence[str] | None = None
    ) -> Any:
        value = self.value(key, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, str) or not value:
            raise ConfigError(key, "must be a non-empty string")
        if choices is not None and value not in choices:
            raise ConfigError(key, f"must be one of {', '.join(choices)}")
        return value

    def integer(
        self,
        key: str,
        default: Any = _MISSING,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> Any:
        value = self.value(key, default)
        if value is default and default is not _MISSING:
            return value
        # Protobuf Struct carries every number as a double.
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
            raise ConfigError(key, "must be an integer")
        number = int(value)
        if minimum is not None and number < minimum:
            raise ConfigError(key, f"must be at least {minimum}")
        if maximum is not None and number > maximum:
            raise ConfigError(key, f"must be at most {maximum}")
        return number

    def number(self, key: str, default: Any = _MISSING) -> Any:
        value = self.value(key, default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, "must be a number")
        return value

    def flag(self, key: str, default: Any = _MISSING) -> Any:
        value = self.value(key, default)
        if not isinstance(value, bool):  # also checks the default
            raise ConfigError(key, "must be true or false")
        return value

    def text_list(self, key: str, default: Any = _MISSING, *, non_empty: bool = True) -> Any:
        value = self.value(key, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(key, "must be a list of non-empty strings")
        if non_empty and not value:
            raise ConfigError(key, "must not be empty")
        return list(value)

    def text_map(self, key: str, default: Any = _MISSING) -> Any:
        value = self.value(key, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, Mapping) or not value:
            raise ConfigError(key, "must be a non-empty object")
        for name, item in value.items():
            if not isinstance(item, str) or not item:
                raise ConfigError(f"{key}.{name}", "must be a non-empty string")
        return dict(value)


def input_option(cfg: Config, setup: NodeSetup, key: str = "input") -> str:
    """The dependency a single-input node reads: `input`, or the only dependency."""
    chosen = cfg.value(key, None)
    if chosen is None:
        if len(setup.depends_on) != 1:
            raise ConfigError(
                key,
                f"name the dependency to read (the node has {len(setup.depends_on)} dependencies)",
            )
        return setup.depends_on[0]
    if not isinstance(chosen, str) or chosen not in setup.depends_on:
        raise ConfigError(key, "must name one of the node's dependencies")
    return chosen


def no_dependencies(setup: NodeSetup) -> None:
    if setup.depends_on:
        raise ConfigError("", "a source takes no dependencies")


def records_of(inputs: Mapping[str, Any], dependency: str) -> Records:
    """The input from `dependency` as records; anything else is a (permanent) failure."""
    value = inputs.get(dependency)
    if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
        raise NodeError(f"input '{dependency}' is not a list of records")
    return value
