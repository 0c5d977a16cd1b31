"""Find the stages of any network, so every metric that reads stage outputs works on converted models.

stridelab's own models are ``stem -> stages -> head`` (:class:`~stridelab.models.base.StagedNet`); a
torchvision or timm network has no such attribute, and converted by :func:`~stridelab.models.convert`
it is a flat ``torch.fx`` graph. :func:`add_stage_taps` finds its stages from the graph itself:

- a **cut** is a node every path from the input to the output passes through (no edge of the graph
  jumps over it): a residual block's output is one, a node inside a block is not;
- the **features** end where the head begins: the first cut that is a global (adaptive) pool, a
  flatten or a mean, or whose output is not a 4-D map (a squeeze-excitation's pool is inside a block,
  no cut);
- one zero image of ``size`` px is run through the network (``torch.fx``'s ShapeProp), and the cuts
  before the head are grouped by their map size: each group is a stage (a resolution level), and its
  last cut is the stage's output. A cut larger than the level before it (a padding layer's output)
  starts no level.

An ``nn.Identity`` tap is inserted after each stage output, as ``stage_taps.stage<i>``; the metrics
read :func:`stage_modules`, which gives these taps or a StagedNet's ``stages`` alike (position probe
per stage, border deviation of the features, geometry check). Taps have no parameters: the state dict is unchanged, and
the graph computes what it computed. ``stage_reductions`` holds each stage's downsampling factor.
"""

from __future__ import annotations

import re
from collections import OrderedDict

import torch
import torch.fx as fx
import torch.nn as nn
from torch.fx.passes.shape_prop import ShapeProp

from stridelab.models.tracing import symbolic_trace

TAPS = "stage_taps"  # not ``stages``: timm networks have a module of that name, which a traced graph never calls
HEAD_FUNCTIONS = ("adaptive_avg_pool2d", "adaptive_max_pool2d", "flatten")
HEAD_METHODS = ("mean", "amax", "flatten", "view", "reshape")


def stage_modules(model: nn.Module) -> OrderedDict[str, nn.Module]:
    """The modules whose outputs are ``model``'s stage outputs, in forward order (the last: the
    features): the taps of :func:`add_stage_taps`, else the children of a StagedNet's ``stages``
    (``stages`` itself when it has none); empty when the model has neither."""
    stages = getattr(model, TAPS, None)
    if not isinstance(stages, nn.Module):
        stages = getattr(model, "stages", None)
    if not isinstance(stages, nn.Module):
        return OrderedDict()
    return OrderedDict(stages.named_children()) or OrderedDict(stages=stages)


def add_stage_taps(model: nn.Module, in_chans: int = 3, size: int = 64) -> fx.GraphModule:
    """``model`` as a GraphModule (itself when it is one) with a ``stage_taps`` module of taps at its
    stage outputs and ``stage_reductions``; no taps when no 4-D map precedes the head (not a CNN)."""
    gm = model if isinstance(model, fx.GraphModule) else symbolic_trace(model)
    outputs = stage_outputs(gm, in_chans, size)
    if not outputs:
        return gm
    gm.stage_reductions = []
    for i, (node, reduction) in enumerate(outputs):
        name = f"{TAPS}.stage{i}"
        gm.add_submodule(name, nn.Identity())
        with gm.graph.inserting_after(node):
            tap = gm.graph.call_module(name, (node,))
        node.replace_all_uses_with(tap, delete_user_cb=lambda user, tap=tap: user is not tap)
        gm.stage_reductions.append(reduction)
    gm.graph.lint()
    gm.recompile()
    return gm


def stage_outputs(gm: fx.GraphModule, in_chans: int, size: int = 64) -> list[tuple[fx.Node, int]]:
    """The node that ends each stage, in forward order, with the stage's downsampling factor."""
    was_training = gm.training
    gm.eval()
    device = next((p.device for p in gm.parameters()), torch.device("cpu"))
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(torch.zeros(1, in_chans, size, size, device=device))
    finally:
        gm.train(was_training)
    nodes = [n for n in gm.graph.nodes if n.op not in ("get_attr", "output")]
    position = {n: i for i, n in enumerate(nodes)}
    dependent = _input_dependent(nodes)
    levels: list[list] = []  # [map size, the last cut of that size], in forward order
    reach = -1  # the farthest position an earlier node's output is used at
    for i, node in enumerate(nodes):
        if node not in dependent:
            continue
        cut, shape = reach <= i and node.op != "placeholder", _shape(node)
        if cut and _starts_head(gm, node, shape):
            break
        # a level begins where the map shrinks by 1.5x or more (a stride); a map a little smaller or
        # larger (a valid conv, a padding layer) is no level, one of the level's size extends it
        if cut and shape is not None:
            if levels and shape[2:] == levels[-1][0]:
                levels[-1][1] = node
            elif not levels or 3 * shape[2] <= 2 * levels[-1][0][0]:
                levels.append([shape[2:], node])
        reach = max([reach, *(position.get(u, len(nodes)) for u in node.users)])
    return [(node, max(1, round(size / hw[0]))) for hw, node in levels]


def _input_dependent(nodes: list[fx.Node]) -> set[fx.Node]:
    found: set[fx.Node] = set()
    for node in nodes:  # topological order: a node's inputs come first
        if node.op == "placeholder" or any(arg in found for arg in node.all_input_nodes):
            found.add(node)
    return found


def _shape(node: fx.Node) -> tuple | None:
    meta = node.meta.get("tensor_meta")
    shape = getattr(meta, "shape", None)
    return tuple(shape) if shape is not None and len(shape) == 4 else None


def _starts_head(gm: fx.GraphModule, node: fx.Node, shape: tuple | None) -> bool:
    """A cut that begins the head: a global pool, a flatten or mean, a 1x1 map (no positions left),
    or anything not a 4-D map."""
    if shape is None or shape[2:] == (1, 1):
        return True
    if node.op == "call_module":
        return re.search(r"Adaptive\w*Pool", type(gm.get_submodule(node.target)).__name__) is not None
    if node.op == "call_function":
        return getattr(node.target, "__name__", "") in HEAD_FUNCTIONS
    return node.op == "call_method" and node.target in HEAD_METHODS
