"""The MoV-Adapter: fuses the routed experts' features into the base CLIP tokens for the LLM.

This corresponds to ``MoVAdapter`` / ``AdapterBlock`` / ``Attention`` in MoVA's
``mova/model/multimodal_projector/builder.py`` (paper: "MoVA: Adapting Mixture of Vision Experts to
Multimodal Context", arXiv 2404.13046). Module and parameter names match the release's
``model.mm_projector.*`` keys, so loading is a prefix rename.

Data flow for a batch of B items on a ``grid x grid`` token grid (N = grid**2 tokens):

1. ``x = base + pos_embed``; the BERT [CLS] feature of the question feeds each block's gate.
2. Each block: gate -> softmax over the routed experts -> top-k -> per-expert cross-attention from the
   base tokens to that expert's tokens, weighted and summed -> self-attention -> SwiGLU.
3. ``(x + base) / 2`` -> RegStage -> 2x2 average pool -> RegStage -> two-layer MLP to the LLM width.

Unlike the release, which only skips an unrouted expert's cross-attention at batch size 1, the
cross-attention of expert e runs here only on the rows whose routing bit for e is 1, at every batch
size. The result equals the release's batch > 1 computation (all rows, weight 0) exactly.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertModel

from .config import AdapterConfig
from .errors import ConfigError, InputError
from .layers.mlp import SwiGLU
from .layers.regstage import RegStage
from .layers.rope import VisionRotaryEmbedding

# The release adds this to the gate logits of unrouted experts; exp() of it underflows to exactly 0.
MASKED_LOGIT_OFFSET = -1e6


@dataclass
class AdapterOutput:
    """What one adapter forward produces.

    Attributes:
        image_features: (B, num_tokens, llm_hidden_size) tokens for the LLM.
        gate_weights: one (B, E) float32 tensor per block: the expert weights applied in that block,
            after masking, top-k and renormalisation; all zeros for an item that routed to no expert.
    """

    image_features: torch.Tensor
    gate_weights: tuple[torch.Tensor, ...]


class AdapterAttention(nn.Module):
    """Multi-head attention from query tokens to key/value tokens on the same grid, with 2-D RoPE.

    Used for both the per-expert cross-attention and the self-attention of an adapter block
    (upstream ``Attention`` with ``subln=True``, ``qkv_bias=False``).

    Args:
        dim: width of the query tokens and of the output.
        value_dim: width of the key/value tokens.
        num_heads: attention heads; ``dim`` must divide evenly.
        grid_size: side of the token grid both inputs live on (the RoPE table covers grid_size**2 tokens).
        eps: eps of ``inner_attn_ln``.
        rope_theta: RoPE base.
    """

    attn_implementation: str = "eager"  # "eager" (the release's arithmetic) or "sdpa"; see MoVAdapter

    def __init__(
        self, dim: int, value_dim: int, *, num_heads: int, grid_size: int, eps: float, rope_theta: float
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"adapter width {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(value_dim, dim, bias=False)
        self.v_proj = nn.Linear(value_dim, dim, bias=False)
        self.inner_attn_ln = nn.LayerNorm(dim, eps=eps)
        self.proj = nn.Linear(dim, dim)
        # Half the head dim rotates with the row index, the other half with the column index.
        self.rope = VisionRotaryEmbedding(self.head_dim // 2, grid_size, grid_size, theta=rope_theta)

    def forward(self, x: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """x: (B, N, dim) queries, value: (B, N, value_dim) keys/values -> (B, N, dim)."""
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # (B, h, N, d)
        k = self.k_proj(value).view(b, value.shape[1], self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(value).view(b, value.shape[1], self.num_heads, self.head_dim).transpose(1, 2)
        q = self.rope(q).to(v.dtype)
        k = self.rope(k).to(v.dtype)
        # NOTE: the release scales q after RoPE and runs softmax in the tensor's dtype (bf16): "eager"
        # reproduces that; "sdpa" is the fused kernel (same maths, float32 softmax, far less memory).
        q = q * self.scale
        if self.attn_implementation == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v, scale=1.0)
        else:
            out = (q @ k.transpose(-2, -1)).softmax(dim=-1) @ v  # (B, h, N, d)
        out = out.transpose(1, 2).reshape(b, n, -1)  # (B, N, dim)
        return self.proj(self.inner_attn_ln(out))


class AdapterBlock(nn.Module):
    """One MoV-Adapter block: gated expert cross-attention, then self-attention and SwiGLU.

    Args:
        dim: base token width (CLIP hidden size).
        expert_channels: channel count of each enabled expert, in registry order.
        text_dim: width of the question feature fed to the gate.
        config: the adapter config (heads, SwiGLU width, top-k, eps, grid).
    """

    def __init__(self, dim: int, expert_channels: Sequence[int], *, text_dim: int, config: AdapterConfig) -> None:
        super().__init__()
        self.num_experts = len(expert_channels)
        self.top_k = min(config.top_k, self.num_experts)
        eps = config.layer_norm_eps

        def attention(value_dim: int) -> AdapterAttention:
            return AdapterAttention(
                dim,
                value_dim,
                num_heads=config.num_heads,
                grid_size=config.grid_size,
                eps=eps,
                rope_theta=config.rope_theta,
            )

        # Registration order follows the release, so state_dict() lists keys in the checkpoint's order.
        self.cross_attn = nn.ModuleList(attention(c) for c in expert_channels)
        self.norm1 = nn.ModuleList(nn.LayerNorm(dim, eps=eps) for _ in expert_channels)  # on the queries
        self.norm2 = nn.ModuleList(nn.LayerNorm(c, eps=eps) for c in expert_channels)  # on the expert tokens
        self.mlp = SwiGLU(dim, config.mlp_hidden_size, dim, eps=eps)
        self.self_attn = attention(dim)
        self.norm3 = nn.LayerNorm(dim, eps=eps)
        self.norm4 = nn.LayerNorm(dim, eps=eps)
        self.gate = nn.Sequential(nn.Linear(text_dim + dim, dim), nn.GELU(), nn.Linear(dim, self.num_experts))

    def gate_weights(self, x: torch.Tensor, text_features: torch.Tensor, routing_mask: torch.Tensor) -> torch.Tensor:
        """Expert weights of this block, following the release's arithmetic.

        Args:
            x: (B, N, C) tokens entering the block.
            text_features: (B, D) question feature, in x's dtype.
            routing_mask: (B, E) float32 {0, 1}.

        Returns:
            (B, E) float32: softmax over the routed experts' logits, zeroed outside the top-k and
            renormalised, then multiplied by 0 for items that routed to no expert.
        """
        logits = self.gate(torch.cat([text_features, x.mean(dim=1)], dim=-1))  # (B, E), x's dtype
        weights = torch.softmax(logits.float() + (1 - routing_mask) * MASKED_LOGIT_OFFSET, dim=-1)
        top = weights.topk(self.top_k, dim=-1).indices  # (B, k)
        weights = weights * torch.zeros_like(weights).scatter_(1, top, 1.0)
        weights = weights / weights.sum(dim=1, keepdim=True)
        # NOTE: with no expert routed the softmax is still a valid distribution (the offset cancels);
        # the release multiplies the fused sum by this "binary weight" instead. Folding the 0/1 factor
        # into the weights is exact and keeps the reported weights honest.
        routed_any = (routing_mask.mean(dim=1) > 0).float()  # (B,)
        return weights * routed_any[:, None]

    def forward(
        self,
        x: torch.Tensor,
        expert_inputs: dict[int, tuple[torch.Tensor, torch.Tensor]],
        text_features: torch.Tensor,
        routing_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the block.

        Args:
            x: (B, N, C) tokens.
            expert_inputs: expert position e -> (rows, features): the int64 indices of the items whose
                bit for e is 1 and their (len(rows), N, C_e) expert tokens. Experts absent here are
                not run.
            text_features: (B, D) in x's dtype.
            routing_mask: (B, E) float32 {0, 1}.

        Returns:
            The (B, N, C) output tokens and the (B, E) float32 gate weights.
        """
        weights = self.gate_weights(x, text_features, routing_mask)
        applied = weights.to(x.dtype)
        # NOTE: the release stacks the weighted expert outputs and sums them over the expert axis; a
        # bf16 sum accumulates in float32 and rounds once. We accumulate in float32 too, adding the
        # experts in registry order, so the float32 result is bit-identical to the release's
        # all-rows computation (its unrouted terms are exact zeros).
        fused = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        for e in sorted(expert_inputs):
            rows, features = expert_inputs[e]
            queries = x.index_select(0, rows)
            h = self.cross_attn[e](self.norm1[e](queries), self.norm2[e](features))  # (len(rows), N, C)
            fused.index_add_(0, rows, (h * applied.index_select(0, rows)[:, e, None, None]).float())
        x = x + fused.to(x.dtype)
        h = self.norm3(x)
        x = x + self.self_attn(h, h)
        x = x + self.mlp(self.norm4(x))
        return x, weights


