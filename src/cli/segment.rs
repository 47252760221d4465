//! `sclip segment`: load the model and the class embeddings once, then segment every input.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use image::RgbImage;
use sclip::render::{class_color, class_fractions, hex, mask_png, overlay, probs_npy, rgb_png};
use sclip::{
    presets, ClassEmbeddings, Clip, DenseAttention, EmbeddingCache, FetchOptions, ModelSource, Prepared,
    SegmentOptions, Segmentation, Segmenter, Slide, Templates, Vocabulary,
};
use serde::Serialize;

use crate::cli::args::{AttentionName, DTypeName, DeviceName, OutputKind, SegmentArgs, StdoutPng};
use crate::cli::inputs::{expand, in_shard, name_outputs, Input};
use crate::cli::output::{check_writable_dir, one_line, write_atomic, Printer, Verbosity};
use crate::cli::ExitStatus;

/// Decoded images waiting for the model: one in hand and one in the channel keeps the model busy
/// without holding many images in memory.
const DECODE_AHEAD: usize = 1;

pub fn run(args: SegmentArgs, printer: &mut Printer) -> Result<ExitStatus> {
    let plan = Plan::from_args(&args)?;
    if let Some(threads) = args.threads {
        // candle's CPU kernels size their thread pools from this variable when they first run.
        std::env::set_var("RAYON_NUM_THREADS", threads.max(1).to_string());
    }
    let inputs = name_outputs(expand(&args.inputs, args.recursive, args.null)?);
    let inputs: Vec<Input> = match args.shard {
        Some(shard) => inputs.into_iter().filter(|i| in_shard(i, shard)).collect(),
        None => inputs,
    };
    if plan.to_stdout.is_some() && inputs.len() != 1 {
        bail!("--stdout writes one PNG, but {} inputs were given", inputs.len());
    }
    if !plan.files.is_empty() {
        check_writable_dir(&args.out_dir)?;
    }
    let (todo, skipped): (Vec<Input>, Vec<Input>) =
        inputs.into_iter().partition(|i| !(args.skip_existing && plan.all_outputs_exist(&args.out_dir, i)));
    if !skipped.is_empty() {
        printer.info(&format!("skipping {} inputs whose outputs exist", skipped.len()));
    }

    let clip = load_model(&args, printer)?;
    let started = Instant::now();
    let cache = (!args.no_cache).then(EmbeddingCache::default_dir).flatten().map(EmbeddingCache::new);
    let classes = match &cache {
        Some(cache) => ClassEmbeddings::with_cache(&clip, plan.vocabulary.clone(), &plan.templates, cache)?,
        None => ClassEmbeddings::new(&clip, plan.vocabulary.clone(), &plan.templates)?,
    };
    printer.detail(&format!(
        "text embeddings of {} names for {} classes in {:.3} s{}",
        classes.queries.dim(0)?,
        plan.vocabulary.len(),
        started.elapsed().as_secs_f64(),
        cache.as_ref().map_or_else(String::new, |c| format!(" (cache: {})", c.dir().display()))
    ));
    let segmenter = Segmenter::new(&clip, classes, plan.options.clone())?;

    printer.start_progress(todo.len());
    let mut stdout = std::io::stdout().lock();
    let mut failures: Vec<PathBuf> = Vec::new();
    let mut done = 0usize;
    let (decoded_tx, decoded_rx) = mpsc::sync_channel(DECODE_AHEAD);
    let (max_pixels, options, patch_size) = (args.max_pixels, plan.options.clone(), clip.vision.patch_size());
    let decode_order = todo.clone();
    // Decoding and resizing the next image overlaps with the model working on this one.
    std::thread::spawn(move || {
        for input in decode_order {
            let started = Instant::now();
            let decode = || -> Result<_> {
                let image = sclip::read_rgb(&input.path, max_pixels)?;
                let prepared = options.prepare(&image, patch_size).with_context(|| display(&input.path))?;
                Ok(Decoded { image, prepared, time: started.elapsed() })
            };
            let decoded = std::panic::catch_unwind(decode)
                .unwrap_or_else(|_| Err(anyhow::anyhow!("{}: the decoder crashed", display(&input.path))));
            if decoded_tx.send((input, decoded)).is_err() {
                break;
            }
        }
    });
    for (input, decoded) in decoded_rx {
        let outcome = decoded.and_then(|decoded| process(&input, &decoded, &segmenter, &plan, &args, &mut stdout));
        printer.advance(&input.stem);
        match outcome {
            Ok(Some(summary)) => {
                done += 1;
                printer.info(&summary);
            }
            Ok(None) => {
                done += 1;
            }
            Err(err) if is_broken_pipe(&err) => break,
            Err(err) => {
                let message = one_line(&format!("{err:#}"));
                printer.error(&message);
                if args.json
                    && write_json_line(&mut stdout, &ErrorRecord { input: display(&input.path), error: &message })
                        .is_err()
                {
                    break;
                }
                failures.push(input.path.clone());
            }
        }
    }
    printer.finish_progress();
    if let Some(peak) = peak_memory_mb() {
        printer.detail(&format!("peak memory: {peak} MB"));
    }
    if failures.is_empty() {
        if done + skipped.len() > 1 {
            printer.info(&format!("{done} images segmented, {} skipped", skipped.len()));
        }
        Ok(ExitStatus::Success)
    } else {
        let paths: Vec<String> = failures.iter().map(|path| display(path)).collect();
        printer.error(&format!("{} of {} inputs failed: {}", failures.len(), failures.len() + done, paths.join(", ")));
        Ok(ExitStatus::Failure)
    }
}

