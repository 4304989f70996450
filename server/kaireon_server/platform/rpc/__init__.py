"""gRPC plumbing shared by every service: how errors are reported as statuses."""

from kaireon_server.platform.rpc.status import abort_with, retry_info, status_for

__all__ = ["abort_with", "retry_info", "status_for"]
