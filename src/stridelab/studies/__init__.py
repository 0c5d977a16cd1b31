"""Studies: aggregation of many runs into tables and plots (and, in time, running and resuming grids)."""

from stridelab.studies.aggregate import Study, aggregate, analyse, collect
from stridelab.studies.stats import describe, t975

__all__ = ["Study", "aggregate", "analyse", "collect", "describe", "t975"]
