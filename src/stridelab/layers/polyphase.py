"""Polyphase downsampling: adaptive (APS) and learnable (LPS) choice of the stride-2 grid.

A stride-2 subsampling keeps one of the four polyphase components ``x[:, :, i::2, j::2]``
(``i, j`` in {0, 1}); plain striding always keeps (0, 0), so a one-pixel shift of the input changes
which pixels survive. Choosing the component from the data makes the choice move with the content:

* APS (Chaman & Dokmanic, "Truly shift-invariant convolutional neural networks", CVPR 2021, Sec. 3):
  per sample, the component of largest norm over C x H x W (``l2``; ``l1`` and ``linf`` too).
* LPS (Rojas-Gomez et al., "Learnable Polyphase Sampling for Shift Invariant and Equivariant
  Convolutional Networks", NeurIPS 2022, Sec. 3): a small conv net, shared by the four components,
  gives each a logit; training mixes the components with Gumbel-softmax weights at an annealed
  temperature, evaluation takes the arg-max component.

With circularly padded stride-1 layers before it, either choice gives an output that is a circular
shift of the unshifted input's output, for *every* integer shift, so a network built from them and a
global pool is exactly shift invariant (at evaluation for LPS).

A residual shortcut must subsample its input on the *same* grid as its block's main branch, or the
two are added out of register. :class:`PolyphaseTie` carries the main branch's choice to the
shortcut within one forward pass: the main branch's selector writes it, the shortcut's
:class:`TiedPolyphase` reads it (and refuses to run without it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from stridelab.errors import ConfigError, choose
from stridelab.layers.padding import F_PAD_MODE

POLYPHASE_NORMS = {"l2": 2, "l1": 1, "linf": math.inf}
ANNEAL_SCHEDULES = ("exp", "linear", "constant")


def pad_to_even(x: torch.Tensor, mode: str) -> torch.Tensor:
    """One row / column after an odd-sized map, with the padding mode (partial pads zeros)."""
    h, w = x.shape[-2:]
    if not (h % 2 or w % 2):
        return x
    return F.pad(x, (0, w % 2, 0, h % 2), mode=F_PAD_MODE[mode])


def polyphase_components(x: torch.Tensor) -> torch.Tensor:
    """(B, C, 2h, 2w) -> (B, 4, C, h, w); component ``2 * i + j`` is ``x[:, :, i::2, j::2]``."""
    b, c, h, w = x.shape
    return x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 3, 5, 1, 2, 4).reshape(b, 4, c, h // 2, w // 2)


def take_component(components: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Per sample the component ``index[b]`` of (B, 4, C, h, w)."""
    return components[torch.arange(components.shape[0], device=components.device), index]


@dataclass
class Choice:
    """What a selector chose for one batch: the component per sample, or (LPS in training) weights."""

    index: torch.Tensor | None = None  # (B,) long
    weights: torch.Tensor | None = None  # (B, 4) summing to 1

    def apply(self, components: torch.Tensor) -> torch.Tensor:
        if self.weights is not None:
            return (self.weights.to(components.dtype)[:, :, None, None, None] * components).sum(1)
        return take_component(components, self.index)


class PolyphaseTie:
    """Hands a block's main-branch choice to its shortcut within one forward pass.

    A plain object, not a module: it holds no parameters and must not be registered twice.
    """

    def __init__(self) -> None:
        self.choice: Choice | None = None

    def put(self, choice: Choice) -> None:
        self.choice = choice

    def take(self) -> Choice:
        if self.choice is None:
            raise RuntimeError(
                "a tied polyphase shortcut ran before its block's main branch chose a grid: call "
                "the main branch first (BasicBlock does), or build the shortcut untied"
            )
        choice, self.choice = self.choice, None
        return choice


class PolyphaseSelect(nn.Module):
    """Base of APS and LPS: pad an odd map, split it into its four components, keep one per sample.

    ``stride`` (always 2) is an attribute so geometry checks see a downsampling layer.
    """

    stride = 2

    def __init__(self, pad_mode: str = "zeros", tie: PolyphaseTie | None = None) -> None:
        super().__init__()
        self.pad_mode = pad_mode
        self.tie = tie

    def choose(self, components: torch.Tensor) -> Choice:
        raise NotImplementedError

    def before_subsampling(self, x: torch.Tensor) -> torch.Tensor:
        """The map one of whose components is kept: the input itself (no filter in between)."""
        return x

    def forward(self, x):
        components = polyphase_components(pad_to_even(x, self.pad_mode))
        choice = self.choose(components)
        if self.tie is not None:
            self.tie.put(choice)
        return choice.apply(components)


