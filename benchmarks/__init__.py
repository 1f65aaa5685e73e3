"""Ratio benchmarks: every figure is divided by a floor measured in the same run."""
