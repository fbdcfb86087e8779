"""MoVAModel: the whole network as one module tree, and its per-batch tensor maths.

Grouping requests, caching and routing decisions live in ``engine.py``; this file only computes.
Submodule names (``base_encoder``, ``experts.<name>``, ``adapter``, ``language_model``) are our
checkpoint layout; ``checkpoint.py`` maps the released names onto them.
"""

import torch
from torch import nn

from .adapter import AdapterOutput, MoVAdapter
from .alignment import align_to_grid
from .base_encoder import ClipBaseEncoder
from .config import MoVAConfig
from .device_map import execution_device
from .experts import get_expert
from .language_model import build_language_model


class MoVAModel(nn.Module):
    """CLIP base encoder + vision experts + MoV-Adapter + Llama."""

    def __init__(self, config: MoVAConfig, *, attn_implementation: str = "sdpa") -> None:
        super().__init__()
        self.config = config
        self.base_encoder = ClipBaseEncoder(config.base_encoder)
        self.experts = nn.ModuleDict(
            {name: get_expert(name).network_class()(config.expert_config(name)) for name in config.enabled_experts}
        )
        self.adapter = MoVAdapter(
            config.adapter,
            in_channels=config.base_encoder["hidden_size"],
            llm_hidden_size=config.text["hidden_size"],
            expert_channels=[expert.out_channels for expert in self.experts.values()],
        )
        # NOTE: "flash_attention_2" exists for the LLM only; the adapter then uses SDPA.
        self.adapter.set_attn_implementation("eager" if attn_implementation == "eager" else "sdpa")
        self.language_model = build_language_model(config.text, attn_implementation=attn_implementation)

    @property
    def dtype(self) -> torch.dtype:
        return self.adapter.pos_embed.dtype

    @property
    def device(self) -> torch.device:
        return self.adapter.pos_embed.device

    def reset_buffers(self, device: torch.device | str) -> None:
        """Re-create the non-persistent buffers a meta-device build leaves empty."""
        self.base_encoder.reset_buffers(device)
        for expert in self.experts.values():
            expert.reset_buffers(device)
        self.adapter.reset_buffers(device)
        rotary = self.language_model.model.rotary_emb
        with torch.device(device):  # HF computes inv_freq in float32 in the constructor
            self.language_model.model.rotary_emb = type(rotary)(rotary.config)

    # --- vision --------------------------------------------------------------------------------------
    def _input_for(self, module: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
        # The first floating-point parameter: quantized Linears hold int8 / packed uint8 weights.
        dtype = next(p.dtype for p in module.parameters() if p.is_floating_point())
        return pixel_values.to(device=execution_device(module), dtype=dtype)

    @torch.inference_mode()
    def encode_base(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) CLIP-normalised -> (B, N, C) base tokens, N = grid_size**2."""
        return self.base_encoder(self._input_for(self.base_encoder, pixel_values))

    @torch.inference_mode()
    def encode_expert(self, name: str, pixel_values: torch.Tensor) -> torch.Tensor:
        """Run one expert on its inputs -> (B, N, C_e) tokens aligned to the base grid."""
        expert = self.experts[name]
        feature_map = expert(self._input_for(expert, pixel_values))
        return align_to_grid(feature_map, self.config.adapter.grid_size)

    @torch.inference_mode()
    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """BERT [CLS] feature of the question, (B, D)."""
        device = self.adapter.pos_embed.device
        return self.adapter.encode_text(input_ids.to(device), attention_mask.to(device))

    @torch.inference_mode()
    def fuse(
        self,
        base_features: torch.Tensor,
        expert_features: dict[str, torch.Tensor],
        routing_mask: torch.Tensor,
        text_features: torch.Tensor,
    ) -> AdapterOutput:
        """MoV-Adapter -> (B, num_tokens, W) image tokens for the LLM, and the per-block gate weights.

        Args:
            base_features: (B, N, C).
            expert_features: name -> (B_e, N, C_e), rows of the items whose mask bit is set, in batch order.
            routing_mask: (B, E) {0, 1} over the enabled experts in registry order.
            text_features: (B, D).
        """
        device = self.device  # features may come from experts on other devices (device maps)
        names = list(self.experts)
        by_position = {names.index(name): features.to(device) for name, features in expert_features.items()}
        return self.adapter.forward_with_gates(
            base_features.to(device), by_position, routing_mask.to(device), text_features.to(device)
        )

    def pool_for_routing(self, image_tokens: torch.Tensor) -> torch.Tensor:
        return self.adapter.pool_for_routing(image_tokens)


__all__ = ["MoVAModel"]
