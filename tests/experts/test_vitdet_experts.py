"""The ViTDet-style experts (B Vary SAM-B, C Co-DETR, G SAM-H) and their shared encoder.

Every numeric check compares the float32 modules with a float64 computation written here independently
of them: explicit window loops, explicit relative-position index tables,
RoPE as complex rotations, explicit LayerNorm / GELU / convolutions / resizes.
"""

import json
import math

import pytest
import torch
from PIL import Image
from spec_rows import released_rows
from torch import nn

from mova.constants import CLIP_MEAN, CLIP_STD
from mova.errors import ConfigError, InputError
from mova.experts.base import VisionExpert
from mova.experts.codetr import CodetrExpert
from mova.experts.registry import CodetrExpertConfig
from mova.experts.sam_h import SamHExpert
from mova.experts.vary_sam_b import VarySamBExpert
from mova.layers.norms import LayerNorm2d
from mova.layers.rope import VisionRotaryEmbedding

EXPERTS = [VarySamBExpert, CodetrExpert, SamHExpert]


def _randomize(module: nn.Module, seed: int = 1) -> nn.Module:
    """Random weights everywhere (the defaults are zeros/ones and would hide bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for sub in module.modules():
            for name, p in sub.named_parameters(recurse=False):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
                if isinstance(sub, (nn.LayerNorm, LayerNorm2d)) and name == "weight":
                    p.add_(1.0)
    return module


def _p64(module: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v.detach().double() for k, v in module.state_dict().items() if k.startswith(prefix)}


# --- float64 reference pieces, written independently of the modules -------------------------------


def _ln(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def _ln2d(x, w, b, eps):  # x (B, C, H, W): normalise over C at each pixel
    return _ln(x.permute(0, 2, 3, 1), w, b, eps).permute(0, 3, 1, 2)


def _gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def _silu(x):
    return x / (1 + torch.exp(-x))


def _conv(x, w, *, stride=1, pad=0):
    """Explicit convolution: sum over kernel offsets of channel mixes of shifted, strided views."""
    b, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    canvas = torch.zeros(b, c, h + 2 * pad, wd + 2 * pad, dtype=x.dtype)
    canvas[:, :, pad : pad + h, pad : pad + wd] = x
    ho, wo = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    out = torch.zeros(b, o, ho, wo, dtype=x.dtype)
    for ky in range(kh):
        for kx in range(kw):
            view = canvas[:, :, ky : ky + stride * (ho - 1) + 1 : stride, kx : kx + stride * (wo - 1) + 1 : stride]
            out += torch.einsum("bchw,oc->bohw", view, w[:, :, ky, kx])
    return out


def _patch_embed(x, w, bias):  # (B, 3, S, S) -> (B, H, W, D)
    b, c, s, _ = x.shape
    p = w.shape[-1]
    patches = x.reshape(b, c, s // p, p, s // p, p)
    return torch.einsum("bciyjx,ocyx->bijo", patches, w) + bias


def _windowed(y, side, attend):
    """Zero-pad y (B, H, W, C) to multiples of ``side``, run ``attend`` on each window's tokens, crop."""
    b, h, w, c = y.shape
    hp, wp = -(-h // side) * side, -(-w // side) * side
    canvas = torch.zeros(b, hp, wp, c, dtype=y.dtype)
    canvas[:, :h, :w] = y
    out = torch.zeros_like(canvas)
    for i in range(b):
        for r0 in range(0, hp, side):
            for c0 in range(0, wp, side):
                tokens = canvas[i, r0 : r0 + side, c0 : c0 + side].reshape(side * side, c)
                out[i, r0 : r0 + side, c0 : c0 + side] = attend(tokens, side).reshape(side, side, c)
    return out[:, :h, :w]


def _sam_attend(p, num_heads):
    def attend(tokens, side):
        n, c = tokens.shape
        hd = c // num_heads
        qkv = tokens @ p["attn.qkv.weight"].T + p["attn.qkv.bias"]
        q, k, v = qkv[:, :c], qkv[:, c : 2 * c], qkv[:, 2 * c :]
        rows = [i // side for i in range(n)]
        cols = [i % side for i in range(n)]
        idx_h = torch.tensor([[rows[i] - rows[j] + side - 1 for j in range(n)] for i in range(n)])
        idx_w = torch.tensor([[cols[i] - cols[j] + side - 1 for j in range(n)] for i in range(n)])
        rel_h, rel_w = p["attn.rel_pos_h"][idx_h], p["attn.rel_pos_w"][idx_w]  # (N, N, hd)
        heads = []
        for h in range(num_heads):
            sl = slice(h * hd, (h + 1) * hd)
            qh, kh, vh = q[:, sl], k[:, sl], v[:, sl]
            scores = qh @ kh.T / math.sqrt(hd)
            scores = scores + torch.einsum("ic,ijc->ij", qh, rel_h) + torch.einsum("ic,ijc->ij", qh, rel_w)
            heads.append(torch.softmax(scores, dim=-1) @ vh)
        return torch.cat(heads, -1) @ p["attn.proj.weight"].T + p["attn.proj.bias"]

    return attend


def _rope_angles(side, head_dim, pt_seq_len, theta):
    """(side*side, head_dim/2) rotation angle of each channel pair, from the formula."""
    d = head_dim // 2  # per-axis width
    freqs = [theta ** (-2 * i / d) for i in range(d // 2)]
    angles = torch.zeros(side * side, head_dim // 2, dtype=torch.float64)
    for n in range(side * side):
        t_row, t_col = (n // side) * pt_seq_len / side, (n % side) * pt_seq_len / side
        for m in range(head_dim // 2):
            angles[n, m] = t_row * freqs[m] if m < d // 2 else t_col * freqs[m - d // 2]
    return angles


def _rotate(x, angles):  # x (N, hd): pair (x[2m], x[2m+1]) as a complex number times e^{i angle}
    z = torch.complex(x[:, 0::2], x[:, 1::2]) * torch.exp(1j * angles)
    return torch.stack((z.real, z.imag), dim=-1).flatten(-2)


def _rope_attend(p, num_heads, pt_seq_len, theta):
    def attend(tokens, side):
        c = tokens.shape[1]
        hd = c // num_heads
        q = tokens @ p["attn.q_proj.weight"].T + p["attn.q_bias"]
        k = tokens @ p["attn.k_proj.weight"].T
        v = tokens @ p["attn.v_proj.weight"].T + p["attn.v_bias"]
        angles = _rope_angles(side, hd, pt_seq_len, theta)
        heads = []
        for h in range(num_heads):
            sl = slice(h * hd, (h + 1) * hd)
            qh, kh = _rotate(q[:, sl], angles), _rotate(k[:, sl], angles)
            scores = (qh / math.sqrt(hd)) @ kh.T
            heads.append(torch.softmax(scores, dim=-1) @ v[:, sl])
        return torch.cat(heads, -1) @ p["attn.proj.weight"].T + p["attn.proj.bias"]

    return attend


def _sam_mlp(p):
    return lambda y: (
        _gelu(y @ p["mlp.lin1.weight"].T + p["mlp.lin1.bias"]) @ p["mlp.lin2.weight"].T + p["mlp.lin2.bias"]
    )


def _swiglu(p, eps):
    def mlp(y):
        hidden = _silu(y @ p["mlp.w1.weight"].T + p["mlp.w1.bias"]) * (y @ p["mlp.w2.weight"].T + p["mlp.w2.bias"])
        hidden = _ln(hidden, p["mlp.ffn_ln.weight"], p["mlp.ffn_ln.bias"], eps)
        return hidden @ p["mlp.w3.weight"].T + p["mlp.w3.bias"]

    return mlp


def _block(x, p, *, side, attend, mlp, eps):
    x = x + _windowed(_ln(x, p["norm1.weight"], p["norm1.bias"], eps), side, attend)
    return x + mlp(_ln(x, p["norm2.weight"], p["norm2.bias"], eps))


def _ref_block(expert, i, x):
    cfg = expert.config
    p = _p64(expert, f"blocks.{i}.")
    side = x.shape[1] if i in cfg.global_attn_indexes else cfg.window_size
    if isinstance(expert, CodetrExpert):
        attend = _rope_attend(p, cfg.num_heads, cfg.rope_pt_seq_len, cfg.rope_theta)
        mlp = _swiglu(p, cfg.norm_eps)
    else:
        attend, mlp = _sam_attend(p, cfg.num_heads), _sam_mlp(p)
    return _block(x, p, side=side, attend=attend, mlp=mlp, eps=cfg.norm_eps)


def _bilinear_matrix(n_in, n_out):
    """(n_out, n_in) weights of a 1-D bilinear resize, align_corners=False (PyTorch's source-index rule)."""
    a = torch.zeros(n_out, n_in, dtype=torch.float64)
    for o in range(n_out):
        src = max((o + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = int(math.floor(src))
        i1 = min(i0 + 1, n_in - 1)
        a[o, i0] += 1 - (src - i0)
        a[o, i1] += src - i0
    return a


def _nearest_index(n_in, n_out):
    return torch.tensor([math.floor(d * n_in / n_out) for d in range(n_out)])


def _ref_forward(expert, pixel_values):
    """The whole expert in float64: resize (Co-DETR), patch embed, position, blocks, head."""
    cfg = expert.config
    p = _p64(expert)
    x = pixel_values.double()
    codetr = isinstance(expert, CodetrExpert)
    if codetr:
        idx = _nearest_index(x.shape[-1], cfg.input_size)
        x = x[:, :, idx][:, :, :, idx]
    x = _patch_embed(x, p["patch_embed.proj.weight"], p["patch_embed.proj.bias"])
    g = x.shape[1]
    x = x + (p["pos_embed"][:, 1:].reshape(1, g, g, -1) if codetr else p["pos_embed"])
    for i in range(cfg.depth):
        x = _ref_block(expert, i, x)
    if codetr:
        x = _ln(x, p["out_norm.weight"], p["out_norm.bias"], cfg.out_norm_eps)
        x = _ref_codetr_neck(x.permute(0, 3, 1, 2), p, cfg.neck_norm_eps)
        a = _bilinear_matrix(g, cfg.output_grid)
        return torch.einsum("oh,bchw,pw->bcop", a, x, a)
    eps = cfg.neck_norm_eps
    x = _conv(x.permute(0, 3, 1, 2), p["neck.0.weight"])
    x = _ln2d(x, p["neck.1.weight"], p["neck.1.bias"], eps)
    x = _conv(x, p["neck.2.weight"], pad=1)
    x = _ln2d(x, p["neck.3.weight"], p["neck.3.bias"], eps)
    if isinstance(expert, VarySamBExpert):
        x = _conv(x, p["net_2.weight"], stride=2, pad=1)
    return x


def _ref_codetr_neck(x, p, eps):
    x = _ln2d(_conv(x, p["neck.0.weight"]), p["neck.1.weight"], p["neck.1.bias"], eps)
    x = _conv(_gelu(x), p["neck.3.weight"], pad=1)
    return _ln2d(x, p["neck.4.weight"], p["neck.4.bias"], eps)


# --- 1. contract, shapes, names -----------------------------------------------------------------


ROUTING_SENTENCES = {  # upstream ROUTING_PROMPT, the items after "B. ", "C. ", "G. "
    "vary_sam_b": "This model can handle images with text accurately and efficiently but fails to process natural "
    "images.",
    "codetr": "This model is a state-of-the-art object detector that can identify objects in images.",
    "sam_h": "This model is a leading image segmentation framework and achieves strong zero-shot segmentation "
    "performance.",
}
RELEASE = {  # name -> (legacy index, out channels, output map side)
    "vary_sam_b": (2, 512, 32),
    "codetr": (3, 256, 37),
    "sam_h": (7, 256, 64),
}
TINY_SIDE = {"vary_sam_b": 4, "codetr": 7, "sam_h": 8}


@pytest.mark.parametrize("cls", EXPERTS, ids=lambda c: c.spec.name)
def test_class_attributes_follow_the_release(cls):
    assert issubclass(cls, VisionExpert)
    assert cls.spec.routing_description == ROUTING_SENTENCES[cls.spec.name]
    assert cls.spec.legacy_index == RELEASE[cls.spec.name][0]
    assert cls.spec.preprocess_key == "high_res"
    assert cls.KEY_RULES == ()
    assert cls.spec.description and "\n" not in cls.spec.description


@pytest.mark.parametrize("cls", EXPERTS, ids=lambda c: c.spec.name)
def test_tiny_forward_shape_dtype(cls):
    expert = _randomize(cls(cls.spec.tiny_config)).eval()
    side = TINY_SIDE[cls.spec.name]
    out = expert(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, expert.out_channels, side, side) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    out = expert.to(torch.bfloat16)(torch.randn(1, 3, 64, 64))  # float32 pixels are cast to the module dtype
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def _expected_release_names(name):
    """Names and shapes of the released expert, reconstructed by hand from its architecture."""
    rows = {}

    def add(prefix, **shapes):
        rows.update({prefix + k.replace("__", "."): v for k, v in shapes.items()})

    def ln(prefix, d):
        add(prefix, weight=(d,), bias=(d,))

    if name == "codetr":
        d, m = 1024, 2730
        add("", pos_embed=(1, 6401, d), patch_embed__proj__weight=(d, 3, 16, 16), patch_embed__proj__bias=(d,))
        add("rope_win.", freqs_cos=(256, 64), freqs_sin=(256, 64))
        add("rope_glb.", freqs_cos=(6400, 64), freqs_sin=(6400, 64))
        for i in range(24):
            b, table = f"blocks.{i}.", 6400 if i in (5, 11, 17, 23) else 256
            ln(b + "norm1.", d)
            ln(b + "norm2.", d)
            add(b + "attn.", q_bias=(d,), v_bias=(d,), rope__freqs_cos=(table, 64), rope__freqs_sin=(table, 64))
            add(b + "attn.", q_proj__weight=(d, d), k_proj__weight=(d, d), v_proj__weight=(d, d))
            add(b + "attn.", proj__weight=(d, d), proj__bias=(d,))
            add(b + "mlp.", w1__weight=(m, d), w1__bias=(m,), w2__weight=(m, d), w2__bias=(m,))
            add(b + "mlp.", w3__weight=(d, m), w3__bias=(d,))
            ln(b + "mlp.ffn_ln.", m)
        ln("out_norm.", d)
        add("neck.", **{"0__weight": (256, d, 1, 1), "3__weight": (256, 256, 3, 3)})
        ln("neck.1.", 256)
        ln("neck.4.", 256)
        return rows
    d, depth, hd, m, glob = (
        (768, 12, 64, 3072, (2, 5, 8, 11)) if name == "vary_sam_b" else (1280, 32, 80, 5120, (7, 15, 23, 31))
    )
    add("", pos_embed=(1, 64, 64, d), patch_embed__proj__weight=(d, 3, 16, 16), patch_embed__proj__bias=(d,))
    for i in range(depth):
        b, rel = f"blocks.{i}.", 127 if i in glob else 27
        ln(b + "norm1.", d)
        ln(b + "norm2.", d)
        add(b + "attn.", rel_pos_h=(rel, hd), rel_pos_w=(rel, hd), qkv__weight=(3 * d, d), qkv__bias=(3 * d,))
        add(b + "attn.", proj__weight=(d, d), proj__bias=(d,))
        add(b + "mlp.", lin1__weight=(m, d), lin1__bias=(m,), lin2__weight=(d, m), lin2__bias=(d,))
    add("neck.", **{"0__weight": (256, d, 1, 1), "2__weight": (256, 256, 3, 3)})
    ln("neck.1.", 256)
    ln("neck.3.", 256)
    if name == "vary_sam_b":
        add("net_2.", weight=(512, 256, 3, 3))
    return rows


@pytest.mark.parametrize("cls", EXPERTS, ids=lambda c: c.spec.name)
def test_real_config_names_and_shapes_match_the_release(cls):
    with torch.device("meta"):
        expert = cls(cls.spec.config_class())
    prefix = f"model.vision_tower.vision_tower_{cls.spec.legacy_index}."
    ours = {prefix + k: tuple(v.shape) for k, v in expert.state_dict().items()}
    assert ours == {prefix + k: v for k, v in _expected_release_names(cls.spec.name).items()}
    _, channels, side = RELEASE[cls.spec.name]
    assert expert.out_channels == channels
    assert expert(torch.empty(1, 3, 1024, 1024, device="meta")).shape == (1, channels, side, side)

    assert ours == released_rows(prefix)


@pytest.mark.parametrize("cls", EXPERTS, ids=lambda c: c.spec.name)
def test_tiny_forward_matches_float64_reference(cls):
    expert = _randomize(cls(cls.spec.tiny_config)).eval()
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = expert(pixels)
    torch.testing.assert_close(out.double(), _ref_forward(expert, pixels), rtol=1e-4, atol=1e-4)


def test_wrong_input_size_is_an_input_error():
    expert = SamHExpert(SamHExpert.spec.tiny_config)
    with pytest.raises(InputError, match="48x48 px.*64x64"):
        expert(torch.zeros(1, 3, 48, 48))


CONFIG_FIELDS = {  # the field names the presets and saved config.json files carry
    "common": {"image_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_dim", "window_size"}
    | {"global_attn_indexes", "norm_eps", "neck_chans", "neck_norm_eps", "image_mean", "image_std"},
    "vary_sam_b": {"net_2_chans"},
    "codetr": {"input_size", "out_norm_eps", "output_grid", "rope_pt_seq_len", "rope_theta"},
    "sam_h": set(),
}


@pytest.mark.parametrize("cls", EXPERTS, ids=lambda c: c.spec.name)
def test_config_fields_defaults_and_json_round_trip(cls):
    real = cls.spec.config_class()
    values = real.to_dict()
    assert set(values) == CONFIG_FIELDS["common"] | CONFIG_FIELDS[cls.spec.name]
    assert (values["image_size"], values["patch_size"], values["neck_chans"]) == (1024, 16, 256)
    assert values["norm_eps"] == values["neck_norm_eps"] == 1e-6
    assert values["image_mean"] == list(CLIP_MEAN) and values["image_std"] == list(CLIP_STD)
    for config in (real, cls.spec.tiny_config):
        assert cls.spec.config_class.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ConfigError, match="unknown keys.*neck_channels"):
        cls.spec.config_class.from_dict({**values, "neck_channels": 8})


# --- 2. windowed attention with padding and decomposed rel-pos (SAM) ------------------------------


@pytest.mark.parametrize("block", [0, 1], ids=["windowed_padded", "global"])
def test_sam_block_matches_explicit_windows_and_relpos(block):
    expert = _randomize(SamHExpert(SamHExpert.spec.tiny_config))
    cfg = expert.config
    assert (block in cfg.global_attn_indexes) == (block == 1) and 8 % cfg.window_size  # 8x8 grid, windows of 3 pad
    x = torch.randn(2, 8, 8, cfg.embed_dim)
    with torch.no_grad():
        out = expert.blocks[block](x)
    torch.testing.assert_close(out.double(), _ref_block(expert, block, x.double()), rtol=1e-4, atol=1e-4)


# --- 3. Co-DETR RoPE attention and tables -----------------------------------------------------------


@pytest.mark.parametrize("block", [0, 1], ids=["windowed_padded", "global"])
def test_codetr_block_matches_explicit_rope_attention(block):
    expert = _randomize(CodetrExpert(CodetrExpert.spec.tiny_config))
    cfg = expert.config
    assert (block in cfg.global_attn_indexes) == (block == 1) and 10 % cfg.window_size  # 10x10 grid, windows of 3 pad
    x = torch.randn(2, 10, 10, cfg.embed_dim)
    with torch.no_grad():
        out = expert.blocks[block](x)
    torch.testing.assert_close(out.double(), _ref_block(expert, block, x.double()), rtol=1e-4, atol=1e-4)


def test_codetr_rope_tables_follow_the_formula():
    with torch.device("meta"):
        real = CodetrExpert(CodetrExpertConfig())
    for rope, ft in ((real.rope_win, 16), (real.rope_glb, 80)):
        assert (rope.dim, rope.pt_seq_len, rope.ft_seq_len, rope.theta) == (32, 16, ft, 10000.0)
    glb = VisionRotaryEmbedding(32, 16, 80)  # the real global table, built on CPU
    win = VisionRotaryEmbedding(32, 16, 16)
    assert glb.freqs_cos.shape == (6400, 64) and win.freqs_cos.shape == (256, 64)

    def theta(i):  # theta_i = 10000^(-i/16), i = 0..15
        return 10000 ** (-i / 16)

    # token n = r*80 + c; channels j < 32 rotate with row position r*0.2, j >= 32 with column c*0.2.
    for r, c, j in ((0, 0, 0), (1, 0, 0), (2, 7, 2), (3, 5, 5), (79, 1, 31), (4, 3, 32), (0, 2, 36), (11, 79, 63)):
        pos = r * 0.2 if j < 32 else c * 0.2
        angle = pos * theta((j if j < 32 else j - 32) // 2)
        assert glb.freqs_cos[r * 80 + c, j].item() == pytest.approx(math.cos(angle), abs=1e-5)
        assert glb.freqs_sin[r * 80 + c, j].item() == pytest.approx(math.sin(angle), abs=1e-5)
    # window table: integer positions 0..15
    assert win.freqs_cos[5 * 16 + 7, 0].item() == pytest.approx(math.cos(5.0), abs=1e-5)
    assert win.freqs_sin[5 * 16 + 7, 34].item() == pytest.approx(math.sin(7 * theta(1)), abs=1e-5)

    tiny = CodetrExpert(CodetrExpert.spec.tiny_config)
    cfg = tiny.config
    hd = cfg.embed_dim // cfg.num_heads
    for rope, side in ((tiny.rope_win, cfg.window_size), (tiny.rope_glb, cfg.input_size // cfg.patch_size)):
        angles = _rope_angles(side, hd, cfg.rope_pt_seq_len, cfg.rope_theta).repeat_interleave(2, dim=-1)
        torch.testing.assert_close(rope.freqs_cos.double(), angles.cos(), rtol=0, atol=1e-6)
        torch.testing.assert_close(rope.freqs_sin.double(), angles.sin(), rtol=0, atol=1e-6)


# --- 4. neck and resizes ----------------------------------------------------------------------------


@pytest.mark.parametrize("cls", EXPERTS, ids=lambda c: c.spec.name)
def test_neck_matches_explicit_layernorm2d(cls):
    expert = _randomize(cls(cls.spec.tiny_config))
    x = torch.randn(2, expert.config.embed_dim, 5, 6) * 3 + 1
    with torch.no_grad():
        out = expert.neck(x)
    p, eps = _p64(expert), expert.config.neck_norm_eps
    if cls is CodetrExpert:
        ref = _ref_codetr_neck(x.double(), p, eps)
    else:
        ref = _conv(x.double(), p["neck.0.weight"])
        ref = _ln2d(ref, p["neck.1.weight"], p["neck.1.bias"], eps)
        ref = _ln2d(_conv(ref, p["neck.2.weight"], pad=1), p["neck.3.weight"], p["neck.3.bias"], eps)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)


def test_codetr_resizes_at_release_sizes():
    """1024 -> 1280 nearest is index floor(dst * 0.8); the 80x80 neck map goes to 37x37 bilinearly."""
    cfg = CodetrExpertConfig(embed_dim=8, depth=0, num_heads=1, mlp_dim=8, global_attn_indexes=(), neck_chans=4)
    expert = _randomize(CodetrExpert(cfg))
    seen = {}
    expert.patch_embed.proj.register_forward_pre_hook(lambda _, args: seen.update(resized=args[0]))
    expert.neck.register_forward_hook(lambda *args: seen.update(neck=args[2]))
    pixels = torch.randn(1, 3, 1024, 1024)
    with torch.no_grad():
        out = expert(pixels)

    idx = torch.tensor([math.floor(d * 0.8) for d in range(1280)])
    assert torch.equal(seen["resized"], pixels[:, :, idx][:, :, :, idx])
    assert seen["neck"].shape == (1, 4, 80, 80) and out.shape == (1, 4, 37, 37)
    a = _bilinear_matrix(80, 37)
    ref = torch.einsum("oh,bchw,pw->bcop", a, seen["neck"].double(), a)
    # float32 source indices in PyTorch vs float64 here: differences of a few 1e-5
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4)


# --- 5. the shared RoPE module --------------------------------------------------------------------


def test_codetr_blocks_share_the_rope_tables():
    expert = CodetrExpert(CodetrExpert.spec.tiny_config)
    glob = expert.config.global_attn_indexes
    for i, block in enumerate(expert.blocks):
        assert block.attn.rope is (expert.rope_glb if i in glob else expert.rope_win)

    state = {k: v.clone() for k, v in expert.state_dict().items()}
    assert "blocks.0.attn.rope.freqs_cos" in state and "rope_win.freqs_cos" in state
    new_table = torch.randn_like(state["rope_win.freqs_cos"])
    # only the top-level entry is given: the blocks see it because they hold the same module
    state = {k: v for k, v in state.items() if ".attn.rope." not in k} | {"rope_win.freqs_cos": new_table}
    result = expert.load_state_dict(state, strict=False)
    assert all(".attn.rope." in k for k in result.missing_keys) and not result.unexpected_keys
    assert torch.equal(expert.blocks[0].attn.rope.freqs_cos, new_table)
    assert torch.equal(expert.blocks[2].attn.rope.freqs_cos, new_table)
    assert torch.equal(expert.blocks[1].attn.rope.freqs_cos, state["rope_glb.freqs_cos"])

    # a strict, assign=True load into a meta-built expert (the loader's path) keeps the sharing
    full = {k: v.clone() for k, v in expert.state_dict().items()}
    with torch.device("meta"):
        fresh = CodetrExpert(CodetrExpert.spec.tiny_config)
    fresh.load_state_dict(full, strict=True, assign=True)
    assert fresh.blocks[0].attn.rope is fresh.rope_win
    assert torch.equal(fresh.blocks[0].attn.rope.freqs_cos, new_table)


# --- preprocessing --------------------------------------------------------------------------------


def test_high_res_preprocess_is_shared_and_pads_with_the_mean_colour():
    inputs = [cls.spec.tiny_config.image_input() for cls in EXPERTS]  # equal sizes and colours: one tensor
    assert inputs[0] == inputs[1] == inputs[2]
    cfg = SamHExpert.spec.tiny_config  # 64 px
    image = Image.new("RGB", (40, 20), (200, 30, 90))  # landscape: padded above and below
    out = cfg.image_input()(image)
    assert out.shape == (3, 64, 64) and out.dtype == torch.float32
    mean, std = torch.tensor(CLIP_MEAN)[:, None], torch.tensor(CLIP_STD)[:, None]
    pad = (torch.tensor([122.0, 116.0, 104.0])[:, None] / 255 - mean) / std
    red = (torch.tensor([200.0, 30.0, 90.0])[:, None] / 255 - mean) / std
    torch.testing.assert_close(out[:, 2, 10:50], pad.expand(3, 40), rtol=0, atol=1e-5)
    torch.testing.assert_close(out[:, 32, 10:50], red.expand(3, 40), rtol=0, atol=1e-5)
