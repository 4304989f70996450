"""Data-subject request lifecycle (RequestService): states, deadlines, transitions."""
