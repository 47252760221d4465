//! Dense inference: SCLIP's preprocessing, sliding windows, cosine logits and post-processing.

mod postprocess;
mod preprocess;
mod windows;

use candle_core::{DType, IndexOp, Tensor, D};
use image::RgbImage;

pub use postprocess::Logits;
pub use preprocess::{normalize, rescaled_size, resize_rgb};
pub use windows::{sliding_windows, Window};

use crate::error::{Error, Result};
use crate::model::transformer::l2_normalize;
use crate::model::{Clip, DenseAttention};
use crate::text::ClassEmbeddings;
use postprocess::{decide, Decision};

/// Crops per vision-tower call: all crops of a usual image in one batch, with activations bounded for
/// very large ones.
const CROP_BATCH: usize = 16;

/// Every knob of SCLIP's inference, with SCLIP's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentOptions {
    /// The short side of the working image (336).
    pub short_side: u32,
    /// The cap on the long side of the working image (2048).
    pub long_side_cap: u32,
    /// Sliding windows (224 px every 112 px), or `None` to run the whole working image at once.
    pub slide: Option<Slide>,
    /// Multiplies the cosine logits before the softmax over queries (40).
    pub logit_scale: f32,
    /// Pixels whose best class probability is below this go to class 0 (0: off).
    pub prob_threshold: f32,
    /// Drops non-background classes covering at most this fraction of the non-background pixels.
    pub area_threshold: Option<f32>,
    /// The attention of the last vision block (CSA).
    pub attention: DenseAttention,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slide {
    pub crop: u32,
    pub stride: u32,
}

impl Default for SegmentOptions {
    fn default() -> Self {
        Self {
            short_side: 336,
            long_side_cap: 2048,
            slide: Some(Slide { crop: 224, stride: 112 }),
            logit_scale: 40.0,
            prob_threshold: 0.0,
            area_threshold: None,
            attention: DenseAttention::Csa,
        }
    }
}

impl SegmentOptions {
    pub fn validate(&self, patch_size: usize) -> Result<()> {
        let bad = |msg: String| Err(Error::Options(msg));
        if self.short_side == 0 || self.long_side_cap == 0 {
            return bad("the working image size must be positive".into());
        }
        if let Some(Slide { crop, stride }) = self.slide {
            if (crop as usize) < patch_size {
                return bad(format!("crop {crop} is smaller than the model's {patch_size}-pixel patch"));
            }
            if stride == 0 {
                return bad("stride must be positive".into());
            }
        }
        if !(self.logit_scale.is_finite() && self.logit_scale > 0.0) {
            return bad(format!("logit scale {} must be a positive number", self.logit_scale));
        }
        if !(0.0..=1.0).contains(&self.prob_threshold) {
            return bad(format!("probability threshold {} is not in 0..=1", self.prob_threshold));
        }
        if let Some(area) = self.area_threshold.filter(|a| !(0.0..=1.0).contains(a)) {
            return bad(format!("area threshold {area} is not in 0..=1"));
        }
        Ok(())
    }
}

/// An image resized to the model's working size, and the size its results are given at.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub working: RgbImage,
    pub original_size: (u32, u32),
}

impl SegmentOptions {
    /// SCLIP's keep-ratio resize of `image` to the working size, for a model with `patch_size` patches.
    pub fn prepare(&self, image: &RgbImage, patch_size: usize) -> Result<Prepared> {
        let (w, h) = rescaled_size(image.width(), image.height(), self.short_side, self.long_side_cap);
        let patch = patch_size as u32;
        if w < patch || h < patch {
            return Err(Error::TooSmall { width: image.width(), height: image.height(), working: (w, h), patch });
        }
        Ok(Prepared { working: resize_rgb(image, w, h), original_size: image.dimensions() })
    }
}

/// The result for one image, at the image's own resolution.
#[derive(Debug, Clone)]
pub struct Segmentation {
    pub width: u32,
    pub height: u32,
    /// Class probabilities `(classes, height, width)`, row-major.
    pub probs: Vec<f32>,
    /// The class of every pixel, row-major.
    pub labels: Vec<u16>,
}

/// A model and an embedded class list, ready to segment any number of images.
#[derive(Debug, Clone)]
pub struct Segmenter<'a> {
    clip: &'a Clip,
    classes: ClassEmbeddings,
    query_class: Vec<usize>,
    /// `(proj, queries)` in the model's dtype, so each crop's logits are one matmul.
    text_t: Tensor,
    options: SegmentOptions,
}

