"""ErasureService: GDPR Art. 17 erasure of one customer in one transaction, and legal holds.

service.py (gRPC handlers) -> eraser.py / holds.py (domain) -> repository.py,
dynamic.py (SQL). What is deleted, kept or redacted is platform/data_map.py.
"""
