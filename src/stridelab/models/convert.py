"""Put any downsampling strategy and padding into any CNN: :func:`convert`.

Every anchor of the field edits networks by hand (antialiased-cnns ships edited copies of a fixed
zoo, the APS code a hand-edited ResNet-18). :func:`convert` rewrites the stride-2 downsampling sites
of an arbitrary network instead, with the strategy's :meth:`~stridelab.layers.Downsample.subsampler`,
reproducing the published layouts. It traces the network with ``torch.fx`` (which also sees how the
layers are wired: which norm and activation follow a conv, which strided ops meet at one residual
addition) and edits the graph; every parameter keeps its name.

Placement, Zhang 2019 (ICML), Sec. 3 and the antialiased-cnns models:

=========================================  ====================================================
site                                       becomes
=========================================  ====================================================
stride-2 conv, kernel > 1                  the conv at stride 1, then its norm and activation,
                                           then the subsampler (ResNet BasicBlock ``conv1``,
                                           Bottleneck ``conv2``, MobileNetV2's depthwise conv)
stride-2 1x1 conv (a residual projection)  the subsampler, then the conv at stride 1
stride-2 max pool                          a dense max (stride 1), then the subsampler:
                                           ``dense_max="2x2"`` a 2x2 window (ResNet stem, VGG),
                                           ``"keep"`` the pool's own window and padding (DenseNet)
stride-2 average pool                      the subsampler (DenseNet transitions; for blur
                                           pooling the blur alone)
FLC / ASAP (``before_conv``)               the subsampler, then the conv at stride 1, for every
                                           conv; a max or average pool becomes the subsampler
                                           alone (GeJulia/flc_pooling's ResNets)
stride-2 conv reading the input image      kept with ``stem="keep"`` (antialiased-cnns);
                                           converted with ``stem="convert"`` (the APS authors'
                                           choice: only then is a network exactly shift invariant)
=========================================  ====================================================

``downsample="conv"`` leaves every site as it is (the baseline); ``maxpool`` leaves max pools as
they are (they already are the strategy). For ``aps`` and ``lps`` the strided ops whose paths meet
at one addition (a residual block's main branch and its projection shortcut) share one polyphase
choice: the first to run chooses, the others take its grid. ``padding=None`` leaves the network's
convs and pools alone and pads inserted filters reflect, as Zhang's reference; a padding mode re-pads
every padded conv and pool of the network with it, and the inserted filters too.

Sites the converter does not rewrite, and says so in :attr:`Conversion.skipped`: functional pooling
calls (``F.max_pool2d``) and, with ``stem="keep"``, a stem of another stride (ConvNeXt's 4x4/s4
patchify stem). Refused, in one paragraph naming the layer: any other stride but 1 and 2, a strided
dilated conv, a strided transposed conv. A rewritten pool keeps the original pool's output size on
odd maps and with ``ceil_mode`` (:class:`~stridelab.layers.pool.PoolSite`). ``padding=partial``
makes every padded conv a partial convolution (Liu et al. 2018) with the same parameters, every padded
average pool an average over in-image taps, and the inserted filters partial too.
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn as nn

from stridelab.errors import ConfigError, choose
from stridelab.layers import ConvKit, Downsample, Pad2d, PaddingSpec, create_downsample
from stridelab.layers.partial import PartialConv2d
from stridelab.layers.polyphase import PolyphaseTie
from stridelab.layers.pool import PoolSite, create_dense_max
from stridelab.models.tracing import symbolic_trace

STEMS = ("keep", "convert")
DENSE_MAX = ("2x2", "keep")
NORM_TYPES = (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d, nn.LayerNorm, nn.SyncBatchNorm)
ACT_TYPES = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.GELU, nn.LeakyReLU, nn.ELU, nn.Mish, nn.Hardtanh)
ACT_FUNCTIONS = (torch.relu, torch.nn.functional.relu, torch.nn.functional.relu6, torch.nn.functional.silu)
ADDS = (operator.add, operator.iadd, torch.add)


@dataclass
class Site:
    """One stride-2 downsampling of the traced network."""

    kind: str  # conv, projection, maxpool, avgpool
    node: fx.Node  # the strided op's node
    target: str  # its module's qualified name
    tie: PolyphaseTie | None = None
    follows: bool = False


@dataclass
class Conversion:
    """What :func:`convert` did, kept on the converted model as ``stridelab_conversion``."""

    downsample: str
    sites: list[str] = field(default_factory=list)  # "kind target", in graph order
    kept: list[str] = field(default_factory=list)  # sites left as they are (the stem, max pools under maxpool)
    tied: list[list[str]] = field(default_factory=list)  # the sites that share one polyphase choice
    skipped: list[str] = field(default_factory=list)  # strided ops it cannot rewrite, and why


def convert(
    model: nn.Module,
    downsample: str | Downsample,
    padding: str | PaddingSpec | None = None,
    *,
    stem: str = "keep",
    dense_max: str = "2x2",
) -> nn.Module:
    """A copy of ``model`` with every stride-2 downsampling site rewritten by ``downsample`` (a
    registry name or a :class:`~stridelab.layers.Downsample`) and, when given, every padded conv,
    pool and inserted filter padded with ``padding``. See the module docstring for the placements;
    the returned model carries a :class:`Conversion` as ``stridelab_conversion``."""
    ds = create_downsample(downsample) if isinstance(downsample, str) else downsample
    choose("model.stem", stem, STEMS)
    choose("model.dense_max", dense_max, DENSE_MAX)
    spec = _padding_spec(padding)
    model = copy.deepcopy(model)
    if spec is not None:
        _repad_convs(model, spec.mode)
    kit = ConvKit(padding=spec or PaddingSpec(mode="reflect"))
    report = Conversion(ds.name)
    if ds.keeps_strides:  # conv, strided: the model's own strides are the baseline
        if spec is not None:
            _repad_pools(model, spec.mode)
        model.stridelab_conversion = report
        return model
    gm = symbolic_trace(model)
    sites = _find_sites(gm, report, stem)
    for site in sites:
        if site.kind == "conv" and stem == "keep" and _reads_input(site.node):
            report.kept.append(f"{site.kind} {site.target} (the stem, stem=keep)")
        elif site.kind == "maxpool" and ds.name == "maxpool":
            report.kept.append(f"{site.kind} {site.target} (already a max pool)")
        else:
            report.sites.append(f"{site.kind} {site.target}")
            continue
        site.kind = "kept"
    sites = [s for s in sites if s.kind != "kept"]
    if ds.adaptive_grid:
        _tie_blocks(sites, report)
    pool_mode = spec.mode if spec is not None else "zeros"  # None: a dense max keeps the pool's own padding
    for site in sites:
        dense = None if ds.before_conv else _dense_max(gm, site, pool_mode, dense_max)
        _rewrite(gm, site, ds, kit, dense)
    if spec is not None:  # the pools left (a rewritten max pool's own padding is gone with its stride)
        _repad_pools(gm, spec.mode)
    gm.graph.lint()
    gm.recompile()
    gm.stridelab_conversion = report
    return gm


def _padding_spec(padding) -> PaddingSpec | None:
    if padding is None:
        return None
    spec = PaddingSpec(mode=padding) if isinstance(padding, str) else padding
    if spec.amount != "same":
        raise ConfigError(
            f"padding.amount={spec.amount} does not apply to a converted network: it keeps each conv's own "
            "amount of padding and changes only what the border holds. Use padding.amount=same."
        )
    return spec


def _repad_convs(model: nn.Module, mode: str) -> None:
    """Every padded conv of ``model`` pads with ``mode`` (in place); ``partial`` makes it a
    :class:`~stridelab.layers.partial.PartialConv2d` with the same parameters."""
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.Conv2d) or isinstance(module, PartialConv2d):
            continue
        if module.padding == "same":  # PyTorch's string padding: the symmetric amount it stands for
            module.padding = tuple(d * (k - 1) // 2 for d, k in zip(module.dilation, module.kernel_size))
        if module.padding == "valid" or _pair(module.padding) == (0, 0):
            continue
        if mode == "partial":
            _set_module(model, name, PartialConv2d.of(module))
        else:
            module.padding_mode = mode


def _repad_pools(model: nn.Module, mode: str) -> None:
    """Every padded max or average pool of ``model`` pads with ``mode`` (zeros: PyTorch's own).
    ``partial``: an average pool averages over its in-image taps, a max pool is left as it is (its
    padding never wins in PyTorch), as the built-in models' layers do (stridelab.layers.partial)."""
    if mode == "zeros":
        return
    for name, module in list(model.named_modules()):
        if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)) and _pair(module.padding) != (0, 0):
            if mode == "partial":
                if isinstance(module, nn.AvgPool2d):
                    module.count_include_pad = False
                continue
            pad_h, pad_w = _pair(module.padding)
            pool = copy.copy(module)
            pool.padding = 0
            _set_module(model, name, nn.Sequential(Pad2d((pad_w, pad_w, pad_h, pad_h), mode=mode), pool))


