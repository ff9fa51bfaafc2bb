"""Benchmarks: restoration throughput, the gateway, search, load and chaos runs (benchmarks/load)."""
