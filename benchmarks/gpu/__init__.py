"""GPU runs in one command each, ready for the day a GPU is lent (docs/gpu.md).

    python -m benchmarks.gpu.wheels --out WHEELS          # here, with registry access: wheels + shapes
    python3 -m benchmarks.gpu.measure --wheels WHEELS --out OUT   # there: throughput and MFU
    python3 -m benchmarks.gpu.recipe --wheels WHEELS --out OUT    # there: train from the shipped adapter, dev scores

Every module here is started by a bare ``python3`` on the GPU machine, so each imports only the
standard library at the top; the work that needs torch runs in a child process inside the
environment that `envs` makes from the carried wheels. ``--tiny`` runs each end to end on a CPU
with tiny random models (tests/test_gpu_scripts.py).
"""
