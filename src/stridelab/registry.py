"""Registries: name -> class or builder, filled by a decorator where each thing is defined.

Downsampling strategies, models and data modules all register the same way::

    @MODEL_REGISTRY.register("simple_cnn")
    class SimpleCNN(StagedNet): ...

The names are what configs and tables use; unknown names get the usual one-paragraph error.
"""

from __future__ import annotations

from stridelab.errors import choose


class Registry(dict):
    """A dict of ``name -> object`` of one ``kind`` (``"model"``, ``"downsample"``, ``"data"``)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def register(self, name: str | None = None):
        """Decorator: register the object under ``name`` (default: its ``name`` attribute)."""

        def add(obj):
            key = name or obj.name
            if key in self and self[key] is not obj:
                raise ValueError(f"two {self.kind}s registered as {key!r}: {self[key]} and {obj}")
            self[key] = obj
            return obj

        return add

    def get_checked(self, name: str):
        """The object registered as ``name``; an unknown name raises a ConfigError listing the known."""
        choose(self.kind, name, self)
        return self[name]
