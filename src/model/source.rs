//! Where a checkpoint comes from: a local directory, or a Hugging Face hub repo fetched into (or read
//! offline from) the standard HF cache.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};

use crate::error::{Error, Result};

pub const DEFAULT_MODEL: &str = "openai/clip-vit-base-patch16";

const CONFIG: &str = "config.json";
const WEIGHTS: &str = "model.safetensors";
const TOKENIZER: &str = "tokenizer.json";

/// The OpenAI repos keep pickle weights on `main`; their safetensors conversions were published on these
/// pull-request revisions, which is what sclip fetches unless told otherwise.
const SAFETENSORS_REVISIONS: &[(&str, &str)] =
    &[("openai/clip-vit-base-patch16", "refs/pr/10"), ("openai/clip-vit-base-patch32", "refs/pr/15")];

fn known_safetensors_revision(repo: &str) -> Option<&'static str> {
    SAFETENSORS_REVISIONS.iter().find(|(r, _)| *r == repo).map(|(_, rev)| *rev)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A directory with `config.json`, `model.safetensors` and `tokenizer.json`.
    Dir(PathBuf),
    /// A hub repo id; `revision: None` picks the revision that holds safetensors weights.
    Hub { repo: String, revision: Option<String> },
}

impl ModelSource {
    /// An existing directory, or anything that cannot be a hub repo id (`name` or `owner/name`), is a
    /// local model; the rest is a hub repo id.
    pub fn parse(spec: &str, revision: Option<String>) -> Self {
        let path = Path::new(spec);
        if path.is_dir() || !is_repo_id(spec) {
            Self::Dir(path.to_path_buf())
        } else {
            Self::Hub { repo: spec.to_string(), revision }
        }
    }

    pub fn resolve(&self, fetch: &FetchOptions) -> Result<ModelFiles> {
        match self {
            Self::Dir(dir) => ModelFiles::in_dir(dir),
            Self::Hub { repo, revision } => {
                let revision = revision
                    .clone()
                    .or_else(|| known_safetensors_revision(repo).map(String::from))
                    .unwrap_or_else(|| "main".into());
                fetch_from_hub(repo, &revision, fetch)
            }
        }
    }
}

fn is_repo_id(spec: &str) -> bool {
    let part_ok = |p: &str| {
        !p.is_empty()
            && !p.starts_with(['.', '-'])
            && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    let parts: Vec<&str> = spec.split('/').collect();
    parts.len() <= 2 && parts.iter().all(|p| part_ok(p))
}

/// How hub files are fetched.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Read only the local cache; make no network call at all.
    pub offline: bool,
    /// Draw a download progress bar on stderr.
    pub progress: bool,
    /// Give up when the hub sends nothing for this long.
    pub stall_timeout: Duration,
    /// The HF cache (`$HF_HOME/hub`, else `~/.cache/huggingface/hub`).
    pub cache_dir: PathBuf,
    /// The hub's address (`$HF_ENDPOINT`, else huggingface.co).
    pub endpoint: Option<String>,
}

impl FetchOptions {
    /// Settings from the environment, as the Python hub client reads them: `HF_HOME`, `HF_ENDPOINT`,
    /// and `HF_HUB_OFFLINE=1`.
    pub fn from_env() -> Self {
        let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| matches!(v.trim(), "1" | "true" | "TRUE" | "yes"));
        Self {
            offline,
            progress: false,
            stall_timeout: Duration::from_secs(30),
            cache_dir: Cache::from_env().path().clone(),
            endpoint: std::env::var("HF_ENDPOINT").ok().filter(|e| !e.is_empty()),
        }
    }
}

/// The three files of a checkpoint, and a string that identifies its weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    pub config: PathBuf,
    pub weights: PathBuf,
    pub tokenizer: PathBuf,
    /// The repo and commit for hub models; the canonical path, size and mtime of the weights for local ones.
    pub identity: String,
}

impl ModelFiles {
    pub fn in_dir(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::NoModelDir { dir: dir.to_path_buf() });
        }
        let weights = dir.join(WEIGHTS);
        if !weights.is_file() {
            let has_pickle = ["pytorch_model.bin", "model.bin"].iter().any(|f| dir.join(f).is_file());
            return Err(Error::NoSafetensors { dir: dir.to_path_buf(), has_pickle });
        }
        let required = |file: &'static str| {
            let path = dir.join(file);
            if path.is_file() {
                Ok(path)
            } else {
                Err(Error::MissingFile { dir: dir.to_path_buf(), file })
            }
        };
        // Path, size and modification time: rewriting the weights in place changes the identity.
        let canonical = std::fs::canonicalize(dir).map_err(Error::io(dir))?;
        let meta = std::fs::metadata(&weights).map_err(Error::io(&weights))?;
        let modified =
            meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).unwrap_or_default();
        let identity = format!("{}@{}-{}", canonical.display(), meta.len(), modified.as_nanos());
        Ok(Self { config: required(CONFIG)?, tokenizer: required(TOKENIZER)?, weights, identity })
    }
}

