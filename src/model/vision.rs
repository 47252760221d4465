//! CLIP's vision tower, returning every token (not only CLS) so that patches can be classified, with
//! the attention of the last block replaced as SCLIP does.

use candle_core::{DType, IndexOp, Result, Tensor};
use candle_nn::{layer_norm, linear_no_bias, LayerNorm, Linear, VarBuilder};

use crate::model::config::VisionConfig;
use crate::model::transformer::{encoder_layers, EncoderLayer, Mixing};
use crate::resample::bicubic_grid;

/// The attention of the last vision block, the one SCLIP replaces. Every other block keeps CLIP's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DenseAttention {
    /// Correlative self-attention, `softmax(q·qᵀ·s) + softmax(k·kᵀ·s)` (SCLIP).
    #[default]
    Csa,
    /// CLIP's unmodified attention, `softmax(q·kᵀ·s)`: the baseline SCLIP improves on.
    Vanilla,
}

impl DenseAttention {
    fn mixing(self) -> Mixing {
        match self {
            Self::Csa => Mixing::Correlative,
            Self::Vanilla => Mixing::Full,
        }
    }
}

#[derive(Debug, Clone)]
pub struct VisionTower {
    /// Conv weights `[width, channels·p·p]`: with stride = kernel = p, the patch embedding is one matmul.
    patch_weight: Tensor,
    class_embedding: Tensor,
    position_embedding: Tensor,
    pre_layrnorm: LayerNorm,
    layers: Vec<EncoderLayer>,
    post_layernorm: LayerNorm,
    visual_projection: Linear,
    patch_size: usize,
    grid_size: usize,
}

impl VisionTower {
    /// `vb` is the checkpoint root: the tower lives under `vision_model`, its projection beside it.
    pub fn new(vb: VarBuilder, cfg: &VisionConfig, projection_dim: usize) -> Result<Self> {
        let shape = cfg.encoder();
        let width = cfg.hidden_size;
        let p = cfg.patch_size;
        let tower = vb.pp("vision_model");
        let emb = tower.pp("embeddings");
        let patch_weight = emb
            .get((width, cfg.num_channels, p, p), "patch_embedding.weight")?
            .reshape((width, cfg.num_channels * p * p))?;
        let grid_size = cfg.grid_size();
        Ok(Self {
            patch_weight,
            class_embedding: emb.get(width, "class_embedding")?,
            position_embedding: emb.get((grid_size * grid_size + 1, width), "position_embedding.weight")?,
            pre_layrnorm: layer_norm(width, shape.layer_norm_eps, tower.pp("pre_layrnorm"))?,
            layers: encoder_layers(tower.pp("encoder"), &shape)?,
            post_layernorm: layer_norm(width, shape.layer_norm_eps, tower.pp("post_layernorm"))?,
            visual_projection: linear_no_bias(width, projection_dim, vb.pp("visual_projection"))?,
            patch_size: p,
            grid_size,
        })
    }

    pub fn patch_size(&self) -> usize {
        self.patch_size
    }

    /// Pixels `(batch, channels, h, w)`, normalised, → projected tokens `(batch, 1 + gh·gw, proj)` with CLS
    /// first and patches in row-major order. Rows and columns beyond a multiple of the patch size are
    /// dropped, as a strided convolution drops them.
    pub fn forward(&self, pixels: &Tensor, attention: DenseAttention) -> Result<Tensor> {
        let (b, c, h, w) = pixels.dims4()?;
        let p = self.patch_size;
        let (gh, gw) = (h / p, w / p);
        let patches = pixels
            .narrow(2, 0, gh * p)?
            .narrow(3, 0, gw * p)?
            .reshape((b, c, gh, p, gw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .reshape((b, gh * gw, c * p * p))?;
        let patches = patches.broadcast_matmul(&self.patch_weight.t()?)?;
        let width = self.class_embedding.dim(0)?;
        let class = self.class_embedding.reshape((1, 1, width))?.broadcast_as((b, 1, width))?;
        let tokens = Tensor::cat(&[&class, &patches], 1)?.broadcast_add(&self.positions(gh, gw)?)?;
        let mut xs = tokens.apply(&self.pre_layrnorm)?;
        let (last, earlier) = self.layers.split_last().expect("config validation ensures at least one layer");
        for layer in earlier {
            xs = layer.forward(&xs, Mixing::Full)?;
        }
        xs = last.forward(&xs, attention.mixing())?;
        xs.apply(&self.post_layernorm)?.apply(&self.visual_projection)
    }

    /// The position table for a `gh × gw` grid. As in SCLIP, the table is resized only when the token
    /// count differs (a grid with the same count but another shape reuses it as is), and the bicubic
    /// resize is given the scale factor `(g + 0.1)/n`, which shifts the sampling grid slightly.
    fn positions(&self, gh: usize, gw: usize) -> Result<Tensor> {
        let n = self.grid_size;
        if gh * gw == n * n {
            return Ok(self.position_embedding.clone());
        }
        let width = self.position_embedding.dim(1)?;
        let table = self.position_embedding.i(1..)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let scale = ((gh as f64 + 0.1) / n as f64, (gw as f64 + 0.1) / n as f64);
        let grid = bicubic_grid(&table, width, (n, n), (gh, gw), scale);
        let grid = Tensor::from_vec(grid, (gh * gw, width), self.position_embedding.device())?
            .to_dtype(self.position_embedding.dtype())?;
        Tensor::cat(&[&self.position_embedding.i(..1)?, &grid], 0)
    }
}
