"""stridelab's Hydra launcher plugin: ``launcher=packed`` (see :mod:`stridelab.studies.packing`)."""