def _pair(value) -> tuple:
    if isinstance(value, str):  # a conv's "same"
        return (value, value)
    return tuple(value) if isinstance(value, (tuple, list)) else (int(value), int(value))


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


def _find_sites(gm: fx.GraphModule, report: Conversion, stem: str) -> list[Site]:
    modules = dict(gm.named_modules())
    sites = []
    for node in gm.graph.nodes:
        if node.op == "call_function" and getattr(node.target, "__name__", "") in ("max_pool2d", "avg_pool2d"):
            report.skipped.append(f"{node.name}: a functional {node.target.__name__} call is not rewritten")
            continue
        if node.op != "call_module":
            continue
        module = modules[node.target]
        if isinstance(module, nn.ConvTranspose2d) and _pair(module.stride) != (1, 1):
            _refuse(node.target, module, "a strided transposed conv upsamples; there is no subsampling to replace")
        stride = _stride(module)
        if stride is None or stride == (1, 1):
            continue
        if stride != (2, 2):
            if stem == "keep" and _reads_input(node):  # ConvNeXt's 4x4/s4 patchify stem, kept as any stem
                report.skipped.append(f"{node.target}: stride {stride} reading the image (the stem, stem=keep)")
                continue
            _refuse(node.target, module, f"stride {stride}: only stride 2 has a subsampler to put in its place")
        if isinstance(module, nn.Conv2d):
            if _pair(module.dilation) != (1, 1):
                _refuse(node.target, module, "a strided dilated conv samples a grid the strategies do not know")
            kind = "projection" if _pair(module.kernel_size) == (1, 1) else "conv"
        else:
            kind = "maxpool" if isinstance(module, nn.MaxPool2d) else "avgpool"
        sites.append(Site(kind, node, node.target))
    return sites


