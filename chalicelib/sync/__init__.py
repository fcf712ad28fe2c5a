"""One dataset's sync: who runs it (coordinator), the page loop (engine) and its parts, the provider's gate (pacing)."""
