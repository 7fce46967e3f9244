"""Benchmarks: each measures a subject against a baseline doing the same work, interleaved, over several runs."""
