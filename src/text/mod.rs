//! Class names → text embeddings, as SCLIP builds them: every synonym is a query; each query is put into
//! every template; each prompt's embedding is L2-normalised, the query's prompts averaged, and the mean
//! normalised again.

mod templates;
mod vocabulary;

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};

pub use templates::Templates;
pub use vocabulary::{Class, Vocabulary, BACKGROUND};

use crate::error::{Error, Result};
use crate::model::transformer::l2_normalize;
use crate::model::Clip;

/// Prompts per text-tower call: enough to keep the matmuls large, small enough to bound activations.
const PROMPT_BATCH: usize = 256;

/// The text side of a segmentation: the classes, and one unit-length embedding per query.
#[derive(Debug, Clone)]
pub struct ClassEmbeddings {
    pub vocabulary: Vocabulary,
    /// `(queries, proj)` f32, in the order of [`Vocabulary::queries`].
    pub queries: Tensor,
}

impl ClassEmbeddings {
    pub fn new(clip: &Clip, vocabulary: Vocabulary, templates: &Templates) -> Result<Self> {
        let names: Vec<&str> = vocabulary.queries().map(|(_, q)| q).collect();
        let queries = embed_queries(clip, &names, templates)?;
        Ok(Self { vocabulary, queries })
    }

    /// The class of each query.
    pub fn query_classes(&self) -> Vec<usize> {
        self.vocabulary.queries().map(|(c, _)| c).collect()
    }
}

/// Token ids of every prompt of every name, name-major.
fn tokenize_prompts(clip: &Clip, names: &[&str], templates: &Templates) -> Result<Vec<Vec<u32>>> {
    let max = clip.text.max_positions();
    let mut prompts = Vec::with_capacity(names.len() * templates.as_slice().len());
    for name in names {
        for template in templates.as_slice() {
            let prompt = Templates::fill(template, name);
            let ids = clip.tokenizer.encode(&prompt)?;
            if ids.len() > max {
                return Err(Error::PromptTooLong { prompt, tokens: ids.len(), max });
            }
            prompts.push(ids);
        }
    }
    Ok(prompts)
}

/// One unit-length embedding per name, `(names, proj)` f32 on the model's device.
pub fn embed_queries(clip: &Clip, names: &[&str], templates: &Templates) -> Result<Tensor> {
    if names.is_empty() {
        return Ok(Tensor::zeros((0, clip.config.projection_dim), DType::F32, clip.device())?);
    }
    let prompts = tokenize_prompts(clip, names, templates)?;
    let features = embed_prompts(clip, &prompts)?;
    let per_name = templates.as_slice().len();
    let dim = features.dim(1)?;
    let mean = l2_normalize(&features)?.reshape((names.len(), per_name, dim))?.mean(1)?;
    Ok(l2_normalize(&mean)?)
}

/// Projected text features `(prompts, proj)` f32, raw (not normalised), in the order given. Prompts are
/// grouped by token count so that no batch needs padding.
pub fn embed_prompts(clip: &Clip, prompts: &[Vec<u32>]) -> Result<Tensor> {
    let device = clip.device();
    let mut by_length: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, ids) in prompts.iter().enumerate() {
        by_length.entry(ids.len()).or_default().push(i);
    }
    let mut rows: Vec<Option<Tensor>> = vec![None; prompts.len()];
    for (len, members) in by_length {
        for chunk in members.chunks(PROMPT_BATCH) {
            let ids: Vec<u32> = chunk.iter().flat_map(|&i| prompts[i].iter().copied()).collect();
            let ids = Tensor::from_vec(ids, (chunk.len(), len), device)?;
            let features = clip.text.forward(&ids)?.to_dtype(DType::F32)?;
            for (row, &i) in chunk.iter().enumerate() {
                rows[i] = Some(features.get(row)?);
            }
        }
    }
    if rows.is_empty() {
        return Ok(Tensor::zeros((0, clip.config.projection_dim), DType::F32, device)?);
    }
    let rows: Vec<Tensor> = rows.into_iter().map(|r| r.expect("every prompt is in one length group")).collect();
    Ok(Tensor::stack(&rows, 0)?)
}
