"""Benchmarks: throughput against HF Trainer and TRL, daemon overhead."""