class MoVAdapter(nn.Module):
    """The MoV-Adapter (``model.mm_projector`` in the release).

    Args:
        config: the adapter config.
        in_channels: width of the base (CLIP) tokens; 1024 in the release.
        llm_hidden_size: width of the LLM's embeddings; 4096 in the release.
        expert_channels: channel count of each enabled expert, in registry order.
    """

    def __init__(
        self,
        config: AdapterConfig,
        *,
        in_channels: int,
        llm_hidden_size: int,
        expert_channels: Sequence[int],
    ) -> None:
        super().__init__()
        if not expert_channels:
            raise ConfigError("the MoV-Adapter needs at least one enabled expert")
        self.config = config
        self.in_channels = in_channels
        self.expert_channels = list(expert_channels)
        bert_config = BertConfig(**config.text_encoder)
        bert_config._attn_implementation = "eager"  # the release ran BERT with eager attention
        grid = config.grid_size

        # Registration order follows the release, so state_dict() lists keys in the checkpoint's order.
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid, in_channels))
        self.blocks = nn.ModuleList(
            AdapterBlock(in_channels, self.expert_channels, text_dim=bert_config.hidden_size, config=config)
            for _ in range(config.num_layers)
        )
        self.mlp = nn.Sequential(
            nn.Linear(in_channels, llm_hidden_size), nn.GELU(), nn.Linear(llm_hidden_size, llm_hidden_size)
        )
        # NOTE: upstream keeps a BertLMHeadModel whose ``cls`` head is replaced by Identity and calls
        # its ``.bert``; the container keeps the checkpoint's ``text_encoder.bert.`` prefix.
        self.text_encoder = nn.ModuleDict({"bert": BertModel(bert_config, add_pooling_layer=False)})
        stage = {"se_ratio": config.se_ratio, "eps": config.downsample_norm_eps}
        self.downsample = nn.Sequential(
            RegStage(in_channels, **stage),
            nn.AdaptiveAvgPool2d((grid // 2, grid // 2)),  # exactly 2x2 mean pooling on an even grid
            RegStage(in_channels, **stage),
        )

    @property
    def num_experts(self) -> int:
        return len(self.expert_channels)

    @property
    def num_tokens(self) -> int:
        """Image tokens per item in the answer pass."""
        return self.config.num_tokens

    def set_attn_implementation(self, name: str) -> None:
        """``"sdpa"`` (fused, the default for inference) or ``"eager"`` (the release's exact arithmetic)."""
        if name not in ("sdpa", "eager"):
            raise ConfigError(f"adapter attention {name!r}; known: 'sdpa', 'eager'")
        for module in self.modules():
            if isinstance(module, AdapterAttention):
                module.attn_implementation = name

    def reset_buffers(self, device: torch.device | str) -> None:
        """Recreate BERT's non-persistent buffers (``position_ids``, ``token_type_ids``) after a meta build."""
        embeddings = self.text_encoder["bert"].embeddings
        length = embeddings.position_embeddings.num_embeddings
        position_ids = torch.arange(length, device=device).expand(1, -1)
        embeddings.register_buffer("position_ids", position_ids, persistent=False)
        embeddings.register_buffer("token_type_ids", torch.zeros_like(position_ids), persistent=False)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The question feature: BERT's last hidden state at [CLS].

        Args:
            input_ids: (B, T) BERT token ids (``question 0: <question>\\n\\n``, see processing).
            attention_mask: (B, T) 1 for real tokens.

        Returns:
            (B, D_text) in the encoder's dtype. ``token_type_ids`` are left to BERT (zeros), as upstream.
        """
        output = self.text_encoder["bert"](input_ids=input_ids, attention_mask=attention_mask)
        return output.last_hidden_state[:, 0]

    def forward(
        self,
        base_features: torch.Tensor,
        expert_features: dict[int, torch.Tensor],
        routing_mask: torch.Tensor,
        text_features: torch.Tensor,
    ) -> torch.Tensor:
        """Fuse and project; see ``forward_with_gates`` for the arguments.

        Returns:
            (B, num_tokens, llm_hidden_size) image tokens.
        """
        return self.forward_with_gates(base_features, expert_features, routing_mask, text_features).image_features

    def forward_with_gates(
        self,
        base_features: torch.Tensor,
        expert_features: dict[int, torch.Tensor],
        routing_mask: torch.Tensor,
        text_features: torch.Tensor,
    ) -> AdapterOutput:
        """Fuse the routed experts into the base tokens and project them to the LLM width.

        Args:
            base_features: (B, N, C) CLIP tokens, N = grid_size**2, row-major.
            expert_features: expert position e (registry order among the enabled experts) ->
                (B_e, N, C_e) tokens of the items whose routing bit for e is 1, in batch order.
                Experts no item routed to may be left out and are not run.
            routing_mask: (B, E) {0, 1}.
            text_features: (B, D_text) question features from ``encode_text``.

        Returns:
            The image tokens and the per-block gate weights.

        Raises:
            InputError: on a shape mismatch, or when an expert's features do not match its mask bits.
        """
        b, n, c = base_features.shape
        grid_tokens = self.config.grid_size**2
        if n != grid_tokens or c != self.in_channels:
            raise InputError(
                f"base features must be (B, {grid_tokens}, {self.in_channels}), got {tuple(base_features.shape)}"
            )
        if routing_mask.shape != (b, self.num_experts):
            raise InputError(f"routing_mask must be ({b}, {self.num_experts}), got {tuple(routing_mask.shape)}")
        if text_features.shape[0] != b:
            raise InputError(f"text_features has {text_features.shape[0]} rows for a batch of {b}")
        routing_mask = routing_mask.float()
        expert_inputs = self._expert_inputs(expert_features, routing_mask, n)
        text_features = text_features.to(base_features.dtype)

        x = base_features + self.pos_embed
        gate_weights = []
        for block in self.blocks:
            x, weights = block(x, expert_inputs, text_features, routing_mask)
            gate_weights.append(weights)

        # NOTE: the residual is the CLIP feature without pos_embed, as in the release.
        x = (x + base_features) / 2
        grid = self.config.grid_size
        # NOTE: (B, C, H, W) as a channels-last view, the strides of the reference's
        # rearrange(x, "b (h w) d -> b d h w"), so torch runs the same (channels-last) conv kernels;
        # transpose(1, 2).reshape gives an NCHW-kernel batch stride at batch 1 (6th-digit float32 drift).
        x = x.reshape(b, grid, grid, c).permute(0, 3, 1, 2)
        x = self.downsample(x)
        x = x.flatten(2).transpose(1, 2)  # (B, num_tokens, C)
        return AdapterOutput(image_features=self.mlp(x), gate_weights=tuple(gate_weights))

    def _expert_inputs(
        self, expert_features: dict[int, torch.Tensor], routing_mask: torch.Tensor, num_tokens: int
    ) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """Pair each routed expert's features with the batch rows they belong to, checking both agree."""
        unknown = sorted(set(expert_features) - set(range(self.num_experts)))
        if unknown:
            raise InputError(f"expert positions {unknown} out of range; the adapter has {self.num_experts} experts")
        inputs = {}
        for e, channels in enumerate(self.expert_channels):
            rows = routing_mask[:, e].nonzero().flatten()
            features = expert_features.get(e)
            if features is None:
                if len(rows):
                    raise InputError(f"{len(rows)} item(s) route to expert {e} but no features were given for it")
                continue
            if features.shape != (len(rows), num_tokens, channels):
                raise InputError(
                    f"expert {e} features must be ({len(rows)}, {num_tokens}, {channels}) for the items routed "
                    f"to it, got {tuple(features.shape)}"
                )
            if len(rows):
                inputs[e] = (rows, features)
        return inputs

    def pool_for_routing(self, tokens: torch.Tensor) -> torch.Tensor:
        """Average-pool image tokens for the routing pass (upstream ``has_routing``).

        Args:
            tokens: (B, num_tokens, W) adapter output on a square grid.

        Returns:
            (B, num_routing_tokens, W): the token grid mean-pooled to a sqrt(num_routing_tokens) square.
        """
        b, n, w = tokens.shape
        side = math.isqrt(n)
        if side * side != n:
            raise InputError(f"cannot pool {n} image tokens: not a square grid")
        out = math.isqrt(self.config.num_routing_tokens)
        grid = tokens.transpose(1, 2).reshape(b, w, side, side)  # (B, W, H, W) row-major
        return F.adaptive_avg_pool2d(grid, (out, out)).flatten(2).transpose(1, 2)


__all__ = ["AdapterAttention", "AdapterBlock", "AdapterOutput", "MoVAdapter"]
