//! CLIP's causal text tower.

use candle_core::{Result, Tensor};
use candle_nn::{embedding, layer_norm, linear_no_bias, Embedding, LayerNorm, Linear, VarBuilder};

use crate::model::config::TextConfig;
use crate::model::transformer::{encoder_layers, EncoderLayer, KeyValues};

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
        self.forward_after(ids, None)
    }

    /// Runs `ids` as the first tokens of their prompts and keeps each layer's keys and values, so that
    /// the rest of the prompts can be run later with [`TextTower::forward_after`].
    pub fn prefix(&self, ids: &Tensor) -> Result<Vec<KeyValues>> {
        Ok(self.run(ids, None)?.1)
    }

    /// Like [`TextTower::forward`] for prompts whose first tokens ran already as `prefix` (one row per
    /// prompt): the result is that of the whole prompts, without recomputing the shared part.
    pub fn forward_after(&self, ids: &Tensor, prefix: Option<&[KeyValues]>) -> Result<Tensor> {
        let last = self.run(ids, prefix)?.0;
        // LayerNorm works per token: normalising only the pooled one gives the same result.
        last.squeeze(1)?.apply(&self.final_layer_norm)?.apply(&self.text_projection)
    }

    /// The hidden state of the last token `(batch, 1, width)` and every layer's keys and values. The
    /// last layer runs its attention and MLP for the last token only: no other token's output is read.
    fn run(&self, ids: &Tensor, prefix: Option<&[KeyValues]>) -> Result<(Tensor, Vec<KeyValues>)> {
        let (_, len) = ids.dims2()?;
        let offset = prefix.map_or(Ok(0), |layers| layers[0].keys.dim(2))?;
        let mut xs =
            ids.apply(&self.token_embedding)?.broadcast_add(&self.position_embedding.narrow(0, offset, len)?)?;
        let mut key_values = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            let first_output = if i + 1 == self.layers.len() { len - 1 } else { 0 };
            let (out, own) = layer.forward_causal(&xs, prefix.map(|layers| &layers[i]), first_output)?;
            xs = out;
            key_values.push(own);
        }
        Ok((xs, key_values))
    }
}
