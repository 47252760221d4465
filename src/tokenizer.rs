use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const START_OF_TEXT: &str = "<|startoftext|>";
const END_OF_TEXT: &str = "<|endoftext|>";

/// CLIP's BPE tokenizer, giving `[start] + bpe + [end]` like OpenAI's `clip.tokenize`, whatever
/// post-processing, padding or truncation the `tokenizer.json` asks for.
#[derive(Debug, Clone)]
pub struct PromptTokenizer {
    inner: tokenizers::Tokenizer,
    start: u32,
    end: u32,
    path: PathBuf,
}

impl PromptTokenizer {
    pub fn from_file(path: &Path) -> Result<Self> {
        let invalid = |reason: String| Error::Tokenizer { path: path.to_path_buf(), reason };
        let mut inner = tokenizers::Tokenizer::from_file(path).map_err(|e| invalid(e.to_string()))?;
        inner.with_padding(None);
        inner.with_truncation(None).map_err(|e| invalid(e.to_string()))?;
        let special = |token: &str| inner.token_to_id(token).ok_or_else(|| invalid(format!("no {token} token")));
        let (start, end) = (special(START_OF_TEXT)?, special(END_OF_TEXT)?);
        Ok(Self { inner, start, end, path: path.to_path_buf() })
    }

    /// The ids of `text`, with start- and end-of-text tokens around them.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Tokenizer { path: self.path.clone(), reason: format!("{text:?}: {e}") })?;
        let mut ids = Vec::with_capacity(encoding.len() + 2);
        ids.push(self.start);
        ids.extend_from_slice(encoding.get_ids());
        ids.push(self.end);
        Ok(ids)
    }
}
