use std::path::PathBuf;

/// Everything that can go wrong in sclip's library, each with a message that names the file, tensor or
/// label at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    #[error("{}: invalid CLIP config: {reason}", path.display())]
    Config { path: PathBuf, reason: String },

    #[error("{}: not a valid safetensors file: {reason}", path.display())]
    InvalidWeights { path: PathBuf, reason: String },

    #[error("{}: missing tensor {name}", path.display())]
    MissingTensor { path: PathBuf, name: String },

    #[error("{}: tensor {name} has shape {found:?}, expected {expected:?}", path.display())]
    TensorShape { path: PathBuf, name: String, expected: Vec<usize>, found: Vec<usize> },

    #[error(
        "{}: no model.safetensors{}; sclip never loads pickle (.bin) checkpoints, convert it to safetensors first",
        dir.display(),
        if *has_pickle { " (only a pickle checkpoint)" } else { "" }
    )]
    NoSafetensors { dir: PathBuf, has_pickle: bool },

    #[error("{}: model directory does not exist", dir.display())]
    NoModelDir { dir: PathBuf },

    #[error("{}: {file} is missing", dir.display())]
    MissingFile { dir: PathBuf, file: &'static str },

    #[error("{repo} at revision {revision} has no model.safetensors{}", hint_revision(.suggestion))]
    HubNoSafetensors { repo: String, revision: String, suggestion: Option<String> },

    #[error("{repo}: {file} is not in the local Hugging Face cache ({}) and offline mode is on; run once online, or pass a local model directory", cache.display())]
    NotCached { repo: String, file: String, cache: PathBuf },

    #[error("{repo}: no answer from the hub after {seconds} s while fetching {file}; pass a local model directory, or use --offline with a filled cache")]
    HubTimeout { repo: String, file: String, seconds: u64 },

    #[error(
        "{repo}: could not fetch {file}: {reason}; pass a local model directory, or use --offline with a filled cache"
    )]
    Hub { repo: String, file: String, reason: String },

    #[error("{}: invalid tokenizer: {reason}", path.display())]
    Tokenizer { path: PathBuf, reason: String },

    #[error("prompt {prompt:?} is {tokens} tokens long, the text tower takes at most {max}")]
    PromptTooLong { prompt: String, tokens: usize, max: usize },

    #[error("{0}")]
    Labels(String),

    #[error("{0}")]
    Templates(String),

    #[error("invalid option: {0}")]
    Options(String),

    #[error("a {width}×{height} image becomes {}×{} for the model, less than one {patch}-pixel patch", working.0, working.1)]
    TooSmall { width: u32, height: u32, working: (u32, u32), patch: u32 },

    #[error("{}: {reason}", path.display())]
    Image { path: PathBuf, reason: String },

    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

fn hint_revision(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(revision) => format!("; its safetensors weights are published at revision {revision} (try --revision {revision})"),
        None => "; try the revision of a safetensors conversion pull request (e.g. --revision refs/pr/N) or a local directory".into(),
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }

    /// Turns candle's weight-loading errors, which bury the tensor name in a message, into ones that
    /// name the checkpoint file and the tensor.
    pub(crate) fn from_weights(path: &std::path::Path, err: candle_core::Error) -> Self {
        use candle_core::Error as E;
        match err {
            E::WithBacktrace { inner, .. } | E::Context { inner, .. } | E::WithPath { inner, .. } => {
                Self::from_weights(path, *inner)
            }
            E::CannotFindTensor { path: name } => Self::MissingTensor { path: path.into(), name },
            E::UnexpectedShape { msg, expected, got } => Self::TensorShape {
                path: path.into(),
                name: msg.trim_start_matches("shape mismatch for ").to_string(),
                expected: expected.dims().to_vec(),
                found: got.dims().to_vec(),
            },
            other => Self::Candle(other),
        }
    }
}
