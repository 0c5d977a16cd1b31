"""Trace a network into a ``torch.fx`` graph, or say in one paragraph why it cannot be.

The converter (:mod:`stridelab.models.convert`) and stage finding (:mod:`stridelab.models.stages`)
both edit a network's graph. Modules whose ``forward`` branches on tensor values or sizes cannot be
traced through, so they stay whole (leaves): stridelab's own layers (partial convs, blur filters,
polyphase selection) and the modules timm registers as not traceable (when timm is loaded).
"""

from __future__ import annotations

import sys

import torch.fx as fx
import torch.nn as nn

from stridelab.errors import ConfigError


def _timm_notrace() -> tuple[tuple, tuple]:
    """timm's own lists of modules and functions fx cannot trace through (empty without timm)."""
    if "timm" not in sys.modules:  # a torchvision network never imports timm
        return (), ()
    from timm.layers import get_notrace_functions, get_notrace_modules

    return tuple(get_notrace_modules()), tuple(get_notrace_functions())


class _Tracer(fx.Tracer):
    def __init__(self, leaves: tuple, functions: tuple) -> None:
        super().__init__(autowrap_functions=functions)
        self.leaves = leaves

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if type(m).__module__.startswith("stridelab.") or (self.leaves and isinstance(m, self.leaves)):
            return True
        return super().is_leaf_module(m, module_qualified_name)


def symbolic_trace(model: nn.Module) -> fx.GraphModule:
    """``model`` as a GraphModule with the same submodules (and parameter names); a ConfigError
    naming the model and the reason when fx cannot trace it."""
    leaves, functions = _timm_notrace()
    tracer = _Tracer(leaves, functions)
    try:
        graph = tracer.trace(model)
    except Exception as err:
        detail = " ".join(str(err).split())[:300]
        raise ConfigError(
            f"cannot convert {type(model).__name__}: torch.fx cannot trace it ({type(err).__name__}: {detail}). "
            "Its forward branches on tensor values or sizes, or calls code fx cannot follow. Convert a network "
            "whose forward is a fixed sequence of layers, register the offending module as a leaf "
            "(timm.layers.register_notrace_module), or edit the network by hand."
        ) from None
    return fx.GraphModule(tracer.root, graph, type(model).__name__)
