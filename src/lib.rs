//! Training-free open-vocabulary semantic segmentation: SCLIP (Wang et al., 2023) on CLIP, in candle.
//!
//! CLIP knows *what* is in an image but not *where*. SCLIP replaces the attention of the last vision
//! block with correlative self-attention, `softmax(q·qᵀ·s) + softmax(k·kᵀ·s)`, keeps every pretrained
//! weight, and classifies each patch token against text embeddings of the class names.
//!
//! ```no_run
//! use sclip::{Clip, ClassEmbeddings, FetchOptions, ModelSource, SegmentOptions, Segmenter, Templates, Vocabulary};
//!
//! # fn main() -> sclip::Result<()> {
//! let files = ModelSource::parse(sclip::DEFAULT_MODEL, None).resolve(&FetchOptions::from_env())?;
//! let clip = Clip::load(&files, &candle_core::Device::Cpu, candle_core::DType::F32)?;
//! let vocabulary = Vocabulary::parse_labels("flamingo,water,sky")?.with_background()?;
//! let classes = ClassEmbeddings::new(&clip, vocabulary, &Templates::imagenet80())?;
//! let segmenter = Segmenter::new(&clip, classes, SegmentOptions::default())?;
//! let image = sclip::read_rgb("flamingo.jpg".as_ref(), sclip::DEFAULT_MAX_PIXELS)?;
//! let result = segmenter.segment(&image)?;
//! println!("pixel (0, 0) is class {}", result.labels[0]);
//! # Ok(())
//! # }
//! ```

pub mod decode;
pub mod error;
pub mod model;
pub mod presets;
pub mod render;
mod resample;
pub mod segment;
pub mod text;
mod tokenizer;

pub use decode::{read_rgb, DEFAULT_MAX_PIXELS};
pub use error::{Error, Result};
pub use model::source::{FetchOptions, ModelFiles, ModelSource, DEFAULT_MODEL};
pub use model::{Clip, DenseAttention};
pub use segment::{Prepared, SegmentOptions, Segmentation, Segmenter, Slide};
pub use text::{ClassEmbeddings, EmbeddingCache, Templates, Vocabulary};
pub use tokenizer::PromptTokenizer;
