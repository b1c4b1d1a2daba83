"""Static throughput profile of the GPU kernels from their SASS: `inertia-gpu bench --static`.

The launchers run as usual under a stand-in Triton driver that turns each launch into a compile for
the chosen architecture (standin.py, targets.py); the wheel's nvdisasm gives the SASS with source
lines (toolchain.py, sass.py); the main loop is counted (counting.py, classify.py) and turned into
issue and pipe limits on the chosen card (hardware.py, figures.py). profile.py runs it all, each
compile in a worker process with a time limit (worker.py); budgets.py holds the targets CI enforces.
"""