/// Everything decided from the arguments before any work starts, so usage mistakes surface at once.
struct Plan {
    vocabulary: Vocabulary,
    /// The class names, in output order.
    names: Vec<String>,
    templates: Templates,
    options: SegmentOptions,
    files: Vec<OutputKind>,
    to_stdout: Option<StdoutPng>,
}

impl Plan {
    fn from_args(args: &SegmentArgs) -> Result<Self> {
        let preset = args.preset.as_deref().map(|name| presets::find(name).expect("clap accepts only preset names"));
        let vocabulary = if let Some(labels) = &args.labels {
            Vocabulary::parse_labels(labels)?.with_background()?
        } else if let Some(file) = &args.labels_file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("{}: cannot read labels file", file.display()))?;
            Vocabulary::parse_names_file(&text).with_context(|| format!("{}", file.display()))?
        } else {
            Vocabulary::parse_names_file(preset.expect("clap requires one source of classes").names)?
        };
        let templates = match args.templates.as_str() {
            "imagenet80" => Templates::imagenet80(),
            "photo" => Templates::photo(),
            file => Templates::from_file(file.as_ref())?,
        };
        let defaults = SegmentOptions::default();
        let options = SegmentOptions {
            short_side: args.short_side.or(preset.map(|p| p.short_side)).unwrap_or(defaults.short_side),
            long_side_cap: args.max_long_side,
            slide: (!args.no_slide).then_some(Slide { crop: args.crop, stride: args.stride }),
            logit_scale: args.logit_scale.or(preset.map(|p| p.logit_scale)).unwrap_or(defaults.logit_scale),
            prob_threshold: args.prob_threshold.or(preset.map(|p| p.prob_threshold)).unwrap_or(defaults.prob_threshold),
            area_threshold: args.area_threshold.or(preset.and_then(|p| p.area_threshold)),
            attention: match args.attention {
                AttentionName::Csa => DenseAttention::Csa,
                AttentionName::Vanilla => DenseAttention::Vanilla,
            },
        };
        let mut files: Vec<OutputKind> = match &args.write {
            Some(kinds) => kinds.iter().copied().filter(|k| *k != OutputKind::None).collect(),
            None if args.stdout.is_some() => Vec::new(),
            None => vec![OutputKind::Overlay, OutputKind::Mask],
        };
        if args.save_probs {
            files.push(OutputKind::Probs);
        }
        let mut seen = HashSet::new();
        files.retain(|k| seen.insert(*k));
        let names = vocabulary.classes().iter().map(|c| c.name.clone()).collect();
        Ok(Self { vocabulary, names, templates, options, files, to_stdout: args.stdout })
    }

    fn output_path(&self, out_dir: &std::path::Path, input: &Input, kind: OutputKind) -> PathBuf {
        let suffix = match kind {
            OutputKind::Overlay => "overlay.png",
            OutputKind::Mask => "mask.png",
            OutputKind::Probs => "probs.npy",
            OutputKind::None => unreachable!("`none` is dropped when the plan is made"),
        };
        out_dir.join(format!("{}.{suffix}", input.stem))
    }

    fn all_outputs_exist(&self, out_dir: &std::path::Path, input: &Input) -> bool {
        !self.files.is_empty() && self.files.iter().all(|&k| self.output_path(out_dir, input, k).is_file())
    }
}

