"""Cache keys and output digests: what decides whether a checkpoint may be reused.

cache key = sha256 of the RFC 8785 canonical JSON of
    {"type", "version" (the implementation version),
     "config": sha256 of the canonical JSON of the node's config,
     "inputs": [[dependency id, output digest of that dependency], ...]}
with inputs in `depends_on` order. The config digest is computed once per
plan, so the per-node cost does not grow with the size of the config. A node
whose type, implementation, config or any upstream output changed gets a new
key and runs again; timeout and retry policy are not part of it (they do not
change what a node computes).

Both are computed for every node, so they use the fast canonicaliser
(kaireon_client/jcs.py: the C json encoder where its output is already canonical,
byte-identical to the `rfc8785` package by property test, which it falls back
to, errors included).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import rfc8785

from kaireon_server.flow.nodes.base import NodeError
from kaireon_server.platform.canonical import canonical_json, sha256_hex


def config_digest(config: Mapping[str, Any]) -> str:
    return sha256_hex(canonical_json(dict(config)))


def cache_key(
    node_type: str,
    version: str,
    config_sha256: str,
    inputs: Sequence[tuple[str, str]],
) -> str:
    return sha256_hex(
        canonical_json(
            {
                "type": node_type,
                "version": version,
                "config": config_sha256,
                "inputs": [[dep, digest] for dep, digest in inputs],
            }
        )
    )


def output_digest(output: Any) -> str:
    """Digest of a node's output; outputs must be JSON that RFC 8785 can canonicalise."""
    try:
        return sha256_hex(canonical_json(output))
    except (rfc8785.CanonicalizationError, TypeError, ValueError, RecursionError) as exc:
        # e.g. NaN, integers beyond 2^53, non-JSON objects
        raise NodeError(f"node output is not canonical JSON ({type(exc).__name__})") from None
