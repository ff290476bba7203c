"""Benchmarks of the receiver against its peers, floors and limits (``scripts/bench``).

Each benchmark measures our receiver and its comparison in the same run, interleaved,
several repetitions, and reports medians with min-max and paired ratios: this machine is
shared and noisy, so absolute numbers are context only.  Nothing here is a pass/fail test.
"""
