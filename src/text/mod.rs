//! Class names → text embeddings, as SCLIP builds them: every synonym is a query; each query is put into
//! every template; each prompt's embedding is L2-normalised, the query's prompts averaged, and the mean
//! normalised again.

mod cache;
mod templates;
mod vocabulary;

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};

pub use cache::EmbeddingCache;
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

    /// Like [`ClassEmbeddings::new`], taking the embeddings it can from `cache` and storing the ones it
    /// computes. A cache that cannot be written only costs the time to recompute.
    pub fn with_cache(
        clip: &Clip,
        vocabulary: Vocabulary,
        templates: &Templates,
        cache: &EmbeddingCache,
    ) -> Result<Self> {
        let names: Vec<&str> = vocabulary.queries().map(|(_, q)| q).collect();
        let keys: Vec<String> = names.iter().map(|name| cache_key(clip, templates, name)).collect();
        let dim = clip.config.projection_dim;
        let mut vectors: Vec<Option<Vec<f32>>> =
            keys.iter().map(|k| cache.load(k).filter(|v| v.len() == dim)).collect();
        let missing: Vec<usize> = (0..names.len()).filter(|&i| vectors[i].is_none()).collect();
        if !missing.is_empty() {
            let missing_names: Vec<&str> = missing.iter().map(|&i| names[i]).collect();
            let computed = embed_queries(clip, &missing_names, templates)?.to_vec2::<f32>()?;
            for (&i, vector) in missing.iter().zip(computed) {
                // A cache that cannot be written is not worth failing the run for.
                let _ = cache.store(&keys[i], &vector);
                vectors[i] = Some(vector);
            }
        }
        let flat: Vec<f32> = vectors.into_iter().flat_map(|v| v.expect("every vector is loaded or computed")).collect();
        let queries = Tensor::from_vec(flat, (names.len(), dim), clip.device())?;
        Ok(Self { vocabulary, queries })
    }

    /// The class of each query.
    pub fn query_classes(&self) -> Vec<usize> {
        self.vocabulary.queries().map(|(c, _)| c).collect()
    }
}

/// What a name's embedding depends on: the weights, how they run, the templates and the name itself.
pub fn cache_key(clip: &Clip, templates: &Templates, name: &str) -> String {
    format!(
        "{}\n{:?}\n{:?}\n{}\n{name}",
        clip.identity,
        clip.dtype(),
        clip.device().location(),
        templates.as_slice().join("\u{1f}")
    )
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
    let per_name = templates.as_slice().len();
    let features = embed_by_template(clip, &prompts, per_name)?;
    let dim = features.dim(1)?;
    let mean = l2_normalize(&features)?.reshape((names.len(), per_name, dim))?.mean(1)?;
    Ok(l2_normalize(&mean)?)
}

/// Projected text features `(prompts, proj)` f32, raw (not normalised), in the order given. Prompts are
/// grouped by token count so that no batch needs padding.
pub fn embed_prompts(clip: &Clip, prompts: &[Vec<u32>]) -> Result<Tensor> {
    run_grouped(
        clip,
        prompts.len(),
        |i| prompts[i].len(),
        |&len, members| {
            let ids: Vec<u32> = members.iter().flat_map(|&i| prompts[i].iter().copied()).collect();
            clip.text.forward(&Tensor::from_vec(ids, (members.len(), len), clip.device())?)
        },
    )
}

/// [`embed_prompts`] for name-major prompts, `templates` per name: prompt `n·templates + t` is name `n`
/// in template `t`. All prompts of a template start with the same tokens (the words before the name),
/// and the text tower is causal, so those tokens run once per template and every name's prompt
/// attends to their keys and values: the same result for a fraction of the work.
fn embed_by_template(clip: &Clip, prompts: &[Vec<u32>], templates: usize) -> Result<Tensor> {
    // How many leading tokens each template shares; every prompt keeps at least its last token.
    let shared: Vec<usize> = (0..templates)
        .map(|t| {
            let mut members = prompts.iter().skip(t).step_by(templates);
            let first = members.next().expect("every template has a prompt per name");
            members.fold(first.len() - 1, |len, ids| {
                first.iter().zip(ids).take(len.min(ids.len() - 1)).take_while(|(a, b)| a == b).count()
            })
        })
        .collect();
    // Run the shared prefixes, batched by length; remember where each template's row is.
    let mut by_length: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (t, &len) in shared.iter().enumerate() {
        by_length.entry(len).or_default().push(t);
    }
    let mut prefix_row = vec![0u32; templates];
    let mut prefixes = BTreeMap::new();
    for (&len, members) in &by_length {
        let ids: Vec<u32> = members.iter().flat_map(|&t| prompts[t][..len].iter().copied()).collect();
        prefixes.insert(len, clip.text.prefix(&Tensor::from_vec(ids, (members.len(), len), clip.device())?)?);
        for (row, &t) in members.iter().enumerate() {
            prefix_row[t] = row as u32;
        }
    }
    let key = |i: usize| (shared[i % templates], prompts[i].len() - shared[i % templates]);
    run_grouped(clip, prompts.len(), key, |&(len, rest), members| {
        let ids: Vec<u32> = members.iter().flat_map(|&i| prompts[i][len..].iter().copied()).collect();
        let rows: Vec<u32> = members.iter().map(|&i| prefix_row[i % templates]).collect();
        let rows = Tensor::from_vec(rows, members.len(), clip.device())?;
        let past = prefixes[&len].iter().map(|layer| layer.select(&rows)).collect::<candle_core::Result<Vec<_>>>()?;
        clip.text.forward_after(&Tensor::from_vec(ids, (members.len(), rest), clip.device())?, Some(&past))
    })
}

/// Runs items `0..count` through `run` in batches of equal `key` (at most [`PROMPT_BATCH`] each) and
/// returns the `(count, proj)` f32 features in item order.
fn run_grouped<K: Ord>(
    clip: &Clip,
    count: usize,
    key: impl Fn(usize) -> K,
    mut run: impl FnMut(&K, &[usize]) -> candle_core::Result<Tensor>,
) -> Result<Tensor> {
    if count == 0 {
        return Ok(Tensor::zeros((0, clip.config.projection_dim), DType::F32, clip.device())?);
    }
    let mut groups: BTreeMap<K, Vec<usize>> = BTreeMap::new();
    for i in 0..count {
        groups.entry(key(i)).or_default().push(i);
    }
    let mut order = Vec::with_capacity(count);
    let mut batches = Vec::new();
    for (key, members) in &groups {
        for chunk in members.chunks(PROMPT_BATCH) {
            batches.push(run(key, chunk)?.to_dtype(DType::F32)?);
            order.extend_from_slice(chunk);
        }
    }
    // `order[j]` is the item in row j; invert it to put every item back in its place.
    let mut row_of = vec![0u32; count];
    for (row, &item) in order.iter().enumerate() {
        row_of[item] = row as u32;
    }
    let row_of = Tensor::from_vec(row_of, count, clip.device())?;
    Ok(Tensor::cat(&batches, 0)?.index_select(&row_of, 0)?)
}