class AdaptivePolyphase(PolyphaseSelect):
    """APS: per sample, the component with the largest ``norm`` (Chaman & Dokmanic 2021, Eq. 5)."""

    def __init__(self, norm: str = "l2", pad_mode: str = "zeros", tie: PolyphaseTie | None = None) -> None:
        super().__init__(pad_mode, tie)
        choose("downsample.norm", norm, POLYPHASE_NORMS)
        self.norm = norm

    def choose(self, components):
        # fp32 norms: under bf16 autocast near-equal norms would tie and break the arg-max's invariance
        norms = torch.linalg.vector_norm(components.detach().float(), POLYPHASE_NORMS[self.norm], dim=(2, 3, 4))
        return Choice(index=norms.argmax(1))

    def extra_repr(self) -> str:
        return f"norm={self.norm!r}, pad_mode={self.pad_mode!r}, tied={self.tie is not None}"


class ComponentScorer(nn.Module):
    """LPS's logit network, shared by the four components: conv3x3 -> ReLU -> conv3x3, then the mean
    over channels and positions, one logit per component (the structure of the authors' default
    logit layers). Equivariant convs and a mean keep the logits permutation-exact under circular
    shifts, which the invariance of the arg-max needs."""

    def __init__(self, conv1: nn.Module, conv2: nn.Module) -> None:
        super().__init__()
        self.conv1 = conv1
        self.act = nn.ReLU()
        self.conv2 = conv2

    def forward(self, components):
        b, k = components.shape[:2]
        z = self.conv2(self.act(self.conv1(components.flatten(0, 1))))
        return z.mean(dim=(1, 2, 3)).view(b, k)


class LearnablePolyphase(PolyphaseSelect):
    """LPS: Gumbel-softmax mixture of the components in training, arg-max logit at evaluation.

    The temperature lives in a buffer (``tau``), set from the training progress by
    :meth:`set_training_progress`: ``exp`` goes geometrically from ``tau_start`` to ``tau_end``,
    ``linear`` linearly, ``constant`` stays at ``tau_start``.
    """

    def __init__(
        self,
        scorer: ComponentScorer,
        tau_start: float = 1.0,
        tau_end: float = 0.1,
        anneal: str = "exp",
        pad_mode: str = "zeros",
        tie: PolyphaseTie | None = None,
    ) -> None:
        super().__init__(pad_mode, tie)
        self.scorer = scorer
        self.tau_start, self.tau_end, self.anneal = float(tau_start), float(tau_end), anneal
        self.register_buffer("tau", torch.tensor(self.tau_start), persistent=False)

    def temperature(self, progress: float) -> float:
        p = min(max(float(progress), 0.0), 1.0)
        if self.anneal == "exp":
            return self.tau_start * (self.tau_end / self.tau_start) ** p
        if self.anneal == "linear":
            return self.tau_start + (self.tau_end - self.tau_start) * p
        return self.tau_start

    def set_training_progress(self, progress: float) -> None:
        """Called by the training loop before each step with the fraction of steps done."""
        self.tau.fill_(self.temperature(progress))

    def choose(self, components):
        logits = self.scorer(components).float()
        if self.training:
            return Choice(weights=F.gumbel_softmax(logits, tau=self.tau, hard=False, dim=1))
        return Choice(index=logits.argmax(1))

    def extra_repr(self) -> str:
        return (
            f"tau={self.tau_start}->{self.tau_end} ({self.anneal}), pad_mode={self.pad_mode!r}, "
            f"tied={self.tie is not None}"
        )


class TiedPolyphase(nn.Module):
    """A shortcut's subsampling on the grid its block's main branch chose (same index, or in LPS
    training the same weights)."""

    stride = 2

    def __init__(self, tie: PolyphaseTie, pad_mode: str = "zeros") -> None:
        super().__init__()
        self.pad_mode = pad_mode
        self.tie = tie

    def before_subsampling(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward(self, x):
        return self.tie.take().apply(polyphase_components(pad_to_even(x, self.pad_mode)))

    def extra_repr(self) -> str:
        return "grid=main branch's choice"


def check_temperatures(tau_start: float, tau_end: float, anneal: str) -> None:
    choose("downsample.anneal", anneal, ANNEAL_SCHEDULES)
    if not (tau_start > 0 and tau_end > 0):
        raise ConfigError(
            f"downsample.tau_start and downsample.tau_end must be > 0 (got {tau_start}, {tau_end}): "
            "the Gumbel-softmax temperature divides the logits. Typical: 1.0 -> 0.1."
        )
