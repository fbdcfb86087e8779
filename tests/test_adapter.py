"""MoV-Adapter: checkpoint names, attention and gate maths, sparse expert execution, RegStage, pooling."""

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from spec_rows import released_rows

from mova.adapter import AdapterAttention, MoVAdapter
from mova.config import MoVAConfig
from mova.errors import InputError
from mova.layers.regstage import RegStage

PREFIX = "model.mm_projector."
EXPERT_CHANNELS = [24, 16, 8, 12, 20]  # expert 3 is never routed in the sparse tests
BASE, LLM = 32, 40  # tiny CLIP width (tiny-random preset) and a tiny LLM width


def _randomize(module: torch.nn.Module, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)


def _tiny_adapter(top_k: int = 2) -> MoVAdapter:
    config = replace(MoVAConfig.from_name("tiny-random").adapter, top_k=top_k)
    adapter = MoVAdapter(config, in_channels=BASE, llm_hidden_size=LLM, expert_channels=EXPERT_CHANNELS)
    _randomize(adapter)
    return adapter.eval()


def _inputs(adapter: MoVAdapter, batch: int, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    n = adapter.config.grid_size**2
    base = torch.randn(batch, n, BASE, generator=generator)
    experts = [torch.randn(batch, n, c, generator=generator) for c in EXPERT_CHANNELS]
    text = torch.randn(batch, adapter.config.text_encoder["hidden_size"], generator=generator)
    return base, experts, text


def _routed(experts: list[torch.Tensor], mask: torch.Tensor) -> dict[int, torch.Tensor]:
    """The sparse API's input: for each routed expert, the rows whose bit is set."""
    return {e: f[mask[:, e] > 0] for e, f in enumerate(experts) if mask[:, e].any()}


def _head(adapter: MoVAdapter, x: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """The release's head: einops' rearrange "b (h w) d -> b d h w" is this reshape and permute."""
    b, _, c = x.shape
    grid = adapter.config.grid_size
    x = ((x + base) / 2).reshape(b, grid, grid, c).permute(0, 3, 1, 2)
    x = adapter.downsample(x).permute(0, 2, 3, 1).reshape(b, -1, c)  # rearrange "b d h w -> b (h w) d"
    return adapter.mlp(x)


def _self_attn_and_mlp(block, x: torch.Tensor) -> torch.Tensor:
    h = block.norm3(x)
    x = x + block.self_attn(h, h)
    return x + block.mlp(block.norm4(x))


def _dense_reference(adapter, base, experts, mask, text):
    """The release at batch > 1: every cross-attention on every row, unrouted ones weighted by 0."""
    k = min(adapter.config.top_k, len(experts))
    binary = (mask.mean(-1) > 0).float()
    x = base + adapter.pos_embed
    for block in adapter.blocks:
        logits = block.gate(torch.cat([text, x.mean(1)], dim=-1))
        w = F.softmax(logits.float() + (1 - mask).float() * -1e6, dim=-1)
        keep = F.one_hot(w.topk(k, dim=-1).indices, num_classes=len(experts)).sum(1)
        w = w * keep
        w = (w / w.sum(1, keepdim=True)).to(x.dtype)
        outs = [block.cross_attn[e](block.norm1[e](x), block.norm2[e](f)) for e, f in enumerate(experts)]
        fused = torch.sum(torch.stack(outs, dim=1) * w[:, :, None, None], dim=1) * binary[:, None, None]
        x = _self_attn_and_mlp(block, x + fused.to(x.dtype))
    return _head(adapter, x, base)


# --- 1. checkpoint names --------------------------------------------------------------------------


def test_real_size_names_and_shapes_match_the_release():
    expected = [(name[len(PREFIX) :], list(shape)) for name, shape in released_rows(PREFIX).items()]
    config = MoVAConfig.from_name("mova-8b")
    with torch.device("meta"):
        adapter = MoVAdapter(
            config.adapter,
            in_channels=1024,
            llm_hidden_size=4096,
            expert_channels=[1536, 512, 256, 1536, 768, 768, 256],
        )
    got = [(name, list(tensor.shape)) for name, tensor in adapter.state_dict().items()]
    assert len(expected) == 768
    assert got == expected


def test_reset_buffers_recreates_bert_buffers_after_meta_build():
    config = MoVAConfig.from_name("tiny-random").adapter
    with torch.device("meta"):
        adapter = MoVAdapter(config, in_channels=BASE, llm_hidden_size=LLM, expert_channels=EXPERT_CHANNELS)
    adapter.reset_buffers("cpu")
    embeddings = adapter.text_encoder["bert"].embeddings
    length = config.text_encoder["max_position_embeddings"]
    assert torch.equal(embeddings.position_ids, torch.arange(length)[None])
    assert torch.equal(embeddings.token_type_ids, torch.zeros(1, length, dtype=torch.long))
    assert "text_encoder.bert.embeddings.position_ids" not in adapter.state_dict()


def test_encode_text_is_cls_with_zero_token_types_and_ignores_padding():
    adapter = _tiny_adapter()
    bert = adapter.text_encoder["bert"]
    ids = torch.tensor([[2, 7, 9, 11, 3], [2, 5, 3, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    features = adapter.encode_text(ids, mask)
    explicit = bert(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).last_hidden_state[:, 0]
    alone = bert(input_ids=ids[1:, :3], attention_mask=mask[1:, :3]).last_hidden_state[:, 0]
    assert features.shape == (2, 32)
    torch.testing.assert_close(features, explicit, rtol=0, atol=0)
    torch.testing.assert_close(features[1:], alone, rtol=1e-5, atol=1e-5)


# --- 2. attention with 2-D RoPE ---------------------------------------------------------------------


def _reference_attention(attention: AdapterAttention, x, value, grid: int, theta: float) -> torch.Tensor:
    """The adapter attention in float64, element by element: per-token angles r*θ_i / c*θ_i on rotated pairs."""
    x, value = x.double(), value.double()
    heads = attention.num_heads
    d = x.shape[-1] // heads
    half = d // 2  # channels [0, half) follow the row, [half, d) the column
    q = x @ attention.q_proj.weight.double().T
    k = value @ attention.k_proj.weight.double().T
    v = value @ attention.v_proj.weight.double().T

    def rotate(t):  # t: (B, N, heads*d)
        out = t.clone()
        for n in range(t.shape[1]):
            r, c = divmod(n, grid)
            for h in range(heads):
                for j in range(0, d, 2):
                    pos, i = (r, j // 2) if j < half else (c, (j - half) // 2)
                    angle = pos * theta ** (-2 * i / half)
                    a, b = t[:, n, h * d + j], t[:, n, h * d + j + 1]
                    out[:, n, h * d + j] = a * math.cos(angle) - b * math.sin(angle)
                    out[:, n, h * d + j + 1] = b * math.cos(angle) + a * math.sin(angle)
        return out

    q, k = rotate(q), rotate(k)
    outs = []
    for h in range(heads):
        sl = slice(h * d, (h + 1) * d)
        scores = (q[..., sl] / math.sqrt(d)) @ k[..., sl].transpose(1, 2)
        outs.append(torch.softmax(scores, dim=-1) @ v[..., sl])
    o = torch.cat(outs, dim=-1)
    ln = attention.inner_attn_ln
    o = (o - o.mean(-1, keepdim=True)) / torch.sqrt(o.var(-1, unbiased=False, keepdim=True) + ln.eps)
    o = o * ln.weight.double() + ln.bias.double()
    return o @ attention.proj.weight.double().T + attention.proj.bias.double()


def test_attention_with_2d_rope_matches_float64_derivation():
    grid, theta = 4, 10000.0
    attention = AdapterAttention(32, 24, num_heads=4, grid_size=grid, eps=1e-5, rope_theta=theta)
    _randomize(attention)
    x, value = torch.randn(2, grid * grid, 32), torch.randn(2, grid * grid, 24)
    expected = _reference_attention(attention, x, value, grid, theta)
    torch.testing.assert_close(attention(x, value).double(), expected, rtol=1e-5, atol=1e-5)
    # The tables really are positional: permuting the tokens is not equivariant.
    perm = torch.randperm(grid * grid)
    assert not torch.allclose(attention(x[:, perm], value[:, perm]), attention(x, value)[:, perm], atol=1e-3)


# --- 3. gate ----------------------------------------------------------------------------------------


def test_gate_masks_keeps_top_k_and_renormalises():
    adapter = _tiny_adapter(top_k=2)
    block = adapter.blocks[0]
    base, _, text = _inputs(adapter, batch=4)
    x = base + adapter.pos_embed
    mask = torch.tensor([[1, 0, 1, 0, 0], [0, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.float32)
    weights = block.gate_weights(x, text, mask)
    logits = block.gate(torch.cat([text, x.mean(1)], dim=-1)).double()

    assert weights.dtype == torch.float32
    assert torch.all(weights[mask == 0] == 0)  # masked experts: exactly zero
    # two routed experts, k = 2: softmax over the two routed logits
    torch.testing.assert_close(weights[0, [0, 2]].double(), torch.softmax(logits[0, [0, 2]], 0), rtol=1e-6, atol=1e-7)
    assert weights[1].tolist() == [0.0, 1.0, 0.0, 0.0, 0.0]  # one routed expert gets weight 1
    # five routed, k = 2: the two largest logits survive, renormalised between themselves
    top = logits[2].topk(2).indices
    assert torch.count_nonzero(weights[2]) == 2
    assert set(weights[2].nonzero().flatten().tolist()) == set(top.tolist())
    torch.testing.assert_close(weights[2, top].double(), torch.softmax(logits[2, top], 0), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(weights[:3].sum(1), torch.ones(3), rtol=0, atol=1e-6)
    assert torch.all(weights[3] == 0)  # nothing routed: the binary weight zeroes everything


def test_all_zero_mask_reduces_to_the_no_expert_path():
    adapter = _tiny_adapter()
    base, experts, text = _inputs(adapter, batch=2)
    mask = torch.zeros(2, len(EXPERT_CHANNELS))
    out = adapter.forward_with_gates(base, {}, mask, text)

    x = base + adapter.pos_embed
    for block in adapter.blocks:
        x = _self_attn_and_mlp(block, x)
    expected = _head(adapter, x, base)
    assert torch.equal(out.image_features, expected)
    assert all(torch.all(w == 0) for w in out.gate_weights)
    # The release's dense computation (uniform softmax, times binary weight 0) agrees exactly.
    assert torch.equal(out.image_features, _dense_reference(adapter, base, experts, mask, text))
    # Zero-row feature tensors for unrouted experts are accepted and change nothing.
    empty = {e: f[:0] for e, f in enumerate(experts)}
    assert torch.equal(adapter(base, empty, mask, text), expected)


@pytest.mark.parametrize("batch", [1, 8])
def test_feature_map_has_the_reference_channels_last_strides(batch):
    # torch picks conv kernels from the strides: the reference's rearrange gives channels-last ones.
    adapter = _tiny_adapter()
    base, _, text = _inputs(adapter, batch=batch)
    maps = []
    hook = adapter.downsample.register_forward_pre_hook(lambda _m, args: maps.append(args[0]))
    try:
        adapter(base, {}, torch.zeros(batch, len(EXPERT_CHANNELS)), text)
    finally:
        hook.remove()
    grid = adapter.config.grid_size
    expected = torch.empty(batch, BASE, grid, grid, memory_format=torch.channels_last).stride()
    assert maps[0].shape == (batch, BASE, grid, grid)
    assert maps[0].stride() == expected


def test_batch_one_head_equals_the_reference_layout_where_conv_kernels_differ():
    # With two threads at width 128 on a 16x16 grid, the 1x1 convs of an NCHW and of a channels-last
    # map round differently on CPU (one thread, or width 32 on 8x8, hides it): an NCHW map at batch 1
    # would not be bit-equal to the reference's head here.
    config = replace(MoVAConfig.from_name("tiny-random").adapter, grid_size=16)
    adapter = MoVAdapter(config, in_channels=128, llm_hidden_size=LLM, expert_channels=[8])
    _randomize(adapter)
    adapter.eval()
    generator = torch.Generator().manual_seed(2)
    base = torch.randn(1, 256, 128, generator=generator)
    text = torch.randn(1, config.text_encoder["hidden_size"], generator=generator)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.inference_mode():  # as the model runs
            x = base + adapter.pos_embed
            for block in adapter.blocks:
                x = _self_attn_and_mlp(block, x)
            assert torch.equal(adapter(base, {}, torch.zeros(1, 1), text), _head(adapter, x, base))
    finally:
        torch.set_num_threads(threads)


# --- 4. sparse execution ----------------------------------------------------------------------------


def test_sparse_equals_dense_and_unrouted_expert_never_runs():
    adapter = _tiny_adapter(top_k=3)
    base, experts, text = _inputs(adapter, batch=5)
    # Rows 0 and 3 sum three weighted experts (so the summation order matters); row 3 routes to four
    # with top_k 3; row 2 routes nowhere; nobody routes to expert 3.
    mask = torch.tensor(
        [[1, 1, 1, 0, 0], [0, 1, 0, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 0, 1], [0, 0, 1, 0, 1]], dtype=torch.float32
    )
    dense = _dense_reference(adapter, base, experts, mask, text)

    calls = {e: [] for e in range(len(EXPERT_CHANNELS))}
    hooks = [
        attn.register_forward_hook(lambda _m, args, _o, e=e: calls[e].append(args[0].shape[0]))
        for block in adapter.blocks
        for e, attn in enumerate(block.cross_attn)
    ]
    try:
        sparse = adapter(base, _routed(experts, mask), mask, text)
    finally:
        for hook in hooks:
            hook.remove()

    assert torch.equal(sparse, dense)
    assert sparse.shape == (5, adapter.num_tokens, LLM)
    assert calls[3] == []  # never executed
    routed_rows = mask.sum(0).int().tolist()
    for e in (0, 1, 2, 4):  # run once per block, on exactly the routed rows
        assert calls[e] == [routed_rows[e]] * len(adapter.blocks)


def test_mismatched_expert_features_raise_input_error():
    adapter = _tiny_adapter()
    base, experts, text = _inputs(adapter, batch=2)
    mask = torch.tensor([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.float32)
    with pytest.raises(InputError, match="expert 1"):
        adapter(base, {0: experts[0]}, mask, text)  # expert 1 is routed but missing
    with pytest.raises(InputError, match=r"\(2, 64, 24\)"):
        adapter(base, {0: experts[0][:1], 1: experts[1][1:]}, mask, text)  # wrong row count
    with pytest.raises(InputError, match="routing_mask"):
        adapter(base, _routed(experts, mask), mask[:, :4], text)


# --- 5. batch independence --------------------------------------------------------------------------


def test_batch_rows_are_independent():
    adapter = _tiny_adapter(top_k=2)
    base, experts, text = _inputs(adapter, batch=3)
    mask = torch.tensor([[1, 1, 0, 0, 1], [0, 0, 0, 0, 0], [0, 1, 1, 1, 1]], dtype=torch.float32)
    batched = adapter.forward_with_gates(base, _routed(experts, mask), mask, text)
    # 1e-6 of the output's magnitude (up to ~8 here): batched GEMMs may round differently, nothing more.
    atol = 1e-6 * batched.image_features.abs().max().item()
    for i in range(3):
        row = slice(i, i + 1)
        alone = adapter.forward_with_gates(
            base[row], _routed([f[row] for f in experts], mask[row]), mask[row], text[row]
        )
        torch.testing.assert_close(batched.image_features[row], alone.image_features, rtol=1e-6, atol=atol)
        for w_batched, w_alone in zip(batched.gate_weights, alone.gate_weights, strict=True):
            torch.testing.assert_close(w_batched[row], w_alone, rtol=1e-6, atol=1e-6)


# --- 6. RegStage and routing pooling ----------------------------------------------------------------


def _reference_regstage(stage: RegStage, x: torch.Tensor) -> torch.Tensor:
    """timm's RegNet bottleneck by hand in float64: 1x1 -> LN+SiLU, depthwise 3x3 -> LN+SiLU, SE, 1x1 -> LN, + x."""
    block = stage.b1
    x = x.double()

    def ln(t, norm):  # LayerNorm over channels of NCHW, eps 1e-5
        mean = t.mean(1, keepdim=True)
        var = ((t - mean) ** 2).mean(1, keepdim=True)
        return (t - mean) / torch.sqrt(var + 1e-5) * norm.weight.double()[:, None, None] + norm.bias.double()[
            :, None, None
        ]

    def pointwise(t, weight):
        return torch.einsum("oc,bchw->bohw", weight.double()[:, :, 0, 0], t)

    silu = F.silu
    h = silu(ln(pointwise(x, block.conv1.conv.weight), block.conv1.bn))
    kernel = block.conv2.conv.weight.double()[:, 0]  # (C, 3, 3), one filter per channel
    padded = F.pad(h, (1, 1, 1, 1))
    height, width = h.shape[-2:]
    dw = sum(
        padded[:, :, i : i + height, j : j + width] * kernel[:, i, j][None, :, None, None]
        for i in range(3)
        for j in range(3)
    )
    h = silu(ln(dw, block.conv2.bn))
    squeezed = h.mean((2, 3))  # (B, C)
    s = silu(squeezed @ block.se.fc1.weight.double()[:, :, 0, 0].T + block.se.fc1.bias.double())
    s = torch.sigmoid(s @ block.se.fc2.weight.double()[:, :, 0, 0].T + block.se.fc2.bias.double())
    h = h * s[:, :, None, None]
    h = ln(pointwise(h, block.conv3.conv.weight), block.conv3.bn)
    return x + h


@pytest.mark.parametrize("scale", [1.0, 3e-3])  # the small scale makes the LN eps (1e-5) matter
def test_regstage_matches_hand_computation(scale):
    stage = RegStage(16, se_ratio=0.25)
    _randomize(stage)
    assert stage.b1.se.fc1.out_channels == 4
    x = torch.randn(2, 16, 6, 6) * scale
    torch.testing.assert_close(stage(x).double(), _reference_regstage(stage, x), rtol=1e-5, atol=1e-5)


def _mean_pool_2x2(tokens: torch.Tensor) -> torch.Tensor:
    b, n, w = tokens.shape
    side = math.isqrt(n)
    out = torch.empty(b, (side // 2) ** 2, w)
    for i in range(side // 2):
        for j in range(side // 2):
            cells = [(2 * i + di) * side + 2 * j + dj for di in (0, 1) for dj in (0, 1)]
            out[:, i * (side // 2) + j] = tokens[:, cells].mean(1)
    return out


def test_pool_for_routing_is_2x2_mean_pooling():
    tiny = _tiny_adapter()
    tokens = torch.randn(2, tiny.num_tokens, 8)  # 4x4 grid -> 2x2
    torch.testing.assert_close(tiny.pool_for_routing(tokens), _mean_pool_2x2(tokens), rtol=1e-6, atol=1e-6)
    config = MoVAConfig.from_name("mova-8b")
    with torch.device("meta"):
        real = MoVAdapter(config.adapter, in_channels=1024, llm_hidden_size=4096, expert_channels=[8])
    tokens = torch.randn(1, 576, 8)  # 24x24 grid -> 12x12 = 144 routing tokens
    torch.testing.assert_close(real.pool_for_routing(tokens), _mean_pool_2x2(tokens), rtol=1e-6, atol=1e-6)


def test_sdpa_and_eager_adapter_attention_agree_in_float32():
    from mova.adapter import AdapterAttention

    torch.manual_seed(0)
    attention = AdapterAttention(32, 24, num_heads=4, grid_size=4, eps=1e-5, rope_theta=10000.0)
    x, value = torch.randn(3, 16, 32), torch.randn(3, 16, 24)
    eager = attention(x, value)
    attention.attn_implementation = "sdpa"
    torch.testing.assert_close(attention(x, value), eager, rtol=1e-5, atol=1e-5)
