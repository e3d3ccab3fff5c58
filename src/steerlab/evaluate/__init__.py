"""Benchmarks: steering vs prompting vs few-shot vs LoRA on held-out data, with calibration, plots and reports."""