def _refuse(target: str, module: nn.Module, why: str) -> None:
    raise ConfigError(
        f"cannot convert layer '{target}' ({type(module).__name__}: {module.extra_repr()}): {why}. Use "
        "downsample=conv to train the network as it is, or replace that layer by a stride-2 one (or stride 1 "
        "and a pool) before converting."
    )


def _stride(module: nn.Module) -> tuple[int, int] | None:
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        stride = module.stride if module.stride is not None else module.kernel_size
        return _pair(stride)
    return None


def _reads_input(node: fx.Node) -> bool:
    return all(arg.op == "placeholder" for arg in node.all_input_nodes)


def _tie_blocks(sites: list[Site], report: Conversion) -> None:
    """Sites whose paths meet at one addition, none an ancestor of another, share a choice."""
    by_add: dict = {}
    for site in sites:
        add = _next_add(site.node)
        if add is not None:
            by_add.setdefault(add, []).append(site)
    for members in by_add.values():
        groups: list[list[Site]] = []
        for site in members:  # graph order: the first of a group runs first and chooses
            ancestors = _ancestors(site.node)
            group = next((g for g in groups if not any(m.node in ancestors for m in g)), None)
            if group is None:
                groups.append([site])
            else:
                group.append(site)
        for group in (g for g in groups if len(g) > 1):
            tie = PolyphaseTie()
            for i, site in enumerate(group):
                site.tie, site.follows = tie, i > 0
            report.tied.append([f"{s.kind} {s.target}" for s in group])


def _next_add(node: fx.Node) -> fx.Node | None:
    """The first addition downstream of ``node`` (breadth first)."""
    seen, frontier = set(), list(node.users)
    while frontier:
        nxt = []
        for n in frontier:
            if n in seen:
                continue
            seen.add(n)
            if (n.op == "call_function" and n.target in ADDS) or (
                n.op == "call_method" and n.target in ("add", "add_")
            ):
                return n
            nxt += list(n.users)
        frontier = nxt
    return None


def _ancestors(node: fx.Node) -> set[fx.Node]:
    seen, stack = set(), list(node.all_input_nodes)
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            stack += n.all_input_nodes
    return seen


