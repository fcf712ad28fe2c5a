"""HTTP glue: blueprints whose routes only parse the request and call a service."""
