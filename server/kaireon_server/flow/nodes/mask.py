"""`transform.mask`: masks personal fields before data leaves a pipeline.

Modes per field:
- "redact": the value becomes "[REDACTED]";
- "null": the value becomes null;
- "partial": strings keep their last 4 characters ("****1234"); e-mail
  addresses keep their domain ("***@example.com"); other values are redacted;
- "hash": HMAC-SHA256 (hex) of the canonical JSON value under the server key
  KAIREON_FLOW_MASK_KEY: stable across runs (joins still work), not reversible
  by hashing guesses without the key. Refused at validation when no key is set.

The key's id (a digest prefix, never the key) is part of the node's
implementation version, so rotating the key invalidates old checkpoints.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kaireon_server.flow.nodes.base import (
    Config,
    ConfigError,
    NodeContext,
    NodeSetup,
    NodeType,
    Records,
    input_option,
    records_of,
)
from kaireon_server.platform.canonical import canonical_json
from kaireon_server.platform.env import EnvReader

MASK_MODES = ("redact", "null", "partial", "hash")
REDACTED = "[REDACTED]"


@dataclass(frozen=True)
class MaskConfig:
    input: str
    fields: Mapping[str, str]
    key: bytes | None = field(default=None, repr=False)


def _partial(value: Any) -> Any:
    if not isinstance(value, str):
        return REDACTED
    local, at, domain = value.rpartition("@")
    if at and local and domain:
        return f"***@{domain}"
    return "*" * max(len(value) - 4, 0) + value[-4:] if len(value) > 4 else "*" * len(value)


class MaskTransform(NodeType[MaskConfig]):
    """`transform.mask`: {fields: {name: "redact" | "null" | "partial" | "hash"}, input?}."""

    name = "transform.mask"

    def parse_config(self, config: Mapping[str, Any], setup: NodeSetup) -> MaskConfig:
        cfg = Config(config, {"fields", "input"})
        fields = cfg.text_map("fields")
        for name, mode in fields.items():
            if mode not in MASK_MODES:
                raise ConfigError(f"fields.{name}", f"must be one of {', '.join(MASK_MODES)}")
        key: bytes | None = None
        if "hash" in fields.values():
            # A key is taken byte for byte (never stripped or echoed).
            raw = EnvReader(setup.env).secret("KAIREON_FLOW_MASK_KEY") or ""
            if len(raw) < 16:
                raise ConfigError(
                    "fields",
                    "mode 'hash' needs KAIREON_FLOW_MASK_KEY (16+ characters) on the server",
                )
            key = raw.encode()
        return MaskConfig(input_option(cfg, setup), fields, key)

    def implementation_version(self, config: MaskConfig) -> str:
        if config.key is None:
            return self.version
        return f"{self.version}+key:{hashlib.sha256(config.key).hexdigest()[:12]}"

    async def run(self, ctx: NodeContext, config: MaskConfig, inputs: Mapping[str, Any]) -> Any:
        out: Records = []
        for record in records_of(inputs, config.input):
            row = dict(record)
            for name, mode in config.fields.items():
                if name not in row or row[name] is None:
                    continue
                if mode == "redact":
                    row[name] = REDACTED
                elif mode == "null":
                    row[name] = None
                elif mode == "partial":
                    row[name] = _partial(row[name])
                else:
                    assert config.key is not None
                    digest = hmac.new(config.key, canonical_json(row[name]), hashlib.sha256)
                    row[name] = digest.hexdigest()
            out.append(row)
        return out
