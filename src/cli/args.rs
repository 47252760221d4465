use std::path::PathBuf;

use clap::builder::PossibleValuesParser;
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

/// Open-vocabulary semantic segmentation with CLIP and no training (SCLIP).
#[derive(Debug, Parser)]
#[command(name = "sclip", version, about, long_about = None, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Segment images into the classes you name.
    Segment(Box<SegmentArgs>),
    /// Print a shell completion script, e.g. `sclip completions bash > ~/.local/share/bash-completion/completions/sclip`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
#[command(
    group(ArgGroup::new("classes").required(true).args(["labels", "labels_file", "preset"])),
    after_help = "Background: with --labels, class 0 of every output is \"background\", a class with no prompt of \
its own; it receives exactly the pixels whose best class probability is below --prob-threshold (none by \
default), and your labels are classes 1, 2, ... With --labels-file and --preset, line 1 of the file is \
class 0 and takes those pixels, as in SCLIP.

Exit status: 0 all inputs done, 1 some inputs failed (each is reported), 2 usage or model error."
)]
pub struct SegmentArgs {
    /// Image files, directories of images, or `-` to read paths from stdin (one per line).
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,

    /// Classes to find: `,` separates classes, `;` synonyms of one class, e.g. "person;man;woman,dog,sky".
    #[arg(short, long, help_heading = "Classes")]
    pub labels: Option<String>,

    /// A class-names file in SCLIP's format: one class per line, synonyms separated by ", ".
    #[arg(long, value_name = "FILE", help_heading = "Classes")]
    pub labels_file: Option<PathBuf>,

    /// A benchmark's classes and SCLIP's settings for it (scale, thresholds); flags given too win.
    #[arg(long, value_parser = PossibleValuesParser::new(sclip::presets::PRESETS.map(|p| p.name)), help_heading = "Classes")]
    pub preset: Option<String>,

    /// Prompt templates: imagenet80 (SCLIP's 80), photo ("a photo of a {}."), or a file with one
    /// template per line, `{}` standing for the class name.
    #[arg(long, default_value = "imagenet80", value_name = "imagenet80|photo|FILE", help_heading = "Classes")]
    pub templates: String,

    /// Compute the class text embeddings afresh instead of reusing those cached on disk
    /// ($SCLIP_CACHE_DIR, else ~/.cache/sclip).
    #[arg(long, help_heading = "Classes")]
    pub no_cache: bool,

    /// Directory for the output files (must exist).
    #[arg(short, long, default_value = ".", value_name = "DIR", help_heading = "Output")]
    pub out_dir: PathBuf,

    /// Files to write per image: overlay (STEM.overlay.png), mask (STEM.mask.png), probs
    /// (STEM.probs.npy), or none. Default: overlay,mask (none with --stdout).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "LIST", help_heading = "Output")]
    pub write: Option<Vec<OutputKind>>,

    /// Also write STEM.probs.npy: float32 [classes, height, width] probabilities.
    #[arg(long, help_heading = "Output")]
    pub save_probs: bool,

    /// Write one PNG to stdout instead, for pipelines (one input only).
    #[arg(long, value_enum, value_name = "PNG", conflicts_with = "json", help_heading = "Output")]
    pub stdout: Option<StdoutPng>,

    /// Print one JSON object per image on stdout (JSON Lines).
    #[arg(long, help_heading = "Output")]
    pub json: bool,

    /// Opacity of the class colours in the overlay.
    #[arg(long, default_value_t = 0.5, value_parser = unit_interval, help_heading = "Output")]
    pub alpha: f32,

    /// Skip inputs whose requested output files all exist already.
    #[arg(long, help_heading = "Batch")]
    pub skip_existing: bool,

    /// Process only shard K of N (1-based): a fixed subset of the inputs chosen by a hash of each path,
    /// so N machines with the same inputs split them without overlap.
    #[arg(long, value_name = "K/N", value_parser = parse_shard, help_heading = "Batch")]
    pub shard: Option<(u64, u64)>,

    /// Descend into subdirectories of directory inputs.
    #[arg(short, long, help_heading = "Batch")]
    pub recursive: bool,

    /// With `-`: paths on stdin are separated by NUL (as `find -print0` writes them).
    #[arg(short = '0', long = "null", help_heading = "Batch")]
    pub null: bool,

