"""jobmgr benchmarks: each figure next to a baseline measured in the same run.

``python -m bench`` (``make bench``) or ``python -m bench --quick`` (``make bench-quick``).
See bench/README.md for the rows, their baselines and the latest results.
"""
