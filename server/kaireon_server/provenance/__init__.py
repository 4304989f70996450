"""ProvenanceService: one canonical, digested and signed bundle per decision."""
