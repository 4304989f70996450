"""Caller identity (tenant, role, subject) and its enforcement on every RPC."""

from kaireon_server.platform.auth.identity import Identity, Role, current_identity

__all__ = ["Identity", "Role", "current_identity"]
