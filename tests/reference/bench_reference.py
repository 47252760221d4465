"""Time the float32 PyTorch reference of SCLIP (make_fixtures.py) on CPU, as the baseline for sclip's speed bench.

    python3 tests/reference/bench_reference.py --model-dir DIR [--runs 3] [--images 20] [--pad77] [--threads N]

DIR is a Hugging Face CLIPModel directory (config.json, model.safetensors, tokenizer.json), normally the
random-weight ViT-B/16 or B/32 that `cargo bench --bench speed` writes under target/bench-models/. The setting
is SCLIP's VOC21 config: the 56 query names of src/presets/cls_voc21.txt x 80 templates = 4480 prompts, crop 224,
stride 112, short side 336, logit scale 65, prob_thd 0.1, area_thd 0.1, CSA in the last block. All model code
is make_fixtures.py's; only the batched crop forward is written here. Everything runs under
torch.inference_mode() with torch.set_num_threads(--threads, default os.cpu_count()).

Each measurement is repeated --runs times; the JSON holds one entry in seconds per run:

    text_longest_s             tokenize the 4480 prompts, encode them in batches of 256, each batch padded to
                               its longest prompt, then per name: normalize, mean over 80, normalize
    text_pad77_s               (--pad77 only) SCLIP's own loop: one batch of 80 prompts per name, padded to 77
    vision_crops_s             the 6 224x224 crops of a 448x336 image through the CSA tower in one batch
                               (tokens after post_layernorm + projection)
    vision_crops_sequential_s  the same 6 crops as 6 forward calls of batch 1 (what SCLIP does)
    image_s                    one 448x336 RGB image, query embeddings precomputed: resize (a no-op size
                               here), normalize, SCLIP's slide loop (6 windows, cosine logits, bilinear
                               upsampling, averaging), resize to the original size, postprocess -> labels
    folder_s                   --images JPEGs of 500x375 (made once in a temp dir from assets/*.jpg, cycling),
                               one after the other: PIL decode -> resize to 448x336 -> as image_s

plus folder_images, folder_images_per_min (from the median folder_s), threads, runs, prompts, torch and
peak_rss_mb (ru_maxrss of this process). The test image is assets/chelsea.jpg, centre-cropped to 4:3 and
resized to 448x336. Every measurement but the folder loop and the pad-77 text (which would cost minutes)
starts with one untimed warm-up call, as the Rust bench does. Two checks run before timing: padding to the
longest prompt gives the same text features as padding to 77 (for the first name; for all 56 with
--pad77), and the batched crop forward equals the per-crop one. The queries that image_s and the folder
use are the result of the last text_longest run.

Progress goes to stderr; the last stdout line is the JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer
from transformers import CLIPModel
from transformers.utils import logging as hf_logging

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import (  # noqa: E402
    IMAGENET80, REPO, block, embed_prompts, image_tokens, load_tokenizer, normalize, pad_ids,
    position_table, postprocess, query_embeddings, resize_keep_ratio, segment_logits, slide_windows,
    text_features, tokenize,
)

NAMES_FILE = REPO / "src" / "presets" / "cls_voc21.txt"
ASSETS = REPO / "assets"
SHORT_SIDE, CROP, STRIDE = 336, 224, 112
LOGIT_SCALE, PROB_THD, AREA_THD = 65.0, 0.1, 0.1
IMAGE_WH = (448, 336)
FOLDER_WH = (500, 375)
TEXT_BATCH = 256


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def read_names(path: Path) -> tuple[list[str], list[int]]:
    """Query names and the class of each: line i is class i, synonyms separated by ', ' (SCLIP's get_cls_idx)."""
    queries, query_class = [], []
    for i, line in enumerate(path.read_text(encoding="utf-8").rstrip("\n").split("\n")):
        for name in line.split(", "):
            queries.append(name)
            query_class.append(i)
    return queries, query_class


def photo(path: Path, size: tuple[int, int]) -> Image.Image:
    """The image at path, centre-cropped to the aspect ratio of size (w, h) and resized to it."""
    img = Image.open(path).convert("RGB")
    w, h = img.size
    tw, th = size
    cw, ch = min(w, h * tw // th), min(h, w * th // tw)
    left, top = (w - cw) // 2, (h - ch) // 2
    return img.crop((left, top, left + cw, top + ch)).resize(size, Image.Resampling.BICUBIC)


def normalized_mean(features: torch.Tensor, per_query: int) -> torch.Tensor:
    """SCLIP's query embedding from consecutive groups of per_query prompt features: normalize, mean, normalize."""
    f = features / features.norm(dim=-1, keepdim=True)
    f = f.view(-1, per_query, f.shape[-1]).mean(1)
    return f / f.norm(dim=-1, keepdim=True)


def text_longest(model: CLIPModel, tok: Tokenizer, prompts: list[str]) -> torch.Tensor:
    rows = [tokenize(tok, p) for p in prompts]
    chunks = [rows[i:i + TEXT_BATCH] for i in range(0, len(rows), TEXT_BATCH)]
    features = torch.cat([text_features(model, pad_ids(c, max(map(len, c)))) for c in chunks])
    return normalized_mean(features, len(IMAGENET80))


def crop_tokens(model: CLIPModel, crops: torch.Tensor) -> torch.Tensor:
    """make_fixtures.image_tokens (CSA in the last block) for a batch of equal-size crops -> [B, 1 + N, proj]."""
    vm = model.vision_model
    emb = vm.embeddings
    patches = emb.patch_embedding(crops)
    b, d, gh, gw = patches.shape
    x = torch.cat([emb.class_embedding.expand(b, 1, d), patches.flatten(2).transpose(1, 2)], dim=1)
    x = vm.pre_layrnorm(x + position_table(emb.position_embedding.weight, gh, gw))
    *early, last = vm.encoder.layers
    for layer in early:
        x = block(layer, x)
    return model.visual_projection(vm.post_layernorm(block(last, x, "csa")))


def segment(model: CLIPModel, img: np.ndarray, queries: torch.Tensor, query_class: list[int]) -> torch.Tensor:
    """SCLIP's label map for one RGB uint8 image [H, W, 3] in the VOC21 setting."""
    pixels = normalize(resize_keep_ratio(img, SHORT_SIDE))
    logits, _ = segment_logits(model, pixels, queries, "csa", CROP, STRIDE, True, img.shape[:2])
    _, labels = postprocess(logits, query_class, max(query_class) + 1, LOGIT_SCALE, PROB_THD, AREA_THD)
    return labels


def timed(name: str, runs: int, fn, warm_up: bool = True):
    """Seconds of each of runs calls of fn, after one untimed warm-up call as the Rust bench makes (skipped
    where that would cost minutes and the model is warm already), and the last call's result."""
    if warm_up:
        fn()
    seconds = []
    for run in range(runs):
        start = time.perf_counter()
        out = fn()
        seconds.append(time.perf_counter() - start)
        log(f"{name} run {run + 1}/{runs}: {seconds[-1]:.3f} s")
    return seconds, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="HF CLIPModel directory with tokenizer.json")
    parser.add_argument("--runs", type=int, default=3, help="repetitions of each measurement")
    parser.add_argument("--images", type=int, default=20, help="images in the folder measurement")
    parser.add_argument("--pad77", action="store_true", help="also time SCLIP's padding to 77 (about 10x slower)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads")
    args = parser.parse_args()

    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    model = CLIPModel.from_pretrained(args.model_dir, attn_implementation="eager").eval()
    tok = load_tokenizer((args.model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    names, query_class = read_names(NAMES_FILE)
    prompts = [t.format(n) for n in names for t in IMAGENET80]
    image = np.array(photo(ASSETS / "chelsea.jpg", IMAGE_WH))
    windows = slide_windows(IMAGE_WH[1], IMAGE_WH[0], CROP, STRIDE)
    pixels = normalize(image)
    crops = torch.cat([pixels[:, :, y1:y2, x1:x2] for y1, x1, y2, x2 in windows])
    result = dict(model_dir=str(args.model_dir), threads=args.threads, runs=args.runs, prompts=len(prompts),
                  torch=torch.__version__)
    log(f"{args.model_dir}: {len(names)} queries x {len(IMAGENET80)} templates, {len(windows)} crops, "
        f"{args.threads} threads, torch {torch.__version__}")

    with torch.inference_mode(), tempfile.TemporaryDirectory() as tmp:
        longest = text_longest(model, tok, prompts[:len(IMAGENET80)])
        full = normalized_mean(embed_prompts(model, tok, prompts[:len(IMAGENET80)]), len(IMAGENET80))
        assert (longest - full).abs().max() < 1e-5, "padding to the longest prompt changed the text features"
        batched = crop_tokens(model, crops)
        single = torch.stack([image_tokens(model, crop[None], "csa") for crop in crops])
        scale = single.abs().max()
        assert (batched - single).abs().max() < 1e-4 * scale, "the batched crop forward differs from per-crop"

        result["text_longest_s"], queries = timed("text, padded to longest", args.runs,
                                                  lambda: text_longest(model, tok, prompts))
        if args.pad77:
            result["text_pad77_s"], pad77 = timed("text, padded to 77 (SCLIP)", args.runs,
                                                  lambda: query_embeddings(model, tok, names, "imagenet80"),
                                                  warm_up=False)
            assert (pad77 - queries).abs().max() < 1e-5, "padding to 77 and to the longest prompt disagree"
        result["vision_crops_s"], _ = timed("vision, 6 crops batched", args.runs, lambda: crop_tokens(model, crops))
        result["vision_crops_sequential_s"], _ = timed(
            "vision, 6 crops one by one", args.runs,
            lambda: [image_tokens(model, crop[None], "csa") for crop in crops])

        result["image_s"], _ = timed("image 448x336", args.runs,
                                     lambda: segment(model, image, queries, query_class))

        assets = sorted(ASSETS.glob("*.jpg"))
        paths = [Path(tmp) / f"{i:04d}.jpg" for i in range(args.images)]
        for i, path in enumerate(paths):
            photo(assets[i % len(assets)], FOLDER_WH).save(path, quality=90)

        def folder() -> None:
            for path in paths:
                segment(model, np.array(Image.open(path).convert("RGB")), queries, query_class)

        result["folder_images"] = args.images
        result["folder_s"], _ = timed(f"folder of {args.images} images", args.runs, folder, warm_up=False)
        result["folder_images_per_min"] = 60 * args.images / statistics.median(result["folder_s"])

    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


if __name__ == "__main__":
    main()
