//! Speed and memory of sclip on CPU, for the table in BENCHMARKS.md.
//!
//!     cargo bench --bench speed -- [--arch b16|b32] [--model DIR] [--runs N] [--images N] [--json]
//!
//! Without --model it builds a checkpoint of the real ViT-B/16 (or B/32) shapes with random weights
//! under target/bench-models/ (timings do not depend on the values). It measures, in SCLIP's VOC21
//! setting (56 names × 80 templates = 4480 prompts):
//! - text cold: class embeddings from scratch (shared template prefixes, no padding);
//! - text naive: the same prompts, grouped by length but each run whole (no prefix sharing);
//! - text warm: the same, served from the on-disk cache;
//! - vision: the 6 crops of a 448×336 image through the CSA tower, in one batch;
//! - image: the whole segmentation of that image;
//! - modes: the faster optional modes (whole-image inference, f16 and bf16 weights) on that image, each
//!   timed and compared with the exact path: the largest probability difference and the share of
//!   pixels with the same label. f16 and bf16 embed the classes with their own weights too, as
//!   `sclip segment --dtype` does;
//! - folder: `sclip segment` over a folder of 500×375 JPEGs, in images per minute once the model is
//!   loaded, and the peak RSS of the whole run.
//!
//! `python3 tests/reference/bench.py` runs this and the PyTorch reference side by side.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use sclip::model::config::ClipConfig;
use sclip::segment::normalize;
use sclip::{
    presets, ClassEmbeddings, Clip, DenseAttention, EmbeddingCache, ModelFiles, PromptTokenizer, SegmentOptions,
    Segmentation, Segmenter, Templates, Vocabulary,
};

// As in the sclip binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Options {
    arch: String,
    model: Option<PathBuf>,
    runs: usize,
    images: usize,
    json: bool,
}

fn parse_options() -> Options {
    let mut options = Options { arch: "b16".into(), model: None, runs: 3, images: 20, json: false };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--arch" => options.arch = value(),
            "--model" => options.model = Some(value().into()),
            "--runs" => options.runs = value().parse().expect("--runs takes a number"),
            "--images" => options.images = value().parse().expect("--images takes a number"),
            "--json" => options.json = true,
            // cargo bench passes --bench to every bench binary.
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    options
}

fn config_json(arch: &str) -> String {
    let patch = match arch {
        "b16" => 16,
        "b32" => 32,
        other => panic!("--arch is b16 or b32, not {other}"),
    };
    format!(
        r#"{{"projection_dim": 512,
  "text_config": {{"hidden_size": 512, "intermediate_size": 2048, "num_attention_heads": 8,
                   "num_hidden_layers": 12, "max_position_embeddings": 77, "vocab_size": 49408,
                   "hidden_act": "quick_gelu"}},
  "vision_config": {{"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
                     "num_hidden_layers": 12, "image_size": 224, "patch_size": {patch},
                     "hidden_act": "quick_gelu"}}}}"#
    )
}

/// A `CLIPModel` checkpoint of the real shapes with random weights, made once.
fn random_checkpoint(arch: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/bench-models").join(format!("clip-vit-{arch}-random"));
    if dir.join("model.safetensors").is_file() {
        return dir;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let tokenizer = root.join("tests/fixtures/models/tiny-p16/tokenizer.json");
    std::fs::copy(&tokenizer, dir.join("tokenizer.json")).unwrap();
    let config = config_json(arch);
    std::fs::write(dir.join("config.json"), &config).unwrap();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let config: ClipConfig = serde_json::from_str(&config).unwrap();
    Clip::new(vb, config, PromptTokenizer::from_file(&tokenizer).unwrap(), String::new()).unwrap();
    varmap.save(dir.join("model.safetensors")).unwrap();
    dir
}

/// Seconds per run of `f`, after one untimed run that warms caches, thread pools and the allocator (the
/// PyTorch side warms up the same way).
fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> Vec<f64> {
    std::hint::black_box(f());
    (0..runs)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(f());
            started.elapsed().as_secs_f64()
        })
        .collect()
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn test_image(width: u32, height: u32) -> image::RgbImage {
    let asset = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/chelsea.jpg");
    let photo = sclip::read_rgb(&asset, sclip::DEFAULT_MAX_PIXELS).unwrap();
    image::imageops::resize(&photo, width, height, image::imageops::FilterType::Triangle)
}