fn load_model(args: &SegmentArgs, printer: &Printer) -> Result<Clip> {
    let device = match args.device {
        DeviceName::Cpu => Device::Cpu,
        DeviceName::Cuda if !candle_core::utils::cuda_is_available() => {
            bail!("this sclip was built without CUDA support; rebuild it with `--features cuda`")
        }
        DeviceName::Metal if !candle_core::utils::metal_is_available() => {
            bail!("this sclip was built without Metal support; rebuild it with `--features metal`")
        }
        DeviceName::Cuda => Device::new_cuda(0)?,
        DeviceName::Metal => Device::new_metal(0)?,
    };
    let dtype = match args.dtype {
        DTypeName::F32 => DType::F32,
        DTypeName::F16 => DType::F16,
        DTypeName::Bf16 => DType::BF16,
    };
    let mut fetch = FetchOptions::from_env();
    fetch.offline |= args.offline;
    fetch.progress = printer.verbosity > Verbosity::Quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let source = ModelSource::parse(&args.model, args.revision.clone());
    let started = Instant::now();
    let files = source.resolve(&fetch)?;
    let clip = Clip::load(&files, &device, dtype)?;
    printer.detail(&format!(
        "loaded {} ({}) in {:.2} s",
        files.identity,
        files.weights.display(),
        started.elapsed().as_secs_f64()
    ));
    Ok(clip)
}

#[derive(Serialize)]
struct ImageRecord<'a> {
    input: String,
    outputs: BTreeMap<&'static str, String>,
    width: u32,
    height: u32,
    classes: Vec<ClassRecord<'a>>,
    background: BackgroundRecord,
    timings_ms: Timings,
}

#[derive(Serialize)]
struct ClassRecord<'a> {
    index: usize,
    name: &'a str,
    queries: &'a [String],
    color: String,
    fraction: f64,
}

#[derive(Serialize)]
struct BackgroundRecord {
    index: usize,
    prob_threshold: f32,
    rule: &'static str,
}

#[derive(Serialize)]
struct Timings {
    decode: f64,
    segment: f64,
    write: f64,
}

#[derive(Serialize)]
struct ErrorRecord<'a> {
    input: String,
    error: &'a str,
}

const BACKGROUND_RULE: &str = "pixels whose best class probability is below prob_threshold get class 0";

/// Segments one decoded image, writes its outputs, and returns the human summary line (none in JSON
/// or stdout mode, where stdout carries the data).
/// An input read and resized, ready for the model.
struct Decoded {
    image: RgbImage,
    prepared: Prepared,
    time: std::time::Duration,
}

