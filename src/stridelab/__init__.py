"""stridelab: an experiment harness for CNN downsampling studies.

Data flows one way, and imports follow it (``tests/test_import_flow.py`` checks):

    errors, config, files, registry,      leaves: error types, config plumbing and run identity
    validation                            (config_hash, VARIANT_FIELDS), atomic writes, registries,
                                          the config's types and ranges
    layers, data                          padding, blur, polyphase, downsampling strategies; data sets
    models                                the networks (registered by name)
    training                              LightningModule, results (metrics.json), timing, DDP helpers,
                                          checkpoints and stop signals, resume points, run locks, a run's lifecycle
    metrics                               the measurement suite
    build                                 a run's parts from its config
    train, evaluate, bench                entry points: train a run, re-measure it, time it
    studies, study, aggregate             grids of runs, resume, tables, paired verdicts and plots
"""

__version__ = "0.1.0"
