//! CLIP's causal text tower.

use candle_core::{Result, Tensor};
use candle_nn::{embedding, layer_norm, linear_no_bias, Embedding, LayerNorm, Linear, VarBuilder};

use crate::model::config::TextConfig;
use crate::model::transformer::{encoder_layers, EncoderLayer, Mixing};

#[derive(Debug, Clone)]
pub struct TextTower {
    token_embedding: Embedding,
    position_embedding: Tensor,
    layers: Vec<EncoderLayer>,
    final_layer_norm: LayerNorm,
    text_projection: Linear,
}

impl TextTower {
    /// `vb` is the checkpoint root: the tower lives under `text_model`, its projection beside it.
    pub fn new(vb: VarBuilder, cfg: &TextConfig, projection_dim: usize) -> Result<Self> {
        let shape = cfg.encoder();
        let width = cfg.hidden_size;
        let tower = vb.pp("text_model");
        let emb = tower.pp("embeddings");
        Ok(Self {
            token_embedding: embedding(cfg.vocab_size, width, emb.pp("token_embedding"))?,
            position_embedding: emb.get((cfg.max_position_embeddings, width), "position_embedding.weight")?,
            layers: encoder_layers(tower.pp("encoder"), &shape)?,
            final_layer_norm: layer_norm(width, shape.layer_norm_eps, tower.pp("final_layer_norm"))?,
            text_projection: linear_no_bias(width, projection_dim, vb.pp("text_projection"))?,
        })
    }

    pub fn max_positions(&self) -> usize {
        self.position_embedding.dims()[0]
    }

    /// Token ids `(batch, len)` of prompts that all end with their end-of-text token → projected text
    /// features `(batch, proj)`, read at that last position.
    ///
    /// Batching prompts of one length needs no padding at all; because the tower is causal, this is what
    /// CLIP computes for the same prompts padded to 77 tokens.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (_, len) = ids.dims2()?;
        let mut xs = ids.apply(&self.token_embedding)?.broadcast_add(&self.position_embedding.narrow(0, 0, len)?)?;
        for layer in &self.layers {
            xs = layer.forward(&xs, Mixing::Causal)?;
        }
        xs.narrow(1, len - 1, 1)?.squeeze(1)?.apply(&self.final_layer_norm)?.apply(&self.text_projection)
    }
}
