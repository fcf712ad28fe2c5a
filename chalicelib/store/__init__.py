"""DynamoDB (through PynamoDB) and KMS adapters: one module a concern, conditions named, failures as domain errors."""