impl<'a> Segmenter<'a> {
    pub fn new(clip: &'a Clip, classes: ClassEmbeddings, options: SegmentOptions) -> Result<Self> {
        options.validate(clip.vision.patch_size())?;
        if classes.vocabulary.len() > u16::MAX as usize + 1 {
            return Err(Error::Labels(format!("{} classes; at most 65536 are supported", classes.vocabulary.len())));
        }
        let text_t = classes.queries.to_device(clip.device())?.to_dtype(clip.dtype())?.t()?.contiguous()?;
        let query_class = classes.query_classes();
        Ok(Self { clip, classes, query_class, text_t, options })
    }

    pub fn classes(&self) -> &ClassEmbeddings {
        &self.classes
    }

    /// Segments an RGB image.
    pub fn segment(&self, image: &RgbImage) -> Result<Segmentation> {
        self.segment_prepared(&self.options.prepare(image, self.clip.vision.patch_size())?)
    }

    /// Segments an image already resized by [`SegmentOptions::prepare`] (which needs no model, so it
    /// can run on another thread while the model works).
    pub fn segment_prepared(&self, prepared: &Prepared) -> Result<Segmentation> {
        let logits = self.logits(&prepared.working)?;
        let decision = Decision {
            logit_scale: self.options.logit_scale,
            prob_threshold: self.options.prob_threshold,
            area_threshold: self.options.area_threshold,
        };
        let (width, height) = prepared.original_size;
        let maps = decide(
            &logits,
            &self.query_class,
            self.classes.vocabulary.len(),
            height as usize,
            width as usize,
            decision,
        );
        Ok(Segmentation { width, height, probs: maps.probs, labels: maps.labels })
    }

    /// Cosine logits of the working (already resized) image: averaged over sliding windows at its
    /// resolution, or at patch resolution when the whole image is one window.
    pub fn logits(&self, working: &RgbImage) -> Result<Logits> {
        let pixels = normalize(working, self.clip.device())?;
        let queries = self.query_class.len();
        let Some(Slide { crop, stride }) = self.options.slide else {
            let (patch_logits, gh, gw) = self.crop_logits(&pixels.unsqueeze(0)?)?;
            return Ok(Logits { data: patch_logits.flatten_all()?.to_vec1()?, queries, h: gh, w: gw });
        };
        let (h, w) = (working.height() as usize, working.width() as usize);
        let windows = sliding_windows(h, w, crop as usize, stride as usize);
        let mut sum = vec![0f32; queries * h * w];
        let mut count = vec![0u32; h * w];
        for batch in windows.chunks(CROP_BATCH) {
            let crops = batch
                .iter()
                .map(|win| pixels.i((.., win.y..win.y + win.h, win.x..win.x + win.w)))
                .collect::<candle_core::Result<Vec<_>>>()?;
            let (patch_logits, gh, gw) = self.crop_logits(&Tensor::stack(&crops, 0)?)?;
            for (win, crop_logits) in batch.iter().zip(patch_logits.to_vec2::<f32>()?) {
                let upsampled = crate::resample::bilinear_planes(&crop_logits, gh, gw, win.h, win.w);
                for (q, plane) in upsampled.chunks_exact(win.h * win.w).enumerate() {
                    for (dy, src) in plane.chunks_exact(win.w).enumerate() {
                        let dst = &mut sum[(q * h + win.y + dy) * w + win.x..][..win.w];
                        dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
                    }
                }
                for dy in 0..win.h {
                    count[(win.y + dy) * w + win.x..][..win.w].iter_mut().for_each(|c| *c += 1);
                }
            }
        }
        for plane in sum.chunks_exact_mut(h * w) {
            plane.iter_mut().zip(&count).for_each(|(s, &c)| *s /= c as f32);
        }
        Ok(Logits { data: sum, queries, h, w })
    }

    /// Crops `(batch, 3, h, w)` → per-crop patch logits `(batch, queries·gh·gw)` f32 (query-major), and
    /// the patch grid `(gh, gw)`.
    fn crop_logits(&self, crops: &Tensor) -> Result<(Tensor, usize, usize)> {
        let (b, _, h, w) = crops.dims4()?;
        let p = self.clip.vision.patch_size();
        let features = self.clip.dense_image_features(crops, self.options.attention)?;
        let patches = l2_normalize(&features)?.narrow(1, 1, features.dim(1)? - 1)?;
        let logits = patches.broadcast_matmul(&self.text_t)?.to_dtype(DType::F32)?;
        let logits = logits.transpose(1, 2)?.contiguous()?.reshape((b, ()))?;
        debug_assert_eq!(logits.dim(D::Minus1)?, self.query_class.len() * (h / p) * (w / p));
        Ok((logits, h / p, w / p))
    }
}
