"""PostgreSQL access: the pool, tenant-scoped transactions, migrations, the embedded server."""

from kaireon_server.platform.db.database import Database, close_connection, connect_database
from kaireon_server.platform.db.migrate import apply_migrations

__all__ = ["Database", "apply_migrations", "close_connection", "connect_database"]