/// How far `mode` is from `exact`: the largest probability difference over every class and pixel, and the
/// percentage of pixels with the same label.
fn agreement(exact: &Segmentation, mode: &Segmentation) -> (f32, f64) {
    let max_diff = exact.probs.iter().zip(&mode.probs).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    let same = exact.labels.iter().zip(&mode.labels).filter(|(a, b)| a == b).count();
    (max_diff, 100.0 * same as f64 / exact.labels.len() as f64)
}

/// Runs `sclip segment` over `count` JPEGs. Returns the steady rate in images per minute, timed from
/// the first JSON line to the last so that loading the model does not count, and the peak RSS in MB.
fn folder_run(model: &Path, count: usize, cache: &Path) -> (f64, f64) {
    let work = tempfile::tempdir().unwrap();
    let (images, out) = (work.path().join("images"), work.path().join("out"));
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    let photo = test_image(500, 375);
    for i in 0..count {
        let flipped = if i % 2 == 0 { photo.clone() } else { image::imageops::flip_horizontal(&photo) };
        flipped.save(images.join(format!("{i:05}.jpg"))).unwrap();
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_sclip"))
        .args(["segment", "--preset", "voc21", "--json", "-v", "--write", "mask", "--model"])
        .arg(model)
        .arg("--out-dir")
        .arg(&out)
        .arg(&images)
        .env("SCLIP_CACHE_DIR", cache)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let arrivals: Vec<Instant> =
        BufReader::new(child.stdout.take().unwrap()).lines().map(|line| (line.unwrap(), Instant::now()).1).collect();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && arrivals.len() == count, "sclip failed: {stderr}");
    let steady = arrivals[count - 1].duration_since(arrivals[0]).as_secs_f64();
    let per_min = (count - 1) as f64 / steady * 60.0;
    let peak = stderr
        .lines()
        .find_map(|l| l.strip_prefix("peak memory: ").and_then(|v| v.strip_suffix(" MB")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    (per_min, peak)
}

fn main() {
    let options = parse_options();
    let model_dir = options.model.clone().unwrap_or_else(|| random_checkpoint(&options.arch));
    let clip = Clip::load(&ModelFiles::in_dir(&model_dir).unwrap(), &Device::Cpu, DType::F32).unwrap();
    let preset = presets::find("voc21").unwrap();
    let vocabulary = Vocabulary::parse_names_file(preset.names).unwrap();
    let names: Vec<&str> = vocabulary.queries().map(|(_, q)| q).collect();
    let templates = Templates::imagenet80();
    let prompts: Vec<Vec<u32>> = names
        .iter()
        .flat_map(|n| templates.as_slice().iter().map(|t| clip.tokenizer.encode(&Templates::fill(t, n)).unwrap()))
        .collect();
    eprintln!("{} prompts, {} runs each", prompts.len(), options.runs);

    let text_cold = time(options.runs, || sclip::text::embed_queries(&clip, &names, &templates).unwrap());
    eprintln!("text cold      {:.3} s", median(&text_cold));
    let text_naive = time(options.runs, || sclip::text::embed_prompts(&clip, &prompts).unwrap());
    eprintln!("text naive     {:.3} s", median(&text_naive));
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = EmbeddingCache::new(cache_dir.path());
    ClassEmbeddings::with_cache(&clip, vocabulary.clone(), &templates, &cache).unwrap();
    let text_warm =
        time(options.runs, || ClassEmbeddings::with_cache(&clip, vocabulary.clone(), &templates, &cache).unwrap());
    eprintln!("text warm      {:.4} s", median(&text_warm));

    let image = test_image(448, 336);
    let pixels = normalize(&image, &Device::Cpu).unwrap();
    let crops: Vec<Tensor> = sclip::segment::sliding_windows(336, 448, 224, 112)
        .iter()
        .map(|w| pixels.narrow(1, w.y, w.h).unwrap().narrow(2, w.x, w.w).unwrap())
        .collect();
    let batch = Tensor::stack(&crops, 0).unwrap();
    let vision = time(options.runs, || clip.dense_image_features(&batch, DenseAttention::Csa).unwrap());
    eprintln!("vision 6 crops {:.3} s", median(&vision));
    let classes = ClassEmbeddings::with_cache(&clip, vocabulary.clone(), &templates, &cache).unwrap();
    let options_voc21 = SegmentOptions {
        short_side: preset.short_side,
        logit_scale: preset.logit_scale,
        prob_threshold: preset.prob_threshold,
        area_threshold: preset.area_threshold,
        ..SegmentOptions::default()
    };
    let segmenter = Segmenter::new(&clip, classes.clone(), options_voc21.clone()).unwrap();
    let per_image = time(options.runs, || segmenter.segment(&image).unwrap());
    eprintln!("per image      {:.3} s", median(&per_image));

    let exact = segmenter.segment(&image).unwrap();
    // Random weights can map every pixel to one class, which makes label agreement trivially 100 %.
    let labels_present = exact.labels.iter().collect::<std::collections::BTreeSet<_>>().len();
    eprintln!("exact labels   {labels_present} distinct classes in the label map");
    let mut modes = serde_json::Map::new();
    let mut measure_mode = |name: &str, segmenter: &Segmenter| {
        let seconds = time(options.runs, || segmenter.segment(&image).unwrap());
        let (max_prob_diff, label_agreement) = agreement(&exact, &segmenter.segment(&image).unwrap());
        eprintln!(
            "{name:<14} {:.3} s, max probability difference {max_prob_diff:.2e}, labels {label_agreement:.2} % the same",
            median(&seconds)
        );
        modes.insert(
            name.into(),
            serde_json::json!({"image_s": seconds, "max_prob_diff": max_prob_diff, "label_agreement_pct": label_agreement}),
        );
    };
    let whole_image = SegmentOptions { slide: None, ..options_voc21.clone() };
    measure_mode("whole image", &Segmenter::new(&clip, classes, whole_image).unwrap());
    for (name, dtype) in [("f16", DType::F16), ("bf16", DType::BF16)] {
        let reduced = Clip::load(&ModelFiles::in_dir(&model_dir).unwrap(), &Device::Cpu, dtype).unwrap();
        let classes = ClassEmbeddings::new(&reduced, vocabulary.clone(), &templates).unwrap();
        measure_mode(name, &Segmenter::new(&reduced, classes, options_voc21.clone()).unwrap());
    }

    assert!(options.images >= 2, "--images must be at least 2 to time a steady rate");
    let (per_min, peak_rss_mb) = folder_run(&model_dir, options.images, cache_dir.path());
    eprintln!("folder         {per_min:.1} images/min over {} images, peak RSS {peak_rss_mb:.0} MB", options.images);

    if options.json {
        let record = serde_json::json!({
            "arch": options.arch,
            "model_dir": model_dir,
            "threads": std::thread::available_parallelism().map_or(1, |n| n.get()),
            "runs": options.runs,
            "prompts": prompts.len(),
            "text_cold_s": text_cold,
            "text_naive_s": text_naive,
            "text_warm_s": text_warm,
            "vision_crops_s": vision,
            "image_s": per_image,
            "modes": modes,
            "exact_labels_present": labels_present,
            "folder_images": options.images,
            "folder_images_per_min": per_min,
            "peak_rss_mb": peak_rss_mb,
        });
        println!("{record}");
    }
}