fn fetch_from_hub(repo_id: &str, revision: &str, fetch: &FetchOptions) -> Result<ModelFiles> {
    let repo = Repo::with_revision(repo_id.to_string(), RepoType::Model, revision.to_string());
    let cached = Cache::new(fetch.cache_dir.clone()).repo(repo.clone());
    let get = |file: &'static str| -> Result<PathBuf> {
        if let Some(path) = cached.get(file) {
            return Ok(path);
        }
        if fetch.offline {
            return Err(Error::NotCached {
                repo: format!("{repo_id}@{revision}"),
                file: file.into(),
                cache: fetch.cache_dir.clone(),
            });
        }
        download(&repo, file, fetch).map_err(|err| match err {
            DownloadError::Stalled => {
                Error::HubTimeout { repo: repo_id.into(), file: file.into(), seconds: fetch.stall_timeout.as_secs() }
            }
            DownloadError::Api(err) if file == WEIGHTS && is_not_found(&err) => Error::HubNoSafetensors {
                repo: repo_id.into(),
                revision: revision.into(),
                suggestion: known_safetensors_revision(repo_id).filter(|r| *r != revision).map(String::from),
            },
            DownloadError::Api(err) => Error::Hub { repo: repo_id.into(), file: file.into(), reason: err.to_string() },
        })
    };
    // The weights come first: a revision without safetensors should fail before anything is downloaded.
    let weights = get(WEIGHTS)?;
    let config = get(CONFIG)?;
    let tokenizer = get(TOKENIZER)?;
    let commit = weights
        .parent()
        .and_then(Path::file_name)
        .map_or_else(|| revision.to_string(), |c| c.to_string_lossy().into_owned());
    Ok(ModelFiles { config, weights, tokenizer, identity: format!("{repo_id}@{commit}") })
}

fn is_not_found(err: &ApiError) -> bool {
    matches!(err, ApiError::RequestError(e) if matches!(**e, ureq::Error::Status(404, _)))
}

enum DownloadError {
    Api(ApiError),
    Stalled,
}

/// Downloads one file on a worker thread, and gives up once no byte has arrived for
/// `fetch.stall_timeout`: hf-hub's client has no timeouts of its own, and a large checkpoint may
/// legitimately take minutes, so it is silence that is bounded, not the whole transfer.
fn download(repo: &Repo, file: &'static str, fetch: &FetchOptions) -> Result<PathBuf, DownloadError> {
    let started = Instant::now();
    let last_activity_ms = Arc::new(AtomicU64::new(0));
    let (done_tx, done_rx) = mpsc::channel();
    let mut builder = ApiBuilder::from_cache(Cache::new(fetch.cache_dir.clone())).with_progress(false);
    if let Some(endpoint) = &fetch.endpoint {
        builder = builder.with_endpoint(endpoint.clone());
    }
    let progress = Heartbeat { started, last_activity_ms: last_activity_ms.clone(), bar: None, show: fetch.progress };
    let repo = repo.clone();
    std::thread::spawn(move || {
        let result = builder.build().and_then(|api| api.repo(repo).download_with_progress(file, progress));
        // The receiver is gone only when the caller gave up on a stalled transfer.
        let _ = done_tx.send(result);
    });
    loop {
        let idle_ms = (started.elapsed().as_millis() as u64).saturating_sub(last_activity_ms.load(Ordering::Relaxed));
        let idle = Duration::from_millis(idle_ms);
        if idle >= fetch.stall_timeout {
            return Err(DownloadError::Stalled);
        }
        match done_rx.recv_timeout(fetch.stall_timeout - idle) {
            Ok(result) => return result.map_err(DownloadError::Api),
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => unreachable!("the worker always sends its result"),
        }
    }
}

/// hf-hub's progress callback: records when bytes last arrived, and draws a bar if asked to.
struct Heartbeat {
    started: Instant,
    last_activity_ms: Arc<AtomicU64>,
    bar: Option<indicatif::ProgressBar>,
    show: bool,
}

impl Heartbeat {
    fn beat(&self) {
        self.last_activity_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl hf_hub::api::Progress for Heartbeat {
    fn init(&mut self, size: usize, filename: &str) {
        self.beat();
        if self.show {
            let bar = indicatif::ProgressBar::new(size as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .expect("the template is valid")
                .progress_chars("=> "),
            );
            bar.set_message(format!("downloading {filename}"));
            self.bar = Some(bar);
        }
    }

    fn update(&mut self, size: usize) {
        self.beat();
        if let Some(bar) = &self.bar {
            bar.inc(size as u64);
        }
    }

    fn finish(&mut self) {
        self.beat();
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_cannot_be_repo_ids_are_local_directories() {
        let hub = |s: &str| matches!(ModelSource::parse(s, None), ModelSource::Hub { .. });
        assert!(hub("openai/clip-vit-base-patch16"));
        assert!(hub("clip"));
        for local in ["/tmp/no-such-model", "./model", "../models/clip", "a/b/c", "~/clip", "model/"] {
            assert!(!hub(local), "{local}");
        }
    }
}
