"""The always-on base encoder: CLIP ViT-L/14-336 run at the MoVA resolution (upstream ``vision_tower_0``).

This wraps Hugging Face ``CLIPVisionModel``. The release stores the position table already resized to the
MoVA grid (2305 rows for 48 x 48 patches + CLS), so the HF module is built at ``image_size = grid * patch``
and loads that table as stored; nothing is re-interpolated. Only the layers up to the selected hidden state
are run, but every layer's parameters are kept so the checkpoint loads strictly.
"""

from typing import Any

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel

from .errors import ConfigError, InputError
from .layers.hf_attention import NATIVE_SOFTMAX


class ClipBaseEncoder(nn.Module):
    """CLIP vision tower returning the patch tokens of one hidden state (upstream ``CLIPVisionTower``).

    Args:
        config: ``MoVAConfig.base_encoder``: HF ``CLIPVisionConfig`` kwargs plus ``select_layer``, the index
            into HF's ``hidden_states`` tuple (0 = embeddings after ``pre_layrnorm``, i = output of layer i).
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        kwargs = dict(config)
        if "select_layer" not in kwargs:
            raise ConfigError("base_encoder config needs 'select_layer' (upstream mm_vision_select_layer, e.g. -2)")
        select_layer = kwargs.pop("select_layer")
        # NOTE: the reference runs CLIP with 4.37's eager attention (softmax in the activations' dtype).
        kwargs.setdefault("attn_implementation", NATIVE_SOFTMAX)
        hf_config = CLIPVisionConfig(**kwargs)
        num_layers = hf_config.num_hidden_layers
        if not -(num_layers + 1) <= select_layer <= num_layers:
            raise ConfigError(f"select_layer {select_layer} is outside [-{num_layers + 1}, {num_layers}]")
        # hidden_states has num_layers + 1 entries, so this is the number of encoder layers to run.
        self.num_layers_used = select_layer % (num_layers + 1)
        self.select_layer = select_layer
        self.image_size = hf_config.image_size
        self.grid_size = hf_config.image_size // hf_config.patch_size
        # NOTE: the attribute name reproduces the released prefix `vision_tower_0.vision_model.` (transformers
        # 4.37 nested CLIPVisionTransformer there; in 5.x CLIPVisionModel itself has the same children).
        self.vision_model = CLIPVisionModel(hf_config)

    @property
    def hidden_size(self) -> int:
        return self.vision_model.config.hidden_size

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Patch tokens of the selected hidden state.

        Args:
            pixel_values: (B, 3, S, S) float, CLIP-normalised, S = ``image_size``.

        Returns:
            (B, grid**2, C) tokens in row-major patch order; CLS dropped, no ``post_layernorm``.
        """
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (3, self.image_size, self.image_size):
            raise InputError(
                f"base encoder expects pixel_values of shape (B, 3, {self.image_size}, {self.image_size}), "
                f"got {tuple(pixel_values.shape)}"
            )
        model = self.vision_model
        hidden_states = model.pre_layrnorm(model.embeddings(pixel_values))  # (B, 1 + grid**2, C)
        # The layers after the selected one only feed post_layernorm/pooling, which MoVA never reads.
        for layer in model.encoder.layers[: self.num_layers_used]:
            hidden_states = layer(hidden_states, None)
        return hidden_states[:, 1:]

    def reset_buffers(self, device: torch.device | str) -> None:
        """Recreate the non-persistent ``position_ids`` buffer (left on meta by a meta-device build)."""
        embeddings = self.vision_model.embeddings
        embeddings.position_ids = torch.arange(embeddings.num_positions, device=device).expand((1, -1))


__all__ = ["ClipBaseEncoder"]