fn process(
    input: &Input,
    decoded: &Decoded,
    segmenter: &Segmenter,
    plan: &Plan,
    args: &SegmentArgs,
    stdout: &mut impl Write,
) -> Result<Option<String>> {
    let started = Instant::now();
    // A bug must cost one image, not the batch.
    let Decoded { image, prepared, time: decode_time } = decoded;
    let segmentation = std::panic::catch_unwind(AssertUnwindSafe(|| segmenter.segment_prepared(prepared)))
        .map_err(|_| anyhow::anyhow!("internal error while segmenting (please report this)"))?
        .with_context(|| display(&input.path))?;
    let segment_time = started.elapsed();

    let started = Instant::now();
    let names = &plan.names;
    let classes = names.len();
    let render = |kind: OutputKind| -> Vec<u8> {
        match kind {
            OutputKind::Overlay => rgb_png(&overlay(image, &segmentation, names, args.alpha)),
            OutputKind::Mask => mask_png(&segmentation, classes),
            OutputKind::Probs => probs_npy(&segmentation, classes),
            OutputKind::None => unreachable!("`none` is dropped when the plan is made"),
        }
    };
    let mut outputs = BTreeMap::new();
    for &kind in &plan.files {
        let path = plan.output_path(&args.out_dir, input, kind);
        write_atomic(&path, &render(kind)).with_context(|| format!("{}: cannot write output", path.display()))?;
        outputs.insert(kind_name(kind), display(&path));
    }
    if let Some(png) = plan.to_stdout {
        let kind = match png {
            StdoutPng::Overlay => OutputKind::Overlay,
            StdoutPng::Mask => OutputKind::Mask,
        };
        stdout.write_all(&render(kind))?;
        stdout.flush()?;
        outputs.insert(kind_name(kind), "-".into());
    }
    let write_time = started.elapsed();

    let fractions = class_fractions(&segmentation, classes);
    if args.json {
        let record = ImageRecord {
            input: display(&input.path),
            outputs,
            width: segmentation.width,
            height: segmentation.height,
            classes: plan
                .vocabulary
                .classes()
                .iter()
                .enumerate()
                .map(|(index, class)| ClassRecord {
                    index,
                    name: &class.name,
                    queries: &class.queries,
                    color: hex(class_color(index)),
                    fraction: fractions[index],
                })
                .collect(),
            background: BackgroundRecord {
                index: 0,
                prob_threshold: plan.options.prob_threshold,
                rule: BACKGROUND_RULE,
            },
            timings_ms: Timings {
                decode: millis(*decode_time),
                segment: millis(segment_time),
                write: millis(write_time),
            },
        };
        write_json_line(stdout, &record)?;
        return Ok(None);
    }
    if plan.to_stdout.is_some() {
        return Ok(None);
    }
    Ok(Some(summary(input, &segmentation, names, &fractions, &outputs)))
}

fn summary(
    input: &Input,
    segmentation: &Segmentation,
    names: &[String],
    fractions: &[f64],
    outputs: &BTreeMap<&str, String>,
) -> String {
    let mut ranked: Vec<(usize, f64)> = fractions.iter().copied().enumerate().filter(|(_, f)| *f > 0.0).collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    let classes: Vec<String> = ranked.iter().take(5).map(|(i, f)| format!("{} {:.1}%", names[*i], f * 100.0)).collect();
    let more = if ranked.len() > 5 { format!(", +{} more", ranked.len() - 5) } else { String::new() };
    let written = if outputs.is_empty() {
        String::new()
    } else {
        format!(" -> {}", outputs.values().cloned().collect::<Vec<_>>().join(", "))
    };
    format!(
        "{} ({}x{}): {}{more}{written}",
        display(&input.path),
        segmentation.width,
        segmentation.height,
        classes.join(", ")
    )
}

fn write_json_line(stdout: &mut impl Write, record: &impl Serialize) -> std::io::Result<()> {
    serde_json::to_writer(&mut *stdout, record)?;
    stdout.write_all(b"\n")?;
    stdout.flush()
}

fn kind_name(kind: OutputKind) -> &'static str {
    match kind {
        OutputKind::Overlay => "overlay",
        OutputKind::Mask => "mask",
        OutputKind::Probs => "probs",
        OutputKind::None => "none",
    }
}

fn millis(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

/// Paths in messages and JSON; a name that is not UTF-8 is shown with replacement characters.
fn display(path: &std::path::Path) -> String {
    path.to_string_lossy().into_owned()
}

/// The process's peak resident memory, where the OS tells it (Linux).
fn peak_memory_mb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 =
        status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kb / 1024)
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|e| e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}
