"""Developer tooling: the local runner and helpers shared with the tests. Never deployed."""
