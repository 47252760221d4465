//! The pre-LayerNorm transformer layer both CLIP towers are made of, with the attention of a layer as
//! one choice among several ([`Mixing`]).

use std::ops::Range;

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Module, Result, Shape, Tensor, D};
use candle_nn::{layer_norm, linear, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

use crate::model::config::EncoderShape;

/// `hidden_act` of a CLIP config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Activation {
    /// `x · σ(1.702 x)`, what OpenAI's CLIP was trained with.
    #[serde(rename = "quick_gelu")]
    QuickGelu,
    /// The exact, erf-based GELU.
    #[serde(rename = "gelu")]
    Gelu,
    #[serde(alias = "gelu_new", alias = "gelu_pytorch_tanh", rename = "gelu_tanh")]
    GeluTanh,
}

impl Module for Activation {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Self::QuickGelu if xs.device().is_cpu() && xs.dtype() == DType::F32 && xs.is_contiguous() => {
                xs.apply_op1_no_bwd(&QuickGeluF32)
            }
            Self::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?,
            Self::Gelu => xs.gelu_erf(),
            Self::GeluTanh => xs.gelu(),
        }
    }
}

/// Quick GELU in one pass over contiguous f32 CPU memory, where the composed form takes three passes
/// and two temporary tensors.
struct QuickGeluF32;

impl CustomOp1 for QuickGeluF32 {
    fn name(&self) -> &'static str {
        "quick-gelu-f32"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(data), Some((start, end))) = (storage, layout.contiguous_offsets()) else {
            candle_core::bail!("quick-gelu-f32 takes contiguous f32 data")
        };
        let src = &data[start..end];
        let mut out = vec![0f32; src.len()];
        let chunk = src.len().div_ceil(candle_core::utils::get_num_threads().max(1)).max(1 << 14);
        std::thread::scope(|scope| {
            for (dst, src) in out.chunks_mut(chunk).zip(src.chunks(chunk)) {
                scope.spawn(move || dst.iter_mut().zip(src).for_each(|(d, &x)| *d = x / (1.0 + (-1.702 * x).exp())));
            }
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// How the tokens of one vision layer are mixed (the text tower is causal: see [`Attention::forward_causal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mixing {
    /// `softmax(q·kᵀ·s)`, every token sees every token: CLIP's own vision attention.
    Full,
    /// SCLIP's correlative self-attention, `softmax(q·qᵀ·s) + softmax(k·kᵀ·s)`. The two maps are
    /// summed, not averaged, exactly as SCLIP does: each row sums to 2.
    Correlative,
}

#[derive(Debug, Clone)]
pub struct Attention {
    /// `q_proj`, `k_proj` and `v_proj` stacked into one `(3·width, width)` projection: one matmul
    /// instead of three.
    qkv_proj: Linear,
    out_proj: Linear,
    num_heads: usize,
    scale: f64,
}

/// One token run's queries, keys and values, `(batch, heads, tokens, head_dim)` each.
struct Projected {
    queries: Tensor,
    keys: Tensor,
    values: Tensor,
}

impl Attention {
    pub fn new(vb: VarBuilder, shape: &EncoderShape) -> Result<Self> {
        let d = shape.hidden_size;
        let [q, k, v] = ["q_proj", "k_proj", "v_proj"].map(|name| linear(d, d, vb.pp(name)));
        let (q, k, v) = (q?, k?, v?);
        let weight = Tensor::cat(&[q.weight(), k.weight(), v.weight()], 0)?;
        let biases = [q.bias(), k.bias(), v.bias()].map(|b| b.expect("`linear` loads a bias"));
        Ok(Self {
            qkv_proj: Linear::new(weight, Some(Tensor::cat(&biases, 0)?)),
            out_proj: linear(d, d, vb.pp("out_proj"))?,
            num_heads: shape.num_attention_heads,
            scale: (shape.head_dim() as f64).powf(-0.5),
        })
    }

    /// `(batch, tokens, width)` → queries, keys and values split into heads, contiguous for the matmuls.
    fn project(&self, xs: &Tensor) -> Result<Projected> {
        let (b, t, d) = xs.dims3()?;
        let heads = xs
            .apply(&self.qkv_proj)?
            .reshape((b, t, 3, self.num_heads, d / self.num_heads))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()?;
        Ok(Projected { queries: heads.get(0)?, keys: heads.get(1)?, values: heads.get(2)? })
    }

    /// `a·bᵀ·s`, scaling the `(tokens, head_dim)` operand rather than the `(tokens, tokens)` product.
    fn affinity(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        (a * self.scale)?.matmul(&b.t()?)
    }

    /// `(batch, heads, tokens, head_dim)` attention output → `(batch, tokens, width)`, projected.
    fn merge_heads(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, h, t, hd) = xs.dims4()?;
        xs.transpose(1, 2)?.reshape((b, t, h * hd))?.apply(&self.out_proj)
    }

    pub fn forward(&self, xs: &Tensor, mixing: Mixing) -> Result<Tensor> {
        let Projected { queries: q, keys: k, values: v } = self.project(xs)?;
        let weights = match mixing {
            Mixing::Full => candle_nn::ops::softmax_last_dim(&self.affinity(&q, &k)?)?,
            Mixing::Correlative => {
                let by_queries = candle_nn::ops::softmax_last_dim(&self.affinity(&q, &q)?)?;
                let by_keys = candle_nn::ops::softmax_last_dim(&self.affinity(&k, &k)?)?;
                (by_queries + by_keys)?
            }
        };
        self.merge_heads(&weights.matmul(&v)?)
    }

    /// Causal attention of `xs` over the keys and values of `past` tokens followed by its own: a token
    /// sees every past token, itself and the tokens before it. Only the tokens from `first_output` on
    /// are attended for (the text tower needs just the last one in its last layer), but every token's
    /// keys and values are returned, for later tokens to attend to.
    pub fn forward_causal(
        &self,
        xs: &Tensor,
        past: Option<&KeyValues>,
        first_output: usize,
    ) -> Result<(Tensor, KeyValues)> {
        let Projected { queries, keys, values } = self.project(xs)?;
        let own = KeyValues { keys, values };
        let (keys, values) = match past {
            Some(past) => (Tensor::cat(&[&past.keys, &own.keys], 2)?, Tensor::cat(&[&past.values, &own.values], 2)?),
            None => (own.keys.clone(), own.values.clone()),
        };
        let (t, seen) = (queries.dim(2)?, keys.dim(2)?);
        let queries = queries.narrow(2, first_output, t - first_output)?;
        let mask = causal_mask(first_output..t, seen - t, xs.dtype(), xs.device())?;
        let weights = candle_nn::ops::softmax_last_dim(&self.affinity(&queries, &keys)?.broadcast_add(&mask)?)?;
        Ok((self.merge_heads(&weights.matmul(&values)?)?, own))
    }
}

