"""Benchmarks on the built-in world (`seppo bench ...`): they print and plot measured figures."""
