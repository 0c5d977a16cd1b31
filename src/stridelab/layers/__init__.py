"""Small single-purpose building blocks, in the spirit of ``timm.layers``.

One padding vocabulary (``nn.Conv2d``'s ``padding_mode``: zeros, reflect, replicate, circular) is
used by every padded operation: convolutions, pools and blur filters alike.
"""

from stridelab.layers.blur import BlurPool2d, binomial_filter
from stridelab.layers.conv import ConvKit
from stridelab.layers.downsample import (
    DOWNSAMPLE_REGISTRY,
    Downsample,
    create_downsample,
)
from stridelab.layers.fourier import ASAPPool2d, FLCPool2d
from stridelab.layers.padding import (
    PADDING_AMOUNTS,
    PADDING_MODES,
    Pad2d,
    PaddingSpec,
    pad_amounts,
)

__all__ = [
    "ASAPPool2d",
    "FLCPool2d",
    "BlurPool2d",
    "binomial_filter",
    "ConvKit",
    "DOWNSAMPLE_REGISTRY",
    "Downsample",
    "create_downsample",
    "PADDING_AMOUNTS",
    "PADDING_MODES",
    "Pad2d",
    "PaddingSpec",
    "pad_amounts",
]
