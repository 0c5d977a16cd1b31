"""The performance benchmark: ``python -m stridelab.bench`` (``make bench``); see docs/performance.md.

* :mod:`~stridelab.bench.paths`: the three training paths timed side by side (bare loop,
  stridelab, torchvision/PIL DataLoader);
* :mod:`~stridelab.bench.runs`: what a run costs besides its steps (fixed cost, suite);
* :mod:`~stridelab.bench.benchmark`: the whole benchmark on generated CIFAR-shaped data, and the bars
  (judged against the Bars table of docs/performance.md, the one place their thresholds are written);

All timing goes through :func:`stridelab.training.timing.time_steps` (the one timing loop) and
:class:`stridelab.training.throughput.TrainThroughput` (the one timing callback, the run's own).
* :mod:`~stridelab.bench.report`: the console table.
"""
