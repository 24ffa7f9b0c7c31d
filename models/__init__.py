"""towerflow's library: everything that runs without Dagster, one subpackage per stage.

Importing it asks OpenMP (torch's and FAISS's thread pools) to sleep rather than spin while it
waits at a barrier, unless the environment already says otherwise (`OMP_WAIT_POLICY`). This must
happen before torch loads its OpenMP runtime, which is why it sits here, ahead of every import
of torch in the project. Why: a spinning thread that shares a core with another process holds
its sibling's barrier for a whole scheduler slice, so every parallel op of a training step waits
milliseconds instead of microseconds. On 2 cores with other jobs running (load average 5-8), one
epoch of `python -m benchmarks.bench_distributed` in process on 2 torch threads took 16.0 s with
`OMP_WAIT_POLICY=ACTIVE` against 1.09 s with `PASSIVE` (0.98 s on one thread): the 30x slowdown a
busy machine used to cost, gone.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
