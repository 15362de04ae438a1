"""MedSynth-FL core: data, models, training phases, packaging and privacy audits.

Nothing in this package imports Flower, so sites, the coordinator, benchmarks
and the command line share one implementation.
"""

__version__ = "0.1.0"