def _rewrite(gm: fx.GraphModule, site: Site, ds: Downsample, kit: ConvKit, dense: nn.Module | None) -> None:
    module = gm.get_submodule(site.target)
    if site.kind in ("conv", "projection"):
        module.stride = (1, 1)
    if site.kind == "conv" and not ds.before_conv:
        after = _after_norm_and_act(gm, site.node)
        sub = ds.subsampler(kit, _channels(gm, site.node), site.tie, site.follows)
        _insert_after(gm, after, f"{site.target}_down", sub)
    elif site.kind in ("conv", "projection"):  # a projection, or a conv of a strategy that pools first
        sub = ds.subsampler(kit, module.in_channels, site.tie, site.follows)
        _insert_before(gm, site.node, f"{site.target}_down", sub)
    else:
        channels = _channels(gm, site.node)
        layers = {"down": ds.subsampler(kit, channels, site.tie, site.follows)}
        if dense is not None:
            layers = {"max": dense, **layers}
        sized = PoolSite(  # the original pool's output size, whatever the map's
            layers, module.kernel_size, module.stride, module.padding, getattr(module, "dilation", 1), module.ceil_mode
        )
        _set_module(gm, site.target, sized)


def _dense_max(gm: fx.GraphModule, site: Site, mode: str, dense_max: str) -> nn.Module | None:
    """The stride-1 max a max-pool site keeps before its subsampler (None for other sites)."""
    if site.kind != "maxpool":
        return None
    if dense_max == "2x2":
        return create_dense_max(mode)
    pool = gm.get_submodule(site.target)
    pad_h, pad_w = _pair(pool.padding)
    if mode in ("zeros", "partial") or (pad_h, pad_w) == (0, 0):  # PyTorch's max padding never wins
        return nn.MaxPool2d(pool.kernel_size, stride=1, padding=pool.padding)
    return nn.Sequential(Pad2d((pad_w, pad_w, pad_h, pad_h), mode=mode), nn.MaxPool2d(pool.kernel_size, stride=1))


def _after_norm_and_act(gm: fx.GraphModule, node: fx.Node) -> fx.Node:
    """The node after which a strided conv's subsampler goes: its norm, then its activation, when
    they follow it alone (Zhang's placement), else the conv itself."""
    modules = dict(gm.named_modules())
    for kinds in (NORM_TYPES, ACT_TYPES):
        users = list(node.users)
        if len(users) != 1:
            break
        user = users[0]
        is_kind = (user.op == "call_module" and isinstance(modules.get(user.target), kinds)) or (
            kinds is ACT_TYPES and user.op == "call_function" and user.target in ACT_FUNCTIONS
        )
        if is_kind:
            node = user
    return node


def _channels(gm: fx.GraphModule, node: fx.Node) -> int:
    """The channels of ``node``'s output, read off the nearest conv or norm at or above it (layers in
    between keep the channels: activations, pools, dropout; a concatenation along the channels sums
    its inputs', as SqueezeNet's fire modules and DenseNet's blocks)."""
    found = _channels_at(dict(gm.named_modules()), node)
    if found is None:
        raise ConfigError(
            f"cannot tell how many channels the downsampling site after '{node.name}' sees: no conv or norm layer "
            "leads to it. Convert this network by hand, or report it with the network's name."
        )
    return found


def _channels_at(modules: dict, node: fx.Node) -> int | None:
    while node is not None:
        module = modules.get(node.target) if node.op == "call_module" else None
        for attr in ("out_channels", "num_features", "num_channels"):
            if isinstance(getattr(module, attr, None), int):
                return getattr(module, attr)
        if node.op == "call_function" and node.target is torch.cat and _cat_dim(node) == 1:
            parts = [_channels_at(modules, n) for n in node.args[0]]
            return None if None in parts else sum(parts)
        inputs = node.all_input_nodes
        node = inputs[0] if len(inputs) == 1 else None
    return None


def _cat_dim(node: fx.Node) -> int:
    return node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)


def _insert_after(gm: fx.GraphModule, node: fx.Node, name: str, module: nn.Module) -> None:
    gm.add_submodule(name, module)
    with gm.graph.inserting_after(node):
        new = gm.graph.call_module(name, (node,))
    node.replace_all_uses_with(new, delete_user_cb=lambda user: user is not new)


def _insert_before(gm: fx.GraphModule, node: fx.Node, name: str, module: nn.Module) -> None:
    source = node.args[0]
    gm.add_submodule(name, module)
    with gm.graph.inserting_before(node):
        new = gm.graph.call_module(name, (source,))
    node.replace_input_with(source, new)
