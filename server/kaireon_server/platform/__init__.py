"""Cross-cutting building blocks: configuration, database, identity, audit chain, crypto."""
