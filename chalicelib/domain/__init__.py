"""Pure rules and values: read tiers, the tick planner, rate windows, breaker, retry, errors (no HTTP, no I/O)."""
