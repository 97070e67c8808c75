"""Helpers shared by the test modules (and the benchmarks); never imported by services/."""
