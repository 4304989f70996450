"""The verifiable audit log's formats: what an auditor needs to check it offline.

- merkle: RFC 9162 Merkle trees (hashing, proofs, compact ranges);
- note: C2SP signed-note (signature lines, key ids, vkeys);
- checkpoint: C2SP tlog-checkpoint (signed tree heads, per-tenant origins);
- cosignature: C2SP tlog-cosignature v1 (witness cosignatures);
- leaf: the RFC 8785 leaf of one audit row;
- tiles: C2SP tlog-tiles (paths, tile contents, proofs from tiles, entry bundles);
- proof: C2SP tlog-proof (one entry's offline inclusion proof);
- evidence: a receipt, bundle or DSAR export checked with its audit row's proof;
- verify: offline verification of an exported range (`kaireon verify audit`);
- witness: the `kaireon-witness` command.

docs/AUDIT.md describes the formats and the threat model.
"""
