"""accval's pytest suites (also reachable as the top-level ``suites/`` folder)."""
