"""TIPS: translation invariant polyphase sampling (Saha & Gokhale, WACV 2025).

S. Saha, T. Gokhale. "Improving Shift Invariance in Convolutional Neural Networks with Translation
Invariant Polyphase Sampling", WACV 2025; reference code sourajitcs/tips (``tips.py``, ``resnet.py``,
``train_test.py``, ``util.py``), read for the definitions.

Per sample and channel, the layer mixes the four polyphase components of a stride-2 subsampling with
learnt weights (a soft mixture in training and at evaluation alike; no arg-max):

    psi = ReLU(depthwise conv3x3(x))                       (no bias)
    q[c, a, b] = mean of psi[c] over quadrant (a, b)       (AdaptiveAvgPool2d(2))
    tau[c, :] = softmax_j(w_c * q[c, a_j, b_j])            (depthwise 1x1 conv: one weight per channel)
    y[c] = sum_j tau[c, j] * P_j(x)[c],  P = x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]

with quadrant j = 2a + b (row-major) paired with component j in that order, as the reference pairs
them. An odd map is first padded by one row on top and one column on the left, reflected.

Training terms (:mod:`stridelab.layers.objective`), as ``train_test.py`` and ``util.py`` combine them:

    loss = L_onehot + (1 - alpha) * CE + [epoch >= wake_up_epoch] * alpha * L_shift

* ``tips/shift`` (L_TI): per layer ``MSE(psi(x), roll(x, (dh, dw)))``, ``dh, dw`` uniform on
  ``{-m..m}``, one draw per forward for the whole batch, averaged over the TIPS layers with equal
  weights;
  ``wake_up_epoch`` defaults to the README's share of the run (epoch 100 of 480: epoch 4 of 20, 1 of 4);
* ``tips/onehot``: the mean over samples and channels of every TIPS layer of ``1 - ||tau||_2`` (0 for
  a one-hot mixture, 1/2 for a uniform one), weight 1, always on.

Deviations, said in docs/metrics.md: the shifted target is detached, as the paper's figure draws it
frozen (the code's ``x_t.detach()`` discards its result, so gradients flow into it there); ``m`` is
each layer's own map size // 4 (the code uses the network input's H // 4 at every depth, which on a
4x4 map wraps); a block's main-branch and shortcut terms are averaged as two layers (the code takes
one MSE over their concatenation); the depthwise conv is padded with the network's padding mode (the
code: zeros, which is our ``padding=zeros``); the onehot term's path crashes in the released code
(``TIPS.forward`` returns 3 values where 4 are unpacked) and is implemented as ``util.py`` defines it.
The layer is not exactly shift invariant (the quadrant means do not permute under a shift): its
circular consistency is measured, not guaranteed.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from stridelab.layers.objective import LossTerm
from stridelab.layers.padding import PaddingSpec

# The README's schedule turns the shift term on at epoch 100 of 480: the same share of a run when
# no wake-up epoch is given.
WAKE_UP_SHARE = 100 / 480


def wake_up_epoch_of(epochs: int | None) -> int:
    """The 1-based epoch from which the shift term counts in a run of ``epochs`` epochs, by default."""
    return max(1, round(WAKE_UP_SHARE * epochs)) if epochs and epochs > 0 else 1


class TIPS2d(nn.Module):
    """TIPS at stride 2 on ``channels`` channels; ``alpha`` and ``wake_up_epoch`` (1-based, as the
    reference counts; None: :func:`wake_up_epoch_of` the run's epochs) weigh its training terms."""

    stride = 2

    def __init__(
        self, channels: int, alpha: float = 0.35, wake_up_epoch: int | None = None, padding: PaddingSpec | None = None
    ) -> None:
        super().__init__()
        padding = padding or PaddingSpec("zeros")
        mode = "zeros" if padding.mode == "partial" else padding.mode
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False, padding_mode=mode)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 1, groups=channels, bias=False)
        for conv in (self.conv1, self.conv2):  # the reference ResNet's init of every conv
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        self.alpha, self.wake_up_epoch = float(alpha), None if wake_up_epoch is None else int(wake_up_epoch)
        self.classification_weight = 1.0 - self.alpha
        self.epoch, self.epochs = 0, None  # 0-based epoch and the run's epochs, set by the training loop
        self._terms: dict[str, LossTerm] = {}

    def set_training_epoch(self, epoch: int, epochs: int | None = None) -> None:
        self.epoch, self.epochs = int(epoch), epochs

    @property
    def awake_from(self) -> int:
        """The 1-based epoch from which the shift term counts."""
        return self.wake_up_epoch if self.wake_up_epoch is not None else wake_up_epoch_of(self.epochs)

    def loss_terms(self) -> dict[str, LossTerm]:
        terms, self._terms = self._terms, {}
        return terms

    def mixture(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(psi, tau)`` of an even-sized map: the features and the (B, C, 4) mixture weights."""
        psi = self.act(self.conv1(x))
        logits = self.conv2(F.adaptive_avg_pool2d(psi, 2))
        return psi, torch.softmax(logits.flatten(2).float(), dim=-1).to(x.dtype)

    def before_subsampling(self, x: torch.Tensor) -> torch.Tensor:
        return x  # the mixture weighs components of the input itself

    def forward(self, x):
        h, w = x.shape[-2:]
        if h % 2 or w % 2:
            x = F.pad(x, (w % 2, 0, h % 2, 0), mode="reflect")
        psi, tau = self.mixture(x)
        # component j pairs with quadrant j = 2a + b: (0,0), (1,0), (0,1), (1,1) offsets, as the reference
        parts = [x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 1::2]]
        components = torch.stack(parts, 2)
        y = (tau[..., None, None] * components).sum(2)
        if self.training and torch.is_grad_enabled():
            self._terms = self._training_terms(x, psi, tau)
        return y

    def _training_terms(self, x, psi, tau) -> dict[str, LossTerm]:
        m_h, m_w = x.shape[-2] // 4, x.shape[-1] // 4
        dh, dw = (int(torch.randint(-m, m + 1, ())) for m in (m_h, m_w))  # host draws: no device sync
        target = torch.roll(x, (dh, dw), dims=(-2, -1)).detach()
        awake = self.epoch + 1 >= self.awake_from
        onehot = (1 - torch.linalg.vector_norm(tau.float(), dim=-1)).sum()
        return {
            "tips/shift": LossTerm(F.mse_loss(psi.float(), target.float()), 1.0, self.alpha if awake else 0.0),
            "tips/onehot": LossTerm(onehot, float(tau.shape[0] * tau.shape[1]), 1.0),
        }

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, wake_up_epoch={self.wake_up_epoch}"
