"""Typed client, CLI and offline tools for the Kaireon compliance plane.

The generated messages and stubs live in the `kaireon` package (kaireon.dsar.v1, …).
"""

from kaireon_client.client import AsyncKaireonClient, KaireonClient
from kaireon_client.config import ClientConfig

__all__ = ["AsyncKaireonClient", "ClientConfig", "KaireonClient"]
