"""Fakes of external systems with real semantics, for tests that cannot have the real thing."""
