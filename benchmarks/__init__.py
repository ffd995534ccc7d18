"""The course's benchmarks: how fast and how far its federated training goes, against plain
Keras and the FedAvg paper. ``python -m benchmarks`` (``make bench``) writes
``build/bench/report.json`` and ``docs/benchmarks.md``; ``--smoke`` is the tiny CI variant.

Sections: 1 orchestration overhead, 2 rounds to a target accuracy, 3 scale in the number of
clients, 4 best accuracy within a CPU-time budget. See :mod:`benchmarks.sections`.
"""
