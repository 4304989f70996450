"""DsarService: data-subject access and portability exports (GDPR Art. 15 and 20).

service.py (gRPC handlers, the capability) over model.py (domain types and
validation), repository.py (SQL), worker.py + jobs.py (the queue's workers and
one export attempt), plan.py + exporter.py (canonical JSON out of PostgreSQL),
store.py (digest, encryption, chunks, signature) and notify.py (LISTEN/NOTIFY).
"""