    /// Refuse images with more pixels than this (decompression bombs).
    #[arg(long, default_value_t = sclip::DEFAULT_MAX_PIXELS, value_name = "N", help_heading = "Batch")]
    pub max_pixels: u64,

    /// Hub repo id or local directory of a CLIP checkpoint (config.json, model.safetensors, tokenizer.json).
    #[arg(short, long, default_value = sclip::DEFAULT_MODEL, help_heading = "Model")]
    pub model: String,

    /// Hub revision (branch, tag, commit or refs/pr/N); by default the one with safetensors weights.
    #[arg(long, help_heading = "Model")]
    pub revision: Option<String>,

    /// Never touch the network: use the local Hugging Face cache only (also HF_HUB_OFFLINE=1).
    #[arg(long, help_heading = "Model")]
    pub offline: bool,

    #[arg(long, value_enum, default_value = "cpu", help_heading = "Model")]
    pub device: DeviceName,

    /// Weight precision; f32 is exact, f16/bf16 are faster where the hardware supports them.
    #[arg(long, value_enum, default_value = "f32", help_heading = "Model")]
    pub dtype: DTypeName,

    /// CPU threads (default: all cores).
    #[arg(short = 't', long, value_name = "N", help_heading = "Model")]
    pub threads: Option<usize>,

    /// Short side of the working image [default: 336, or the preset's].
    #[arg(long, value_name = "PX", help_heading = "Inference")]
    pub short_side: Option<u32>,

    /// Cap on the long side of the working image.
    #[arg(long, default_value_t = 2048, value_name = "PX", help_heading = "Inference")]
    pub max_long_side: u32,

    /// Sliding-window size.
    #[arg(long, default_value_t = 224, value_name = "PX", help_heading = "Inference")]
    pub crop: u32,

    /// Sliding-window step.
    #[arg(long, default_value_t = 112, value_name = "PX", help_heading = "Inference")]
    pub stride: u32,

    /// Run the whole working image at once instead of sliding windows.
    #[arg(long, help_heading = "Inference")]
    pub no_slide: bool,

    /// Multiplies cosine similarities before the softmax over prompts [default: 40, or the preset's].
    #[arg(long, value_name = "X", help_heading = "Inference")]
    pub logit_scale: Option<f32>,

    /// Pixels whose best class probability is below this go to class 0 [default: 0, or the preset's].
    #[arg(long, value_name = "P", value_parser = unit_interval, help_heading = "Inference")]
    pub prob_threshold: Option<f32>,

    /// Drop classes covering at most this fraction of the non-background pixels [default: off, or the
    /// preset's].
    #[arg(long, value_name = "F", value_parser = unit_interval, help_heading = "Inference")]
    pub area_threshold: Option<f32>,

    /// Attention of the last vision block: csa (SCLIP) or vanilla (plain CLIP, for comparison).
    #[arg(long, value_enum, default_value = "csa", help_heading = "Inference")]
    pub attention: AttentionName,

    /// No progress bar and no summary on stderr; errors are still reported.
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,

    /// More detail on stderr (model files, timings per image).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum OutputKind {
    Overlay,
    Mask,
    Probs,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StdoutPng {
    Overlay,
    Mask,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceName {
    Cpu,
    Cuda,
    Metal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DTypeName {
    F32,
    F16,
    Bf16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AttentionName {
    Csa,
    Vanilla,
}

fn unit_interval(s: &str) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not between 0 and 1"))
    }
}

fn parse_shard(s: &str) -> Result<(u64, u64), String> {
    let usage = || format!("{s:?} is not K/N with 1 <= K <= N");
    let (k, n) = s.split_once('/').ok_or_else(usage)?;
    let (k, n): (u64, u64) = (k.trim().parse().map_err(|_| usage())?, n.trim().parse().map_err(|_| usage())?);
    if k == 0 || k > n {
        return Err(usage());
    }
    Ok((k, n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn shards_are_one_based_fractions() {
        assert_eq!(parse_shard("2/3"), Ok((2, 3)));
        assert!(parse_shard("0/3").is_err());
        assert!(parse_shard("4/3").is_err());
        assert!(parse_shard("3").is_err());
    }
}
