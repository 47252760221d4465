//! Segment one image and print the share of each class.
//!
//! cargo run --release --example segment_image -- IMAGE "flamingo,water,sky" [MODEL]
//!
//! MODEL is a hub repo id or a local checkpoint directory (default: openai/clip-vit-base-patch16).

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use sclip::{ClassEmbeddings, Clip, FetchOptions, ModelSource, SegmentOptions, Segmenter, Templates, Vocabulary};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: segment_image IMAGE LABELS [MODEL]";
    let image_path = args.next().context(usage)?;
    let labels = args.next().context(usage)?;
    let model = args.next().unwrap_or_else(|| sclip::DEFAULT_MODEL.to_string());

    let files = ModelSource::parse(&model, None).resolve(&FetchOptions::from_env())?;
    let clip = Clip::load(&files, &Device::Cpu, DType::F32)?;
    let vocabulary = Vocabulary::parse_labels(&labels)?.with_background()?;
    let classes = ClassEmbeddings::new(&clip, vocabulary, &Templates::imagenet80())?;
    let segmenter = Segmenter::new(&clip, classes, SegmentOptions::default())?;

    let image = sclip::read_rgb(image_path.as_ref(), sclip::DEFAULT_MAX_PIXELS)?;
    let result = segmenter.segment(&image)?;
    let classes = segmenter.classes().vocabulary.classes();
    for (class, fraction) in classes.iter().zip(sclip::render::class_fractions(&result, classes.len())) {
        println!("{:>6.2}%  {}", fraction * 100.0, class.name);
    }
    Ok(())
}
