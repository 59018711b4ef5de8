"""trainctl trainer package: config schema and checkpoint management."""
