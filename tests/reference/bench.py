"""Benchmark sclip against the PyTorch reference on the same model and print a Markdown table of the medians.

    python3 tests/reference/bench.py [--arch b16] [--runs 3] [--images 20] [--pad77] [--model DIR] [--json-out FILE]

1. Runs `cargo bench --bench speed -- --arch ARCH --runs R --images N --json` from the repository root
   (its stderr streams through; the last stdout line is its JSON result). Without --model the bench writes a
   random-weight CLIPModel of the real ViT-B/16 or B/32 shapes under target/bench-models/.
2. Runs bench_reference.py on the model_dir the bench reports, with the bench's thread count.
3. Prints the machine, the torch version, both exact commands and a table: metric | sclip median |
   PyTorch median | ratio (sclip / PyTorch). For times and memory a ratio below 1 favours sclip; for
   images per minute a ratio above 1 does. Rows:

    text cold         sclip text_cold_s (4480 VOC21 prompts, no cache) vs PyTorch text_longest_s
    text naive        sclip text_naive_s (without the shared template prefix) vs the same text_longest_s
    text warm         sclip text_warm_s (cache hit); no PyTorch counterpart
    text vs pad-77    (--pad77 only) sclip text_cold_s vs SCLIP's own padding to 77, text_pad77_s
    vision 6 crops    sclip vision_crops_s vs PyTorch's batched crops, then vs its 6 batch-1 calls
    per image         image_s on both sides (one 448x336 image, slide windows to labels)
    folder            folder_images_per_min on both sides
    peak RSS          peak_rss_mb of each process

A second table gives sclip's faster optional modes (whole-image inference, f16 and bf16 weights): time per
image against sclip's exact path, largest probability difference and label agreement with it.

--json-out FILE saves {machine, commands, sclip, pytorch} with both raw results.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REFERENCE = Path(__file__).resolve().with_name("bench_reference.py")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_json(cmd: list[str]) -> dict:
    """Run cmd in the repository root, stderr passed through, and parse its last stdout line as JSON."""
    log(f"$ {shlex.join(cmd)}")
    proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.exit(f"bench.py: `{shlex.join(cmd)}` failed with exit code {proc.returncode}")
    lines = proc.stdout.strip().splitlines()
    if not lines:
        sys.exit(f"bench.py: `{shlex.join(cmd)}` printed nothing on stdout")
    return json.loads(lines[-1])


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def median(value) -> float | None:
    """Median of a list of per-run values; a single number is returned as is, a missing one as None."""
    if value is None:
        return None
    return statistics.median(value) if isinstance(value, list) else float(value)


def seconds(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x * 1000:.1f} ms" if x < 1 else f"{x:.2f} s"


def plain(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}"


def table(sclip: dict, reference: dict, images: int) -> list[str]:
    rows = [
        ("text cold, 4480 prompts (vs PyTorch padded to longest)", "text_cold_s", "text_longest_s", seconds),
        ("text naive, no shared prefix (vs PyTorch padded to longest)", "text_naive_s", "text_longest_s", seconds),
        ("text warm, cache hit", "text_warm_s", None, seconds),
    ]
    if "text_pad77_s" in reference:
        rows.append(("text cold (vs SCLIP's padding to 77)", "text_cold_s", "text_pad77_s", seconds))
    rows += [
        ("vision, 6 crops in one batch (vs PyTorch batched)", "vision_crops_s", "vision_crops_s", seconds),
        ("vision, 6 crops in one batch (vs PyTorch 6 calls, as SCLIP)", "vision_crops_s",
         "vision_crops_sequential_s", seconds),
        ("per image, 448x336", "image_s", "image_s", seconds),
        (f"folder of {images} images, images/min (higher is better)", "folder_images_per_min",
         "folder_images_per_min", plain),
        ("peak RSS, MB", "peak_rss_mb", "peak_rss_mb", plain),
    ]
    lines = ["| metric | sclip median | PyTorch median | ratio sclip/PyTorch |", "|---|---:|---:|---:|"]
    for label, s_key, t_key, fmt in rows:
        s = median(sclip.get(s_key))
        t = median(reference.get(t_key)) if t_key else None
        ratio = f"{s / t:.2f}×" if s is not None and t else "—"
        lines.append(f"| {label} | {fmt(s)} | {fmt(t)} | {ratio} |")
    return lines


def modes_table(sclip: dict) -> list[str]:
    exact = median(sclip["image_s"])
    lines = ["| mode (sclip, one 448x336 image) | per image | vs exact f32 | max probability difference "
             "| labels the same |", "|---|---:|---:|---:|---:|"]
    for name, mode in sclip["modes"].items():
        s = median(mode["image_s"])
        lines.append(f"| {name} | {seconds(s)} | {s / exact:.2f}× | {mode['max_prob_diff']:.1e} "
                     f"| {mode['label_agreement_pct']:.2f} % |")
    lines += ["", f"The exact label map of this image uses {sclip['exact_labels_present']} distinct classes."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--arch", choices=["b16", "b32"], default="b16", help="model shapes of the bench")
    parser.add_argument("--runs", type=int, default=3, help="repetitions of each measurement, both sides")
    parser.add_argument("--images", type=int, default=20, help="images in the folder measurement, both sides")
    parser.add_argument("--pad77", action="store_true", help="also time SCLIP's text padding to 77 (slow)")
    parser.add_argument("--model", type=Path, help="CLIPModel directory for the bench instead of random weights")
    parser.add_argument("--json-out", type=Path, help="save both raw results to this file")
    args = parser.parse_args()

    rust_cmd = ["cargo", "bench", "--bench", "speed", "--", "--arch", args.arch]
    if args.model:
        rust_cmd += ["--model", str(args.model)]
    rust_cmd += ["--runs", str(args.runs), "--images", str(args.images), "--json"]
    sclip = run_json(rust_cmd)

    model_dir = REPO / sclip["model_dir"]  # an absolute model_dir stays as is
    torch_cmd = [sys.executable, str(REFERENCE.relative_to(REPO)), "--model-dir", str(model_dir),
                 "--runs", str(args.runs), "--images", str(args.images), "--threads", str(sclip["threads"])]
    if args.pad77:
        torch_cmd.append("--pad77")
    reference = run_json(torch_cmd)

    machine = f"{cpu_model()}, {os.cpu_count()} cores"
    lines = [
        f"Machine: {machine}; threads: sclip {sclip['threads']}, PyTorch {reference['threads']}; "
        f"torch {reference['torch']}; model: {sclip['arch']} at {sclip['model_dir']}; "
        f"medians of {args.runs} runs; ratio = sclip / PyTorch (below 1 favours sclip, except images/min).",
        "",
        f"    {shlex.join(rust_cmd)}",
        f"    {shlex.join(torch_cmd)}",
        "",
        *table(sclip, reference, args.images),
        "",
        *modes_table(sclip),
    ]
    print("\n".join(lines))
    if args.json_out:
        commands = {"sclip": shlex.join(rust_cmd), "pytorch": shlex.join(torch_cmd)}
        args.json_out.write_text(json.dumps(dict(machine=machine, commands=commands, sclip=sclip, pytorch=reference),
                                            indent=1) + "\n")


if __name__ == "__main__":
    main()
