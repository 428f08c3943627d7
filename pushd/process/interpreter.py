"""CPython settings for `pushd serve`: the garbage collector and the GIL switch interval.

Both were measured with `bench/deliver.py` (docs/benchmarks.md), where they are the
difference between a server that waits on itself and one that keeps both of its threads
busy:

- **Garbage collector.** Under load the event loop allocates hundreds of container
  objects per request, so with CPython's default thresholds (700, 10, 10) the youngest
  generation was collected about 50 times a second and the whole heap (about 180,000
  objects with 1,000 sockets open) every two seconds, stopping the loop for about
  100 ms each time. Larger thresholds collect less often for the same garbage, and
  `gc.freeze()` after start-up moves what start-up built (modules, the app, its tables),
  which lives forever, out of every later full collection.
- **Switch interval.** The SQLite worker thread gives up the GIL at every statement it
  steps and must take it back from the event loop, which (under uvloop) keeps the GIL
  while it writes to sockets and only lets go when it polls or when the switch interval
  forces it. At the default 5 ms a batch commit of about ten statements waited for the
  GIL for longer than it worked, and every request of the batch waited with it.
  0.5 ms bounds each of those waits.
"""

from __future__ import annotations

import gc
import sys

# Youngest generation every 20,000 net allocations (not 700); a full collection after 20
# middle ones (not 10), each after 20 young ones.
GC_THRESHOLDS = (20_000, 20, 20)
SWITCH_INTERVAL_SECONDS = 0.0005


def tune_for_serving() -> None:
    """Set the collector's thresholds and the GIL switch interval for a server process."""
    gc.set_threshold(*GC_THRESHOLDS)
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)


def freeze_startup_objects() -> None:
    """Collect once, then exempt everything alive now from later collections: call it
    when start-up is done and before serving."""
    gc.collect()
    gc.freeze()
