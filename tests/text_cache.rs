//! The on-disk cache of class text embeddings.

use std::path::Path;

use candle_core::{DType, Device};
use sclip::{ClassEmbeddings, Clip, EmbeddingCache, ModelFiles, Templates, Vocabulary};

fn model() -> Clip {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tiny-p16");
    Clip::load(&ModelFiles::in_dir(&dir).unwrap(), &Device::Cpu, DType::F32).unwrap()
}

fn vectors(classes: &ClassEmbeddings) -> Vec<Vec<f32>> {
    classes.queries.to_vec2().unwrap()
}

fn cache_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("text")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

#[test]
fn cached_embeddings_equal_computed_ones_and_are_reused() {
    let clip = model();
    let dir = tempfile::tempdir().unwrap();
    let cache = EmbeddingCache::new(dir.path());
    let vocabulary = Vocabulary::parse_labels("cat;kitten,sky").unwrap();
    let fresh = ClassEmbeddings::new(&clip, vocabulary.clone(), &Templates::photo()).unwrap();
    let first = ClassEmbeddings::with_cache(&clip, vocabulary.clone(), &Templates::photo(), &cache).unwrap();
    assert_eq!(vectors(&first), vectors(&fresh));
    assert_eq!(cache_files(dir.path()).len(), 3, "one file per name");

    // Overwrite every stored vector with a marker: a second run must return the markers, so it read
    // the cache instead of running the text tower.
    let markers: Vec<Vec<f32>> = (0..3).map(|i| vec![i as f32; clip.config.projection_dim]).collect();
    let context_keys: Vec<String> =
        ["cat", "kitten", "sky"].iter().map(|name| sclip::text::cache_key(&clip, &Templates::photo(), name)).collect();
    for (key, marker) in context_keys.iter().zip(&markers) {
        cache.store(key, marker).unwrap();
    }
    let second = ClassEmbeddings::with_cache(&clip, vocabulary.clone(), &Templates::photo(), &cache).unwrap();
    assert_eq!(vectors(&second), markers);

    // Other templates are another key: computed afresh, not served the markers.
    let other = ClassEmbeddings::with_cache(&clip, vocabulary, &Templates::imagenet80(), &cache).unwrap();
    let expected = ClassEmbeddings::new(&clip, other.vocabulary.clone(), &Templates::imagenet80()).unwrap();
    assert_eq!(vectors(&other), vectors(&expected));
}

#[test]
fn a_deleted_or_damaged_cache_is_rebuilt() {
    let clip = model();
    let dir = tempfile::tempdir().unwrap();
    let cache = EmbeddingCache::new(dir.path());
    let vocabulary = Vocabulary::parse_labels("dog").unwrap();
    let fresh = vectors(&ClassEmbeddings::new(&clip, vocabulary.clone(), &Templates::photo()).unwrap());
    ClassEmbeddings::with_cache(&clip, vocabulary.clone(), &Templates::photo(), &cache).unwrap();
    std::fs::write(&cache_files(dir.path())[0], b"truncated").unwrap();
    let rebuilt = ClassEmbeddings::with_cache(&clip, vocabulary.clone(), &Templates::photo(), &cache).unwrap();
    assert_eq!(vectors(&rebuilt), fresh);
    std::fs::remove_dir_all(dir.path().join("text")).unwrap();
    let again = ClassEmbeddings::with_cache(&clip, vocabulary, &Templates::photo(), &cache).unwrap();
    assert_eq!(vectors(&again), fresh);
}
