import gc

from core.collector import GC_THRESHOLDS

# what starting a run allocates (modules, the composed config) lives as long as the run:
# the collector's default thresholds walk it a hundred times (core.collector)
gc.set_threshold(*GC_THRESHOLDS)

from core.cli import main

main()