/// The keys and values of a run of tokens, `(batch, heads, tokens, head_dim)` each.
#[derive(Debug, Clone)]
pub struct KeyValues {
    pub keys: Tensor,
    pub values: Tensor,
}

impl KeyValues {
    /// The rows `index` of the batch.
    pub fn select(&self, index: &Tensor) -> Result<Self> {
        Ok(Self { keys: self.keys.index_select(index, 0)?, values: self.values.index_select(index, 0)? })
    }
}

/// `(queries, past + queries.end)` additive mask: query token `i` sees the `past` tokens and tokens
/// `0..=i`; −∞ elsewhere.
fn causal_mask(queries: Range<usize>, past: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let (rows, seen) = (queries.len(), past + queries.end);
    let mask: Vec<f32> =
        queries.flat_map(|i| (0..seen).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0.0 })).collect();
    Tensor::from_vec(mask, (rows, seen), device)?.to_dtype(dtype)
}

#[derive(Debug, Clone)]
struct Mlp {
    fc1: Linear,
    fc2: Linear,
    activation: Activation,
}

impl Mlp {
    fn new(vb: VarBuilder, shape: &EncoderShape) -> Result<Self> {
        Ok(Self {
            fc1: linear(shape.hidden_size, shape.intermediate_size, vb.pp("fc1"))?,
            fc2: linear(shape.intermediate_size, shape.hidden_size, vb.pp("fc2"))?,
            activation: shape.hidden_act,
        })
    }
}

impl Module for Mlp {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        xs.apply(&self.fc1)?.apply(&self.activation)?.apply(&self.fc2)
    }
}

/// `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))`.
#[derive(Debug, Clone)]
pub struct EncoderLayer {
    self_attn: Attention,
    layer_norm1: LayerNorm,
    mlp: Mlp,
    layer_norm2: LayerNorm,
}

impl EncoderLayer {
    pub fn new(vb: VarBuilder, shape: &EncoderShape) -> Result<Self> {
        let (d, eps) = (shape.hidden_size, shape.layer_norm_eps);
        Ok(Self {
            self_attn: Attention::new(vb.pp("self_attn"), shape)?,
            layer_norm1: layer_norm(d, eps, vb.pp("layer_norm1"))?,
            mlp: Mlp::new(vb.pp("mlp"), shape)?,
            layer_norm2: layer_norm(d, eps, vb.pp("layer_norm2"))?,
        })
    }

    pub fn forward(&self, xs: &Tensor, mixing: Mixing) -> Result<Tensor> {
        self.feed_forward((xs + self.self_attn.forward(&xs.apply(&self.layer_norm1)?, mixing)?)?)
    }

    /// The layer in a causal stack, with outputs for the tokens from `first_output` on; see
    /// [`Attention::forward_causal`].
    pub fn forward_causal(
        &self,
        xs: &Tensor,
        past: Option<&KeyValues>,
        first_output: usize,
    ) -> Result<(Tensor, KeyValues)> {
        let (attended, own) = self.self_attn.forward_causal(&xs.apply(&self.layer_norm1)?, past, first_output)?;
        let residual = xs.narrow(1, first_output, xs.dim(1)? - first_output)?;
        Ok((self.feed_forward((residual + attended)?)?, own))
    }

    fn feed_forward(&self, xs: Tensor) -> Result<Tensor> {
        &xs + xs.apply(&self.layer_norm2)?.apply(&self.mlp)?
    }
}

/// `encoder.layers.{i}` of a tower.
pub fn encoder_layers(vb: VarBuilder, shape: &EncoderShape) -> Result<Vec<EncoderLayer>> {
    let vb = vb.pp("layers");
    (0..shape.num_hidden_layers).map(|i| EncoderLayer::new(vb.pp(i), shape)).collect()
}

/// Divides each row (the last dimension) by its L2 norm.
pub fn l2_normalize(xs: &Tensor) -> Result<Tensor> {
    xs.broadcast_div(&xs.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_quick_gelu_matches_the_composed_formula() {
        let xs = Tensor::randn(0f32, 3.0, (3, 50_000), &Device::Cpu).unwrap();
        let fused = Activation::QuickGelu.forward(&xs).unwrap();
        let composed = (&xs * candle_nn::ops::sigmoid(&(&xs * 1.702).unwrap()).unwrap()).unwrap();
        let diff = (fused - composed).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-5, "{diff}");
    }
}
