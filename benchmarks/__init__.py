"""Throughput benchmarks (model, data pipeline, end to end); each script prints one JSON object."""
