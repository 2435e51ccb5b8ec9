"""Benchmarks: each bus figure beside a raw baseline measured in the same run."""
