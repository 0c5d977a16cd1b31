"""stridelab: an experiment harness for CNN downsampling studies.

Data flows one way: config -> data + model -> trainer -> metrics -> results -> aggregate.
Each concept has one home: ``layers`` (padding, blur, downsampling factory), ``models``,
``data``, ``training`` (LightningModule, run results), ``train`` (the Hydra entry point).
"""

__version__ = "0.1.0"
