"""The RegNet stage of the MoV-Adapter's downsampler, written to match timm's module names.

MoVA builds ``timm.models.regnet.RegStage(depth=1, in_chs=C, out_chs=C, stride=1, dilation=1,
linear_out=True, act_layer=SiLU, norm_layer=LayerNorm2d)``: one ``Bottleneck`` named ``b1`` with a
bottleneck ratio of 1, group size 1 (so the 3x3 conv is depthwise), squeeze-excitation at ratio 0.25
of the input width, and an identity shortcut. Only that configuration is implemented here; the
parameter names (``b1.conv1.conv``, ``b1.conv1.bn``, ``b1.se.fc1``, ...) are timm's, so the released
weights load without renames.
"""

import torch
from torch import nn

from .norms import LayerNormAct2d


class ConvNormAct(nn.Module):
    """A bias-free conv followed by channel LayerNorm and an optional SiLU (timm ``ConvNormAct``)."""

    def __init__(self, channels: int, kernel_size: int, *, groups: int = 1, eps: float, act: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=groups, bias=False)
        # NOTE: the attribute is called ``bn`` in timm although it is a LayerNorm (checkpoint name).
        self.bn = LayerNormAct2d(channels, eps=eps, act=nn.SiLU() if act else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class SqueezeExcite(nn.Module):
    """Channel gating: ``x * sigmoid(fc2(silu(fc1(mean_hw(x)))))`` with 1x1 convs (timm ``SEModule``)."""

    def __init__(self, channels: int, reduced_channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced_channels, 1)
        self.act = nn.SiLU()
        self.fc2 = nn.Conv2d(reduced_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)  # (B, C, 1, 1)
        return x * self.fc2(self.act(self.fc1(scale))).sigmoid()


class Bottleneck(nn.Module):
    """RegNet bottleneck with an identity shortcut and no final activation (``linear_out=True``)."""

    def __init__(self, channels: int, *, se_ratio: float, eps: float) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(channels, 1, eps=eps, act=True)
        self.conv2 = ConvNormAct(channels, 3, groups=channels, eps=eps, act=True)  # depthwise 3x3
        # NOTE: timm sizes the SE bottleneck from the block's *input* width.
        self.se = SqueezeExcite(channels, int(round(channels * se_ratio)))
        self.conv3 = ConvNormAct(channels, 1, eps=eps, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, C, H, W)."""
        return x + self.conv3(self.se(self.conv2(self.conv1(x))))


class RegStage(nn.Module):
    """``depth`` bottlenecks named ``b1``, ``b2``, ... at constant width and stride 1.

    Args:
        channels: input and output width.
        depth: number of bottleneck blocks (MoVA uses 1).
        se_ratio: squeeze-excitation width as a fraction of ``channels``.
        eps: eps of every channel LayerNorm. NOTE: MoVA asks for its own LayerNorm2d (eps 1e-6), but
            timm replaces it by name with ``LayerNormAct2d`` whose default eps (1e-5) is what ran.
    """

    def __init__(self, channels: int, *, depth: int = 1, se_ratio: float = 0.25, eps: float = 1e-5) -> None:
        super().__init__()
        for index in range(depth):
            self.add_module(f"b{index + 1}", Bottleneck(channels, se_ratio=se_ratio, eps=eps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, C, H, W)."""
        for block in self.children():
            x = block(x)
        return x


__all__ = ["Bottleneck", "ConvNormAct", "RegStage", "SqueezeExcite"]
