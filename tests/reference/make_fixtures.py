"""Regenerate the parity fixtures under tests/fixtures/ (run from the repository root).

    python3 tests/reference/make_fixtures.py

This is an independent float32 CPU reference of SCLIP inference (../shared/SCLIP_SPEC.md), written on
top of the Hugging Face CLIP modules. It builds two tiny CLIP checkpoints with seeded random weights,
runs the SCLIP pipeline on three small photos and stores the intermediate and final tensors the Rust
crate is compared against. Every run produces the same files (fixed seeds, one CPU thread).

Layout (paths relative to tests/fixtures/):

    models/tiny-p16/           config.json, model.safetensors (HF CLIPModel names), tokenizer.json
    models/tiny-p14-112/       same files, a second architecture (see MODELS below)
    images/cat.png             RGB, 120 wide x 90 high: skimage.data.chelsea()[15:285, 45:405], 3x3 box mean
    images/coffee.png          RGB, 60 x 40: skimage.data.coffee(), 10x10 box mean
    images/astronaut_tall.png  RGB, 70 x 150: skimage.data.astronaut()[0:450, 150:360], 3x3 box mean
    templates_imagenet80.txt   SCLIP's 80 OpenAI ImageNet templates, one a line, "{}" = the name
    golden/cases.json          index of the golden cases (sections below)
    golden/*.safetensors       the tensors of each case

The photos are scikit-image sample data without copyright restrictions: "Chelsea the cat" (CC0, Stefan
van der Walt), "coffee" (CC0, Rachel Michetti), the NASA photo of Eileen Collins (public domain). Box
means are rounded half to even.

cases.json sections (every "file"/"image" path is relative to tests/fixtures/):

    tokenizer: [{text, ids}]  ids from the real CLIP tokenizer.json: [49406] + BPE + [49407], no padding.
    text:      [{model, templates, queries, prompts, file}]
               query_embeddings  f32 [Q, proj]  per name: normalize each template's feature, mean, normalize
               prompt_embeddings f32 [P, proj]  raw projected feature of each single prompt (not normalized)
    crops:     [{model, image, short_side, window: [y1, x1, y2, x2] (resized coords), attention, file}]
               resized  u8 [H', W', 3]  the whole resized image
               features f32 [1+N, proj] post_layernorm + visual_projection of every token (CLS first),
                                        before L2 normalization; N = (h//p) * (w//p) row-major
    segment:   [{model, image, labels, templates, short_side, crop, stride, slide, logit_scale,
                 prob_threshold, area_threshold, attention, resized_hw, windows, file}]
               labels: class i = list of its query names; queries are the flattened synonyms in order.
               windows: the slide windows [y1, x1, y2, x2] in visiting order ([] when slide is false).
               query_embeddings f32 [Q, proj]
               probs   f32 [C, H, W]  softmax over queries, max over synonyms, then the area threshold's
                                      zeroing (what SCLIP returns as seg_logits)
               labels  i64 [H, W]     argmax of probs, then max prob < prob_threshold -> 0

Preprocessing, defined here exactly (the Rust side implements the same):
  * PNG -> RGB uint8 [H, W, 3].
  * s = min(2048 / max(h, w), short_side / min(h, w)); new size (int(w*s + 0.5), int(h*s + 0.5)).
  * Bilinear, half-pixel centres, no antialias. Per axis (in -> out): src = (dst + 0.5) * (in / out) - 0.5
    in float64; src < 0 -> 0; x0 = floor(src); if x0 >= in - 1 then x0 = x1 = in - 1 and frac = 0,
    else x1 = x0 + 1 and frac = src - x0. Weights w0 = f32(1 - frac), w1 = f32(frac) (computed in
    float64, then cast). Pass 1 along x (width) for every input row: t = f32(p[x0]) * w0 + f32(p[x1]) * w1;
    pass 2 along y (height) on the float32 rows: o = t[y0] * w0 + t[y1] * w1. All arithmetic float32
    (two products and one sum, no fused multiply-add). Then round half to even and clamp to 0..255 -> u8.
  * x = (f32(u8) - mean) / std per RGB channel, mean [122.771, 116.746, 104.094],
    std [68.501, 66.632, 70.323] (float32 subtraction then division).

Token embeddings: to keep the checkpoints small, every row of token_embedding is zero except the ids
that occur in a tokenized prompt the fixtures use: every template of both sets ("imagenet80",
"photo") filled with every query name of the text and segment cases and with EXTRA_WORDS, the
tokenizer cases' texts, plus ids 0, 49406 and 49407.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from tokenizers import Tokenizer
from transformers import CLIPConfig, CLIPModel
from transformers.utils import logging as hf_logging

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
SHARED_TOKENIZER = REPO.parent / "shared" / "clip-tokenizer" / "tokenizer.json"

BOS, EOS, PAD, CONTEXT = 49406, 49407, 0, 77
MEAN = np.array([122.771, 116.746, 104.094], dtype=np.float32)
STD = np.array([68.501, 66.632, 70.323], dtype=np.float32)
LONG_CAP = 2048

# prompts/imagenet_template.py `openai_imagenet_template` in SCLIP, in its order.
IMAGENET80 = [
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.",
    "a photo of the hard to see {}.", "a low resolution photo of the {}.", "a rendering of a {}.",
    "graffiti of a {}.", "a bad photo of the {}.", "a cropped photo of the {}.", "a tattoo of a {}.",
    "the embroidered {}.", "a photo of a hard to see {}.", "a bright photo of a {}.",
    "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.", "a drawing of a {}.",
    "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.", "a close-up photo of a {}.",
    "a black and white photo of the {}.", "a painting of the {}.", "a painting of a {}.",
    "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.", "a blurry photo of the {}.", "a photo of the {}.",
    "a good photo of the {}.", "a rendering of the {}.", "a {} in a video game.", "a photo of one {}.",
    "a doodle of a {}.", "a close-up photo of the {}.", "a photo of a {}.", "the origami {}.",
    "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.", "a origami {}.",
    "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.",
    "a photo of a nice {}.", "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.",
    "art of a {}.", "a sketch of the {}.", "a embroidered {}.", "a pixelated photo of a {}.",
    "itap of the {}.", "a jpeg corrupted photo of the {}.", "a good photo of a {}.", "a plushie {}.",
    "a photo of the nice {}.", "a photo of the small {}.", "a photo of the weird {}.",
    "the cartoon {}.", "art of the {}.", "a drawing of the {}.", "a photo of the large {}.",
    "a black and white photo of a {}.", "the plushie {}.", "a dark photo of a {}.", "itap of a {}.",
    "graffiti of the {}.", "a toy {}.", "itap of my {}.", "a photo of a cool {}.",
    "a photo of a small {}.", "a tattoo of the {}.",
]
TEMPLATES = {"imagenet80": IMAGENET80, "photo": ["a photo of a {}."]}

# Common words whose embeddings are kept (not zeroed) so a Rust test can use them beyond the cases below.
EXTRA_WORDS = ["person", "dog", "car", "tree", "sky", "road", "building", "grass", "water", "background"]

# vision / text sizes; everything else is the HF default (layer_norm_eps 1e-5, 3 channels, ...).
MODELS = {
    "tiny-p16": dict(
        seed=16,
        projection_dim=24,
        vision=dict(hidden_size=48, num_attention_heads=4, num_hidden_layers=3, intermediate_size=96,
                    patch_size=16, image_size=224, hidden_act="quick_gelu"),
        text=dict(hidden_size=32, num_attention_heads=2, num_hidden_layers=2, intermediate_size=64,
                  hidden_act="quick_gelu"),
    ),
    "tiny-p14-112": dict(
        seed=8,
        projection_dim=16,
        vision=dict(hidden_size=40, num_attention_heads=2, num_hidden_layers=2, intermediate_size=80,
                    patch_size=14, image_size=112, hidden_act="gelu"),
        text=dict(hidden_size=24, num_attention_heads=3, num_hidden_layers=2, intermediate_size=48,
                  hidden_act="gelu"),
    ),
}

# Seeded re-initialisation (see reinitialise): Linear/Conv weights N(0, linear_gain^2 / fan_in), biases
# N(0, bias^2), LayerNorm weight 1 + N(0, norm^2) and bias N(0, norm^2), token/position/class embeddings
# N(0, embedding^2). HF's own init maps every token to nearly the same direction, so all class
# probabilities would be uniform. With these values (and the seeds in MODELS, picked among a few) names
# and image regions differ clearly: the label maps below use 3-5 classes.
INIT = dict(linear_gain=2.0, bias=0.1, norm=0.1, embedding=0.5)

TOKENIZER_TEXTS = [
    "a photo of a flamingo.",
    "A Photo OF a FLAMINGO!",
    "a   photo \t of\n a  cat   ",
    "3 cats and 12 dogs in 2024",
    "itap of my tv monitor.",
    "the dog's ball, isn't it? (yes) -- #1 @home",
    "a close-up photo of a crème brûlée.",
    "über café naïve",
    "a photo of a potted-plant / dining table.",
    "a photo of a 日本 garden.",
]

# Text-embedding cases: (model, template set, query names, single prompts).
TEXT_CASES = [
    ("tiny-p16", "imagenet80", ["flamingo", "cat", "tabby cat", "sky", "tv monitor"],
     ["a photo of a flamingo.", "a photo of a cat.", "itap of my tv monitor."]),
    ("tiny-p16", "photo", ["flamingo", "cat", "sky"], ["a photo of a sky.", "a tattoo of the cat."]),
    ("tiny-p14-112", "imagenet80", ["flamingo", "cat", "coffee cup"], ["a photo of a flamingo."]),
    ("tiny-p14-112", "photo", ["cat", "wall", "person"], ["a photo of a cat."]),
]

# Crop cases: (model, image, short_side, window [y1, x1, y2, x2] in resized coordinates).
CROP_CASES = [
    # cat.png resized to 336 rows x 448 cols; its last slide window, a full 224 crop: table used as is.
    ("tiny-p16", "cat.png", 336, [112, 224, 336, 448]),
    # 100 rows x 150 cols, smaller than the crop: one whole-image window, grid 6 x 9 (150 % 16 != 0),
    # position table resampled from 14 x 14.
    ("tiny-p16", "coffee.png", 100, [0, 0, 100, 150]),
    # 224 rows x 299 cols (non-integer scale); a native 112 window of the 112-px model.
    ("tiny-p14-112", "cat.png", 224, [56, 112, 168, 224]),
    # 214 rows x 100 cols: a 214 x 100 window, grid 15 x 7 resampled from the 8 x 8 table.
    ("tiny-p14-112", "astronaut_tall.png", 100, [0, 0, 214, 100]),
]

CAT_LABELS = [["cat", "kitten", "tabby cat"], ["wall"], ["floor", "carpet"], ["sofa"]]
BACKGROUND_LABELS = [["sky", "wall", "tree", "grass", "floor"], ["cat", "kitten"], ["dog"], ["chair"],
                     ["bottle"]]

SEGMENT_DEFAULTS = dict(templates="imagenet80", short_side=336, crop=224, stride=112, slide=True,
                        logit_scale=40.0, prob_threshold=0.0, area_threshold=None, attention="csa")
SEGMENT_CASES = [
    dict(name="p16_cat", model="tiny-p16", image="cat.png", labels=CAT_LABELS),
    dict(name="p16_coffee_small", model="tiny-p16", image="coffee.png", short_side=100,
         labels=[["coffee cup", "mug"], ["plate"], ["table"]]),
    dict(name="p16_tall", model="tiny-p16", image="astronaut_tall.png",
         labels=[["person", "astronaut"], ["flag"], ["sky"], ["building"]]),
    dict(name="p16_cat_thresholds", model="tiny-p16", image="cat.png", labels=BACKGROUND_LABELS,
         logit_scale=65.0, prob_threshold=0.3, area_threshold=0.2),
    dict(name="p16_cat_whole", model="tiny-p16", image="cat.png", labels=CAT_LABELS, slide=False),
    dict(name="p16_cat_vanilla", model="tiny-p16", image="cat.png", labels=CAT_LABELS,
         attention="vanilla"),
    dict(name="p14_cat_crop112", model="tiny-p14-112", image="cat.png", labels=CAT_LABELS,
         crop=112, stride=56),
    dict(name="p14_cat_crop224_photo", model="tiny-p14-112", image="cat.png", labels=CAT_LABELS,
         templates="photo"),
]


# ----------------------------------------------------------------------------------------------- images

def box_mean(img: np.ndarray, k: int) -> np.ndarray:
    h, w, c = img.shape
    blocks = img[: h - h % k, : w - w % k].astype(np.float64).reshape(h // k, k, w // k, k, c)
    return np.rint(blocks.mean(axis=(1, 3))).astype(np.uint8)


def write_images() -> None:
    # Imported here: only this step needs scikit-image.
    from skimage import data

    images = {
        "cat.png": box_mean(data.chelsea()[15:285, 45:405], 3),
        "coffee.png": box_mean(data.coffee(), 10),
        "astronaut_tall.png": box_mean(data.astronaut()[0:450, 150:360], 3),
    }
    out = FIXTURES / "images"
    out.mkdir(parents=True, exist_ok=True)
    for name, pixels in images.items():
        Image.fromarray(pixels, "RGB").save(out / name)


def load_image(name: str) -> np.ndarray:
    return np.array(Image.open(FIXTURES / "images" / name).convert("RGB"))


def resized_size(h: int, w: int, short_side: int) -> tuple[int, int]:
    s = min(LONG_CAP / max(h, w), short_side / min(h, w))
    return int(h * s + 0.5), int(w * s + 0.5)


def axis_taps(n_in: int, n_out: int):
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.maximum(src, 0.0)
    x0 = np.floor(src).astype(np.int64)
    at_edge = x0 >= n_in - 1
    x0 = np.minimum(x0, n_in - 1)
    x1 = np.minimum(x0 + 1, n_in - 1)
    frac = np.where(at_edge, 0.0, src - x0)
    return x0, x1, (1.0 - frac).astype(np.float32), frac.astype(np.float32)


def resize_bilinear(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    h, w, _ = img.shape
    pixels = img.astype(np.float32)
    x0, x1, wx0, wx1 = axis_taps(w, out_w)
    rows = pixels[:, x0] * wx0[None, :, None] + pixels[:, x1] * wx1[None, :, None]
    y0, y1, wy0, wy1 = axis_taps(h, out_h)
    out = rows[y0] * wy0[:, None, None] + rows[y1] * wy1[:, None, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def resize_keep_ratio(img: np.ndarray, short_side: int) -> np.ndarray:
    return resize_bilinear(img, *resized_size(img.shape[0], img.shape[1], short_side))


def torch_resize_gap(img: np.ndarray, resized: np.ndarray) -> int:
    """Largest grey-level gap between our resize and torch's bilinear (same definition, other code)."""
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    ref = F.interpolate(x, size=resized.shape[:2], mode="bilinear", align_corners=False, antialias=False)
    ref = ref[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    return int(np.abs(ref.astype(np.int32) - resized.astype(np.int32)).max())


def normalize(resized: np.ndarray) -> torch.Tensor:
    x = (resized.astype(np.float32) - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


# ------------------------------------------------------------------------------------------------ models

def clip_config(spec: dict) -> CLIPConfig:
    # The towers' own projection_dim is unused by CLIPModel; set it anyway so no reader sees HF's 512.
    proj = spec["projection_dim"]
    text = dict(spec["text"], vocab_size=49408, max_position_embeddings=CONTEXT,
                bos_token_id=BOS, eos_token_id=EOS, pad_token_id=1, projection_dim=proj)
    vision = dict(spec["vision"], projection_dim=proj)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=proj)


def reinitialise(model: CLIPModel, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)

    def normal(t: torch.Tensor, std: float, mean: float = 0.0) -> None:
        t.copy_(mean + std * torch.randn(t.shape, generator=g))

    with torch.no_grad():
        for _, module in sorted(model.named_modules(), key=lambda kv: kv[0]):
            if isinstance(module, torch.nn.Linear):
                normal(module.weight, INIT["linear_gain"] / math.sqrt(module.in_features))
                if module.bias is not None:
                    normal(module.bias, INIT["bias"])
            elif isinstance(module, torch.nn.Conv2d):
                fan_in = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
                normal(module.weight, INIT["linear_gain"] / math.sqrt(fan_in))
            elif isinstance(module, torch.nn.LayerNorm):
                normal(module.weight, INIT["norm"], mean=1.0)
                normal(module.bias, INIT["norm"])
            elif isinstance(module, torch.nn.Embedding):
                normal(module.weight, INIT["embedding"])
        normal(model.vision_model.embeddings.class_embedding, INIT["embedding"])


def build_model(name: str, kept_ids: list[int], tokenizer_json: str) -> None:
    spec = MODELS[name]
    model = CLIPModel(clip_config(spec)).eval()
    reinitialise(model, spec["seed"])
    with torch.no_grad():
        table = model.text_model.embeddings.token_embedding.weight
        keep = torch.zeros(table.shape[0], dtype=torch.bool)
        keep[kept_ids] = True
        table[~keep] = 0.0
    out = FIXTURES / "models" / name
    model.save_pretrained(out)
    assert (out / "model.safetensors").exists(), "expected a safetensors checkpoint"
    (out / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")


# -------------------------------------------------------------------------------------------------- text

def read_tokenizer_json() -> str:
    # ../shared is outside the published repository; a checkout without it reuses its committed copy.
    path = SHARED_TOKENIZER if SHARED_TOKENIZER.exists() else FIXTURES / "models" / "tiny-p16" / "tokenizer.json"
    return path.read_text(encoding="utf-8")


def load_tokenizer(tokenizer_json: str) -> Tokenizer:
    tok = Tokenizer.from_str(tokenizer_json)
    tok.no_padding()
    tok.no_truncation()
    return tok


def tokenize(tok: Tokenizer, text: str) -> list[int]:
    ids = tok.encode(text).ids
    assert ids[0] == BOS and ids[-1] == EOS and len(ids) <= CONTEXT, (text, ids)
    return ids


def pad_ids(rows: list[list[int]], length: int) -> torch.Tensor:
    return torch.tensor([r + [PAD] * (length - len(r)) for r in rows], dtype=torch.long)


def attention(attn, x: torch.Tensor, kind: str, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-head attention of an HF CLIPAttention's weights on x [B, T, D], before out_proj."""
    b, t, d = x.shape
    heads = attn.num_heads
    head_dim = d // heads
    scale = head_dim ** -0.5

    def split(y: torch.Tensor) -> torch.Tensor:
        return y.view(b, t, heads, head_dim).transpose(1, 2)

    q, k, v = split(attn.q_proj(x)), split(attn.k_proj(x)), split(attn.v_proj(x))
    if kind == "csa":
        # SCLIP's correlative self-attention: two self-correlations, summed without renormalising.
        weights = (q @ q.transpose(-1, -2) * scale).softmax(-1) + (k @ k.transpose(-1, -2) * scale).softmax(-1)
    elif kind == "vanilla":
        scores = q @ k.transpose(-1, -2) * scale
        if mask is not None:
            scores = scores + mask
        weights = scores.softmax(-1)
    else:
        raise ValueError(kind)
    return (weights @ v).transpose(1, 2).reshape(b, t, d)


def block(layer, x: torch.Tensor, kind: str = "vanilla", mask: torch.Tensor | None = None) -> torch.Tensor:
    """One pre-LN CLIPEncoderLayer; only the attention weights depend on `kind`."""
    x = x + layer.self_attn.out_proj(attention(layer.self_attn, layer.layer_norm1(x), kind, mask))
    return x + layer.mlp(layer.layer_norm2(x))


def text_features(model: CLIPModel, ids: torch.Tensor) -> torch.Tensor:
    """Projected feature at the first EOS of each row of ids [B, T] (any padding after it)."""
    tm = model.text_model
    t = ids.shape[1]
    x = tm.embeddings.token_embedding(ids) + tm.embeddings.position_embedding.weight[:t]
    causal = torch.full((t, t), float("-inf")).triu(1)
    for layer in tm.encoder.layers:
        x = block(layer, x, "vanilla", causal)
    x = tm.final_layer_norm(x)
    first_eos = (ids == EOS).int().argmax(-1)
    return model.text_projection(x[torch.arange(ids.shape[0]), first_eos])


def embed_prompts(model: CLIPModel, tok: Tokenizer, prompts: list[str]) -> torch.Tensor:
    return text_features(model, pad_ids([tokenize(tok, p) for p in prompts], CONTEXT))


def query_embeddings(model: CLIPModel, tok: Tokenizer, names: list[str], templates: str) -> torch.Tensor:
    rows = []
    for name in names:
        f = embed_prompts(model, tok, [t.format(name) for t in TEMPLATES[templates]])
        f = f / f.norm(dim=-1, keepdim=True)
        f = f.mean(0)
        rows.append(f / f.norm())
    return torch.stack(rows)


# ------------------------------------------------------------------------------------------------ vision

def position_table(table: torch.Tensor, gh: int, gw: int) -> torch.Tensor:
    """The position table for a gh x gw grid, resampled as SCLIP does when the token count differs."""
    n_table = table.shape[0] - 1
    if gh * gw == n_table:
        return table
    n = math.isqrt(n_table)
    grid = table[1:].reshape(1, n, n, -1).permute(0, 3, 1, 2)
    # SCLIP passes scale_factor = (g + 0.1) / n, not a size: the sampling positions follow that factor.
    grid = F.interpolate(grid, scale_factor=((gh + 0.1) / n, (gw + 0.1) / n), mode="bicubic",
                         align_corners=False)
    assert grid.shape[-2:] == (gh, gw), grid.shape
    return torch.cat([table[:1], grid.permute(0, 2, 3, 1).reshape(gh * gw, -1)])


def image_tokens(model: CLIPModel, pixels: torch.Tensor, kind: str) -> torch.Tensor:
    """post_layernorm + visual_projection of every token [1 + gh*gw, proj] for pixels [1, 3, h, w]."""
    vm = model.vision_model
    emb = vm.embeddings
    patches = emb.patch_embedding(pixels)
    _, d, gh, gw = patches.shape
    x = torch.cat([emb.class_embedding.view(1, 1, d), patches.flatten(2).transpose(1, 2)], dim=1)
    x = x + position_table(emb.position_embedding.weight, gh, gw)
    x = vm.pre_layrnorm(x)
    *early, last = vm.encoder.layers
    for layer in early:
        x = block(layer, x)
    x = block(last, x, kind)
    return model.visual_projection(vm.post_layernorm(x))[0]


def dense_logits(model: CLIPModel, pixels: torch.Tensor, queries: torch.Tensor, kind: str,
                 size: tuple[int, int]) -> torch.Tensor:
    """Cosine logits of one crop [Q, size] (SCLIP's forward_feature)."""
    p = model.config.vision_config.patch_size
    gh, gw = pixels.shape[-2] // p, pixels.shape[-1] // p
    f = image_tokens(model, pixels, kind)
    f = f / f.norm(dim=-1, keepdim=True)
    logits = (f[1:] @ queries.T).T.reshape(1, -1, gh, gw)
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)[0]


def slide_windows(h: int, w: int, crop: int, stride: int) -> list[list[int]]:
    rows = max(h - crop + stride - 1, 0) // stride + 1
    cols = max(w - crop + stride - 1, 0) // stride + 1
    windows = []
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * stride + crop, h), min(c * stride + crop, w)
            windows.append([max(y2 - crop, 0), max(x2 - crop, 0), y2, x2])
    return windows


def segment_logits(model, pixels, queries, kind, crop, stride, slide, ori_hw):
    """Cosine logits [Q, H, W] at the original size and the windows used."""
    if not slide:
        return dense_logits(model, pixels, queries, kind, ori_hw), []
    _, _, h, w = pixels.shape
    total = torch.zeros(queries.shape[0], h, w)
    count = torch.zeros(1, h, w)
    windows = slide_windows(h, w, crop, stride)
    for y1, x1, y2, x2 in windows:
        total[:, y1:y2, x1:x2] += dense_logits(model, pixels[:, :, y1:y2, x1:x2], queries, kind,
                                               (y2 - y1, x2 - x1))
        count[:, y1:y2, x1:x2] += 1
    assert bool((count > 0).all())
    mean = (total / count)[None]
    return F.interpolate(mean, size=ori_hw, mode="bilinear", align_corners=False)[0], windows


def postprocess(logits, query_class, num_classes, logit_scale, prob_threshold, area_threshold):
    probs = (logits * logit_scale).softmax(0)
    if num_classes != len(query_class):
        cls = torch.tensor(query_class)
        probs = torch.stack([probs[cls == c].max(0).values for c in range(num_classes)])
    if area_threshold is not None:
        pred = probs.argmax(0)
        areas = torch.stack([(pred == c).sum() for c in range(1, num_classes)]).float()
        survives = areas > area_threshold * areas.sum()
        probs[1:] *= survives.float()[:, None, None]
    labels = probs.argmax(0)
    labels[probs.max(0).values < prob_threshold] = 0
    return probs, labels


def top2_margin(probs: torch.Tensor) -> torch.Tensor:
    top = probs.topk(2, dim=0).values
    return top[0] - top[1]


# ----------------------------------------------------------------------------------------------- fixtures

def all_query_names() -> list[str]:
    names = set(EXTRA_WORDS)
    for _, _, queries, _ in TEXT_CASES:
        names.update(queries)
    for case in SEGMENT_CASES:
        names.update(q for synonyms in case["labels"] for q in synonyms)
    return sorted(names)


def kept_token_ids(tok: Tokenizer) -> list[int]:
    texts = [t.format(n) for n in all_query_names() for ts in TEMPLATES.values() for t in ts]
    texts += TOKENIZER_TEXTS + [p for *_, prompts in TEXT_CASES for p in prompts]
    ids = {PAD, BOS, EOS}
    for text in texts:
        ids.update(tokenize(tok, text))
    return sorted(ids)


def write_text_cases(models, tok, index) -> None:
    for i, (model_name, templates, queries, prompts) in enumerate(TEXT_CASES):
        model = models[model_name]
        file = f"golden/text_{i}_{model_name}_{templates}.safetensors"
        save_file({"query_embeddings": query_embeddings(model, tok, queries, templates).contiguous(),
                   "prompt_embeddings": embed_prompts(model, tok, prompts).contiguous()},
                  str(FIXTURES / file))
        index["text"].append(dict(model=model_name, templates=templates, queries=queries, prompts=prompts,
                                  file=file))


def write_crop_cases(models, index) -> None:
    for model_name, image, short_side, window in CROP_CASES:
        resized = resize_keep_ratio(load_image(image), short_side)
        y1, x1, y2, x2 = window
        assert y2 <= resized.shape[0] and x2 <= resized.shape[1]
        features = image_tokens(models[model_name], normalize(resized)[:, :, y1:y2, x1:x2], "csa")
        file = f"golden/crop_{model_name}_{Path(image).stem}_{short_side}.safetensors"
        save_file({"resized": torch.from_numpy(resized.copy()), "features": features.contiguous()},
                  str(FIXTURES / file))
        index["crops"].append(dict(model=model_name, image=f"images/{image}", short_side=short_side,
                                   window=window, attention="csa", file=file))
        print(f"crop {file}: resized {resized.shape[1]}x{resized.shape[0]}, features {tuple(features.shape)}")


def write_segment_cases(models, tok, index) -> None:
    for case in SEGMENT_CASES:
        c = dict(SEGMENT_DEFAULTS, **case)
        model = models[c["model"]]
        img = load_image(c["image"])
        resized = resize_keep_ratio(img, c["short_side"])
        queries = [q for synonyms in c["labels"] for q in synonyms]
        query_class = [i for i, synonyms in enumerate(c["labels"]) for _ in synonyms]
        q = query_embeddings(model, tok, queries, c["templates"])
        logits, windows = segment_logits(model, normalize(resized), q, c["attention"], c["crop"], c["stride"],
                                         c["slide"], img.shape[:2])
        probs, labels = postprocess(logits, query_class, len(c["labels"]), c["logit_scale"],
                                    c["prob_threshold"], c["area_threshold"])
        file = f"golden/segment_{c['name']}.safetensors"
        save_file({"query_embeddings": q.contiguous(), "probs": probs.contiguous(),
                   "labels": labels.contiguous()}, str(FIXTURES / file))
        index["segment"].append(dict(
            model=c["model"], image=f"images/{c['image']}", labels=c["labels"], templates=c["templates"],
            short_side=c["short_side"], crop=c["crop"], stride=c["stride"], slide=c["slide"],
            logit_scale=c["logit_scale"], prob_threshold=c["prob_threshold"],
            area_threshold=c["area_threshold"], attention=c["attention"],
            resized_hw=list(resized.shape[:2]), windows=windows, file=file))

        margin = top2_margin(probs)
        used = sorted(labels.unique().tolist())
        print(f"segment {c['name']}: {img.shape[1]}x{img.shape[0]} -> {resized.shape[1]}x{resized.shape[0]}, "
              f"{len(windows)} windows, margin>1e-3 on {(margin > 1e-3).float().mean():.1%} of pixels, "
              f"labels {used} with counts {labels.flatten().bincount(minlength=len(c['labels'])).tolist()}, "
              f"margin>1e-2 on {(margin > 1e-2).float().mean():.1%}")
        if c["area_threshold"] is not None or c["prob_threshold"] > 0:
            report_threshold_effect(logits, query_class, c, labels)


def report_threshold_effect(logits, query_class, c, labels) -> None:
    """Show that each threshold of a case actually changes pixels (else the case tests nothing)."""
    n = len(c["labels"])
    _, plain = postprocess(logits, query_class, n, c["logit_scale"], 0.0, None)
    _, area_only = postprocess(logits, query_class, n, c["logit_scale"], 0.0, c["area_threshold"])
    areas = plain.flatten().bincount(minlength=n)[1:].tolist()
    print(f"  class areas before the area threshold {areas} (cut: > {c['area_threshold']} * {sum(areas)}); "
          f"area_threshold changes {(area_only != plain).sum().item()} px, "
          f"prob_threshold then changes {(labels != area_only).sum().item()} px")


# ------------------------------------------------------------------------------------------- cross-checks

def cross_checks(models, tok) -> None:
    prompts = ["a photo of a flamingo.", "a bad photo of a tabby cat.", "a photo of many tv monitor."]
    for name, model in models.items():
        rows = [tokenize(tok, p) for p in prompts]
        full = text_features(model, pad_ids(rows, CONTEXT))
        longest = text_features(model, pad_ids(rows, max(map(len, rows))))
        hf = model.get_text_features(input_ids=pad_ids(rows, CONTEXT))
        hf = hf if isinstance(hf, torch.Tensor) else hf.pooler_output
        # Relative to the largest component, since the raw projected features are several units large.
        scale = full.abs().max()
        pad_gap, hf_gap = (full - longest).abs().max() / scale, (full - hf).abs().max() / scale
        print(f"{name}: text padded to longest vs 77: max |diff| / max |x| {pad_gap:.2e}; "
              f"vs HF get_text_features: {hf_gap:.2e} (max |x| {scale:.1f})")
        assert pad_gap < 1e-6 and hf_gap < 1e-5

        size = model.config.vision_config.image_size
        img = normalize(resize_keep_ratio(load_image("cat.png"), 336))[:, :, :size, :size]
        vanilla = image_tokens(model, img, "vanilla")
        csa = image_tokens(model, img, "csa")
        hidden = model.vision_model(pixel_values=img).last_hidden_state
        hf = model.visual_projection(model.vision_model.post_layernorm(hidden))[0]
        print(f"{name}: vanilla vs HF vision model: max |diff| {(vanilla - hf).abs().max():.2e}; "
              f"CSA vs vanilla: max |diff| {(csa - vanilla).abs().max():.2e}")
        assert (vanilla - hf).abs().max() < 1e-4 and (csa - vanilla).abs().max() > 1e-2

    gaps = []
    for image, short_side in [("cat.png", 336), ("coffee.png", 100), ("astronaut_tall.png", 336),
                              ("cat.png", 224), ("astronaut_tall.png", 100), ("cat.png", 60)]:
        img = load_image(image)
        gaps.append(torch_resize_gap(img, resize_keep_ratio(img, short_side)))
    print(f"resize vs torch bilinear (align_corners=False): max grey-level gap per case {gaps}")
    assert max(gaps) <= 1


def main() -> None:
    hf_logging.disable_progress_bar()
    torch.manual_seed(0)  # HF's own init runs before reinitialise; keep even that reproducible.
    torch.set_num_threads(1)  # same reduction order on every machine
    torch.set_grad_enabled(False)

    tokenizer_json = read_tokenizer_json()
    tok = load_tokenizer(tokenizer_json)
    for sub in ("models", "images", "golden"):
        shutil.rmtree(FIXTURES / sub, ignore_errors=True)
    (FIXTURES / "golden").mkdir(parents=True)
    write_images()
    (FIXTURES / "templates_imagenet80.txt").write_text("\n".join(IMAGENET80) + "\n")
    assert len(IMAGENET80) == 80

    kept = kept_token_ids(tok)
    print(f"token_embedding rows kept: {len(kept)} of 49408")
    for name in MODELS:
        build_model(name, kept, tokenizer_json)
    # Reload from disk so that the goldens come from exactly the saved weights. Eager attention makes
    # HF's own forward (used only in cross_checks) the plain softmax formula.
    models = {name: CLIPModel.from_pretrained(FIXTURES / "models" / name, attn_implementation="eager").eval()
              for name in MODELS}

    index = {"tokenizer": [], "text": [], "crops": [], "segment": []}
    for text in TOKENIZER_TEXTS:
        index["tokenizer"].append({"text": text, "ids": tokenize(tok, text)})
    assert index["tokenizer"][0]["ids"] == [49406, 320, 1125, 539, 320, 30323, 269, 49407]

    cross_checks(models, tok)
    write_text_cases(models, tok, index)
    write_crop_cases(models, index)
    write_segment_cases(models, tok, index)
    (FIXTURES / "golden" / "cases.json").write_text(json.dumps(index, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
