//! `config.json` of a Hugging Face `CLIPModel` checkpoint.
//!
//! Defaults are those of transformers' `CLIPTextConfig` / `CLIPVisionConfig`, because older hub configs
//! leave out every field that equals its default.

use serde::Deserialize;

use crate::model::transformer::Activation;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ClipConfig {
    #[serde(default)]
    pub text_config: TextConfig,
    #[serde(default)]
    pub vision_config: VisionConfig,
    #[serde(default = "default_projection_dim")]
    pub projection_dim: usize,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
}

impl Default for TextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct VisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
}

impl Default for VisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }
}

fn default_projection_dim() -> usize {
    512
}

/// The sizes one transformer stack needs, shared by both towers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncoderShape {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
}

impl EncoderShape {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

impl TextConfig {
    pub fn encoder(&self) -> EncoderShape {
        EncoderShape {
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            hidden_act: self.hidden_act,
            layer_norm_eps: self.layer_norm_eps,
        }
    }
}

impl VisionConfig {
    pub fn encoder(&self) -> EncoderShape {
        EncoderShape {
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            hidden_act: self.hidden_act,
            layer_norm_eps: self.layer_norm_eps,
        }
    }

    /// Patches per side of the square grid the position table was trained on.
    pub fn grid_size(&self) -> usize {
        self.image_size / self.patch_size
    }
}

impl ClipConfig {
    /// Rejects configurations no checkpoint can have, so later shape arithmetic cannot divide by zero
    /// or silently truncate.
    pub fn validate(&self) -> Result<(), String> {
        for (tower, enc) in [("text", self.text_config.encoder()), ("vision", self.vision_config.encoder())] {
            if enc.num_attention_heads == 0 || enc.hidden_size % enc.num_attention_heads != 0 {
                return Err(format!(
                    "{tower}_config: hidden_size {} is not a multiple of num_attention_heads {}",
                    enc.hidden_size, enc.num_attention_heads
                ));
            }
            if enc.num_hidden_layers == 0 {
                return Err(format!("{tower}_config: num_hidden_layers is 0"));
            }
        }
        let v = &self.vision_config;
        if v.patch_size == 0 || v.image_size < v.patch_size {
            return Err(format!(
                "vision_config: image_size {} and patch_size {} do not make a patch grid",
                v.image_size, v.patch_size
            ));
        }
        if self.text_config.max_position_embeddings < 2 {
            return Err("text_config: max_position_embeddings must be at least 2".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_fields_take_transformers_defaults() {
        let cfg: ClipConfig =
            serde_json::from_str(r#"{"vision_config": {"patch_size": 16}, "text_config": {"hidden_act": "gelu"}}"#)
                .unwrap();
        assert_eq!(cfg.projection_dim, 512);
        assert_eq!(cfg.vision_config.grid_size(), 14);
        assert_eq!(cfg.vision_config.encoder().head_dim(), 64);
        assert_eq!(cfg.text_config.hidden_act, Activation::Gelu);
        assert_eq!(cfg.text_config.max_position_embeddings, 77);
    }

    #[test]
    fn the_openai_checkpoint_shapes_come_from_their_configs() {
        // (vision width, layers, heads, patch, image size) → (grid, head dim), for B/32, B/16, L/14, L/14-336.
        for ((width, layers, heads, patch, image), (grid, head_dim)) in [
            ((768, 12, 12, 32, 224), (7, 64)),
            ((768, 12, 12, 16, 224), (14, 64)),
            ((1024, 24, 16, 14, 224), (16, 64)),
            ((1024, 24, 16, 14, 336), (24, 64)),
        ] {
            let cfg: ClipConfig = serde_json::from_str(&format!(
                r#"{{"vision_config": {{"hidden_size": {width}, "num_hidden_layers": {layers},
                    "num_attention_heads": {heads}, "patch_size": {patch}, "image_size": {image}}}}}"#
            ))
            .unwrap();
            cfg.validate().unwrap();
            assert_eq!((cfg.vision_config.grid_size(), cfg.vision_config.encoder().head_dim()), (grid, head_dim));
        }
    }

    #[test]
    fn large_patch14_336_shapes_come_from_the_config() {
        let cfg: ClipConfig = serde_json::from_str(
            r#"{"projection_dim": 768,
                "vision_config": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                                  "num_attention_heads": 16, "image_size": 336, "patch_size": 14},
                "text_config": {"hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072}}"#,
        )
        .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.vision_config.grid_size(), 24);
        assert_eq!(cfg.text_config.encoder().head_dim(), 64);
    }

    #[test]
    fn heads_that_do_not_divide_the_width_are_rejected() {
        let cfg: ClipConfig =
            serde_json::from_str(r#"{"vision_config": {"hidden_size": 100, "num_attention_heads": 12}}"#).unwrap();
        assert!(cfg.validate().unwrap_err().contains("num_attention_heads 12"));
    }
}
