"""AuditService: read and verify the tenant's audit chain."""
