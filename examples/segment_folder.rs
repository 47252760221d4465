//! Segment every PNG/JPEG in a folder with one model and one class list, writing class-index masks.
//!
//! cargo run --release --example segment_folder -- DIR OUT_DIR "person;man;woman,dog,grass" [MODEL]

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use sclip::{ClassEmbeddings, Clip, FetchOptions, ModelSource, SegmentOptions, Segmenter, Templates, Vocabulary};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: segment_folder DIR OUT_DIR LABELS [MODEL]";
    let dir = PathBuf::from(args.next().context(usage)?);
    let out_dir = PathBuf::from(args.next().context(usage)?);
    let labels = args.next().context(usage)?;
    let model = args.next().unwrap_or_else(|| sclip::DEFAULT_MODEL.to_string());

    // The model and the text embeddings are computed once and serve every image.
    let files = ModelSource::parse(&model, None).resolve(&FetchOptions::from_env())?;
    let clip = Clip::load(&files, &Device::Cpu, DType::F32)?;
    let vocabulary = Vocabulary::parse_labels(&labels)?.with_background()?;
    let classes = ClassEmbeddings::new(&clip, vocabulary, &Templates::imagenet80())?;
    let segmenter = Segmenter::new(&clip, classes, SegmentOptions::default())?;
    let class_count = segmenter.classes().vocabulary.len();

    let mut images: Vec<PathBuf> =
        std::fs::read_dir(&dir)?.map(|entry| entry.map(|e| e.path())).collect::<std::io::Result<_>>()?;
    images.retain(|p| {
        p.extension().is_some_and(|e| ["png", "jpg", "jpeg"].contains(&e.to_string_lossy().to_lowercase().as_str()))
    });
    images.sort();
    for path in images {
        let image = match sclip::read_rgb(&path, sclip::DEFAULT_MAX_PIXELS) {
            Ok(image) => image,
            Err(err) => {
                eprintln!("skipping {err}");
                continue;
            }
        };
        let result = segmenter.segment(&image)?;
        let stem = path.file_stem().map_or_else(|| "image".into(), |s| s.to_string_lossy());
        let mask = out_dir.join(format!("{stem}.mask.png"));
        std::fs::write(&mask, sclip::render::mask_png(&result, class_count))?;
        println!("{} -> {}", path.display(), Path::new(&mask).display());
    }
    Ok(())
}
