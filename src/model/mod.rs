//! CLIP in candle, loaded from Hugging Face `CLIPModel` checkpoints, with SCLIP's dense vision path.

pub mod config;
pub mod source;
pub mod text;
pub mod transformer;
pub mod vision;
mod weights;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::error::{Error, Result};
use crate::model::config::ClipConfig;
use crate::model::source::ModelFiles;
use crate::model::text::TextTower;
use crate::model::vision::VisionTower;
use crate::model::weights::SafetensorsFile;
use crate::tokenizer::PromptTokenizer;

pub use vision::DenseAttention;

/// A CLIP checkpoint ready for dense inference: both towers and the tokenizer.
#[derive(Debug, Clone)]
pub struct Clip {
    pub config: ClipConfig,
    pub vision: VisionTower,
    pub text: TextTower,
    pub tokenizer: PromptTokenizer,
    /// Identifies the weights (hub repo and commit, or a local path), e.g. for caching text embeddings.
    pub identity: String,
    device: Device,
    dtype: DType,
}

impl Clip {
    /// Loads a checkpoint onto `device`, with weights converted to `dtype` (F32 is the exact path).
    pub fn load(files: &ModelFiles, device: &Device, dtype: DType) -> Result<Self> {
        let config_text = std::fs::read_to_string(&files.config).map_err(Error::io(&files.config))?;
        let config: ClipConfig = serde_json::from_str(&config_text)
            .map_err(|e| Error::Config { path: files.config.clone(), reason: e.to_string() })?;
        config.validate().map_err(|reason| Error::Config { path: files.config.clone(), reason })?;
        let tokenizer = PromptTokenizer::from_file(&files.tokenizer)?;
        let weights = SafetensorsFile::open(&files.weights)?;
        let vb = VarBuilder::from_backend(Box::new(weights), dtype, device.clone());
        Self::new(vb, config, tokenizer, files.identity.clone()).map_err(|e| Error::from_weights(&files.weights, e))
    }

    /// Builds the model from any source of weights named as in a `CLIPModel` checkpoint.
    pub fn new(
        vb: VarBuilder,
        config: ClipConfig,
        tokenizer: PromptTokenizer,
        identity: String,
    ) -> candle_core::Result<Self> {
        let (device, dtype) = (vb.device().clone(), vb.dtype());
        let vision = VisionTower::new(vb.clone(), &config.vision_config, config.projection_dim)?;
        let text = TextTower::new(vb, &config.text_config, config.projection_dim)?;
        Ok(Self { config, vision, text, tokenizer, identity, device, dtype })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Projected features of every token of each image, `(batch, 1 + patches, proj)` with CLS first.
    pub fn dense_image_features(&self, pixels: &Tensor, attention: DenseAttention) -> Result<Tensor> {
        Ok(self.vision.forward(&pixels.to_dtype(self.dtype)?, attention)?)
    }
}
