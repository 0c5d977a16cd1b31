"""Studies: aggregation of many runs into tables and plots (and, in time, running and resuming grids)."""

from stridelab.studies.aggregate import Aggregate, aggregate, analyse, collect
from stridelab.studies.stats import describe, t975

__all__ = ["Aggregate", "aggregate", "analyse", "collect", "describe", "t975"]
