//! Class-name embeddings kept on disk, so that a repeated run with the same labels skips the text tower.
//!
//! One file per (model, dtype, device, templates, name). Each file repeats the full key it was made
//! for and is only used when that key matches exactly, so a hash collision, another model or edited
//! templates can never serve a wrong vector. Files appear by atomic rename: concurrent runs at worst
//! compute the same vector twice, and the directory can be deleted at any time.

use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &[u8] = b"sclip text embedding v1\n";

#[derive(Debug, Clone)]
pub struct EmbeddingCache {
    dir: PathBuf,
}

impl EmbeddingCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// `$SCLIP_CACHE_DIR`, else `$XDG_CACHE_HOME/sclip`, else `~/.cache/sclip`.
    pub fn default_dir() -> Option<PathBuf> {
        let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        env("SCLIP_CACHE_DIR")
            .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("sclip")))
            .or_else(|| env("HOME").map(|d| d.join(".cache").join("sclip")))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, key: &str) -> PathBuf {
        let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
        self.dir.join("text").join(format!("{hash:016x}.emb"))
    }

    /// The vector stored under exactly `key`, if any.
    pub fn load(&self, key: &str) -> Option<Vec<f32>> {
        let bytes = std::fs::read(self.path(key)).ok()?;
        let rest = bytes.strip_prefix(MAGIC)?;
        let (len, rest) = rest.split_first_chunk::<8>()?;
        let len = u64::from_le_bytes(*len) as usize;
        if rest.get(..len)? != key.as_bytes() {
            return None;
        }
        let data = &rest[len..];
        if data.len() % 4 != 0 {
            return None;
        }
        Some(data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("chunks of 4"))).collect())
    }

    /// Stores `vector` under `key`.
    pub fn store(&self, key: &str, vector: &[f32]) -> std::io::Result<()> {
        let path = self.path(key);
        let dir = path.parent().expect("cache files live in a directory");
        std::fs::create_dir_all(dir)?;
        let mut file = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
        file.write_all(MAGIC)?;
        file.write_all(&(key.len() as u64).to_le_bytes())?;
        file.write_all(key.as_bytes())?;
        for v in vector {
            file.write_all(&v.to_le_bytes())?;
        }
        file.persist(&path).map_err(|e| e.error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_come_back_only_for_their_exact_key() {
        let dir = tempfile::tempdir().unwrap();
        let cache = EmbeddingCache::new(dir.path());
        assert_eq!(cache.load("model a|cat"), None);
        cache.store("model a|cat", &[1.0, -2.5]).unwrap();
        assert_eq!(cache.load("model a|cat"), Some(vec![1.0, -2.5]));
        assert_eq!(cache.load("model b|cat"), None);
    }

    #[test]
    fn a_damaged_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let cache = EmbeddingCache::new(dir.path());
        cache.store("k", &[1.0]).unwrap();
        let path = cache.path("k");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 1);
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(cache.load("k"), None);
        std::fs::write(&path, b"garbage").unwrap();
        assert_eq!(cache.load("k"), None);
    }
}
