"""towerflow's library: everything that runs without Dagster, one subpackage per stage.

Importing it shortens how long torch's OpenMP threads spin at a barrier before they sleep
(`GOMP_SPINCOUNT=1000`, libgomp's own setting when it sees more threads than cores), unless the
environment already says otherwise. It must happen before torch loads OpenMP, which is why it
sits here, ahead of every import of torch in the project. Why: a thread that spins while the
sibling it waits for shares a core with another process burns its own slice and delays its
sibling's, so every parallel op of a training step can wait a scheduler slice instead of
microseconds. The demo's two-tower (default data, 2 torch threads, s/epoch, two runs each):

| OpenMP waiting | quiet 2 cores | one busy-loop process beside it |
|---|---|---|
| libgomp default (spin 300,000) | 2.9-3.8 | 9.3-15.6 |
| GOMP_SPINCOUNT=1000 (this default) | 3.4-4.1 | 7.0-7.5 |
| OMP_WAIT_POLICY=PASSIVE (never spin) | 6.1-6.8 | 4.6-4.9 |
| one torch thread | 4.1-4.3 | 4.2-4.5 |

Never spinning halves the quiet speed on these small ops, so the default only shortens the spin;
a deployment that shares its cores with other jobs is better served by `OMP_NUM_THREADS=1` or
`OMP_WAIT_POLICY=PASSIVE`, which the environment can set. The trained weights do not depend on
any of these (the same validation figures in every row).
"""

import os

os.environ.setdefault("GOMP_SPINCOUNT", "1000")
