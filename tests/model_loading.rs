//! Where checkpoints come from and how loading them fails: hub downloads into the Hugging Face cache,
//! offline reads of that cache, and the errors for broken or incomplete model directories.
//!
//! The hub is a small HTTP/1.1 stand-in on 127.0.0.1 that speaks just enough of the `resolve`
//! protocol for hf-hub's sync client; no test reaches any other address.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use sclip::{Clip, Error, FetchOptions, ModelFiles, ModelSource};
use tempfile::TempDir;

const CONFIG: &str = "config.json";
const WEIGHTS: &str = "model.safetensors";
const TOKENIZER: &str = "tokenizer.json";
const FILES: [&str; 3] = [WEIGHTS, CONFIG, TOKENIZER];

const OPENAI_B16: &str = "openai/clip-vit-base-patch16";
/// The revision sclip picks for [`OPENAI_B16`], as hf-hub escapes it in a URL path.
const OPENAI_B16_URL_REVISION: &str = "refs%2Fpr%2F10";
const COMMIT: &str = "5e3bd8c1a0f2d4b6c8e0a1b3c5d7e9f0a2b4c6d8";

/// The most connections one stand-in hub accepts before it stops listening.
const MAX_CONNECTIONS: usize = 32;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tiny-p16")
}

fn fixture(file: &str) -> Vec<u8> {
    let path = fixture_dir().join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// hf-hub's client routes every request through `ALL_PROXY`/`HTTPS_PROXY`/`HTTP_PROXY` and has no
/// `NO_PROXY` support, so with one of those set the loopback stand-in would be bypassed.
fn require_no_proxy() {
    for var in ["ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"] {
        assert!(
            std::env::var_os(var).is_none(),
            "{var} is set: hf-hub would send the stand-in hub's loopback requests through it; unset it to run this test"
        );
    }
}

fn fetch_options(cache_dir: PathBuf, endpoint: Option<String>, offline: bool, stall: Duration) -> FetchOptions {
    FetchOptions { offline, progress: true, stall_timeout: stall, cache_dir, endpoint }
}

/// A cache directory inside `root`, so that hf-hub's token lookup (`<cache>/../token`) stays there too.
fn cache_in(root: &TempDir) -> PathBuf {
    root.path().join("hub")
}

/// The cache folder hf-hub uses for a model repo.
fn repo_folder(cache: &Path, repo: &str) -> PathBuf {
    cache.join(format!("models--{}", repo.replace('/', "--")))
}

fn hub(repo: &str, revision: Option<&str>) -> ModelSource {
    ModelSource::Hub { repo: repo.into(), revision: revision.map(String::from) }
}

/// One request the stand-in hub received.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Request {
    path: String,
    range: Option<String>,
}

enum Behaviour {
    /// Answers `GET <path>` for the listed paths (honouring `Range`) and 404 for anything else.
    Serve { commit: String, files: HashMap<String, Vec<u8>> },
    /// Accepts connections and never writes a byte; they are closed when the hub is dropped.
    Silent,
}

/// A loopback HTTP/1.1 server on a background thread, stopped and joined on drop.
struct StandInHub {
    url: String,
    requests: Arc<Mutex<Vec<Request>>>,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StandInHub {
    fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        listener.set_nonblocking(true).expect("non-blocking listener");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (requests, connections, stop) = (requests.clone(), connections.clone(), stop.clone());
            std::thread::spawn(move || serve(listener, behaviour, &requests, &connections, &stop))
        };
        Self { url, requests, connections, stop, thread: Some(thread) }
    }

    /// Serves `files` of `repo` at a revision spelled `url_revision` in the URL, all at `commit`.
    fn serving(repo: &str, url_revision: &str, commit: &str, files: &[&str]) -> Self {
        let files = files.iter().map(|file| (resolve_path(repo, url_revision, file), fixture(file))).collect();
        Self::start(Behaviour::Serve { commit: commit.into(), files })
    }

    /// Answers 404 to everything, and counts.
    fn counting() -> Self {
        Self::start(Behaviour::Serve { commit: COMMIT.into(), files: HashMap::new() })
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("request log").clone()
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for StandInHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn resolve_path(repo: &str, url_revision: &str, file: &str) -> String {
    format!("/{repo}/resolve/{url_revision}/{file}")
}

fn serve(
    listener: TcpListener,
    behaviour: Behaviour,
    requests: &Mutex<Vec<Request>>,
    connections: &AtomicUsize,
    stop: &AtomicBool,
) {
    let mut held = Vec::new();
    let mut accepted = 0;
    while !stop.load(Ordering::SeqCst) && accepted < MAX_CONNECTIONS {
        match listener.accept() {
            Ok((stream, _)) => {
                accepted += 1;
                connections.fetch_add(1, Ordering::SeqCst);
                match &behaviour {
                    Behaviour::Silent => held.push(stream),
                    Behaviour::Serve { commit, files } => {
                        if let Some(request) = answer(stream, commit, files) {
                            requests.lock().expect("request log").push(request);
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => break,
        }
    }
    drop(held);
}

/// Reads one request and answers it the way huggingface.co's `resolve` endpoint does, then closes.
fn answer(mut stream: TcpStream, commit: &str, files: &HashMap<String, Vec<u8>>) -> Option<Request> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    let head = read_head(&mut stream)?;
    let mut lines = head.split("\r\n");
    let path = lines.next()?.split(' ').nth(1)?.to_string();
    let range = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim().eq_ignore_ascii_case("range").then(|| value.trim().to_string())
    });
    let response = match files.get(&path) {
        Some(body) => {
            let size = body.len();
            let (start, end) = range.as_deref().and_then(parse_range).unwrap_or((0, None));
            let end = end.unwrap_or(size.saturating_sub(1)).min(size.saturating_sub(1));
            let part = body.get(start..=end).unwrap_or(&[]);
            let mut response = format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{end}/{size}\r\n\
                 ETag: \"{}\"\r\nX-Repo-Commit: {commit}\r\nConnection: close\r\n\r\n",
                part.len(),
                etag(body),
            )
            .into_bytes();
            response.extend_from_slice(part);
            response
        }
        None => {
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nX-Error-Code: EntryNotFound\r\nConnection: close\r\n\r\n"
                .to_vec()
        }
    };
    // The client may hang up early (e.g. after giving up); the request still counts.
    let _ = stream.write_all(&response).and_then(|()| stream.flush());
    Some(Request { path, range })
}

fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 64 * 1024 || stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    String::from_utf8(head).ok()
}

/// `bytes=START-` or `bytes=START-END`.
fn parse_range(range: &str) -> Option<(usize, Option<usize>)> {
    let (start, end) = range.strip_prefix("bytes=")?.split_once('-')?;
    let end = if end.is_empty() { None } else { Some(end.parse().ok()?) };
    Some((start.parse().ok()?, end))
}

/// A content hash in hex, standing in for the hub's sha256 ETags (FNV-1a, 64 bit).
fn etag(body: &[u8]) -> String {
    let hash = body.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{hash:016x}")
}

/// Builds the HF cache layout by hand: `refs/<revision>` holding `commit`, and the fixture files in
/// `snapshots/<commit>/`.
fn hand_built_cache(cache: &Path, repo: &str, revision: &str, commit: &str) {
    let folder = repo_folder(cache, repo);
    let reference = folder.join("refs").join(revision);
    std::fs::create_dir_all(reference.parent().expect("refs folder")).expect("create refs");
    std::fs::write(&reference, commit).expect("write ref");
    let snapshot = folder.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot).expect("create snapshot");
    for file in FILES {
        std::fs::copy(fixture_dir().join(file), snapshot.join(file)).expect("copy fixture");
    }
}

/// A copy of the fixture model in a fresh directory, with `edit` applied to its tensors.
fn fixture_copy_with_weights(edit: impl FnOnce(&mut HashMap<String, Tensor>)) -> TempDir {
    let dir = TempDir::new().expect("temp dir");
    for file in [CONFIG, TOKENIZER] {
        std::fs::copy(fixture_dir().join(file), dir.path().join(file)).expect("copy fixture");
    }
    let mut tensors =
        candle_core::safetensors::load(fixture_dir().join(WEIGHTS), &Device::Cpu).expect("fixture weights");
    edit(&mut tensors);
    candle_core::safetensors::save(&tensors, dir.path().join(WEIGHTS)).expect("save weights");
    dir
}

fn load_error(dir: &Path) -> Error {
    let files = ModelFiles::in_dir(dir).expect("the directory has all three files");
    Clip::load(&files, &Device::Cpu, DType::F32).expect_err("loading should fail")
}

#[test]
fn downloads_a_hub_model_into_an_empty_cache() {
    require_no_proxy();
    let root = TempDir::new().expect("temp dir");
    let cache = cache_in(&root);
    let hub_server = StandInHub::serving(OPENAI_B16, OPENAI_B16_URL_REVISION, COMMIT, &FILES);
    let source = ModelSource::parse(sclip::DEFAULT_MODEL, None);
    assert_eq!(source, hub(OPENAI_B16, None));

    let options = fetch_options(cache.clone(), Some(hub_server.url.clone()), false, Duration::from_secs(10));
    let files = source.resolve(&options).expect("download from the stand-in hub");

    let folder = repo_folder(&cache, OPENAI_B16);
    let snapshot = folder.join("snapshots").join(COMMIT);
    assert_eq!(files.weights, snapshot.join(WEIGHTS));
    assert_eq!(files.config, snapshot.join(CONFIG));
    assert_eq!(files.tokenizer, snapshot.join(TOKENIZER));
    assert_eq!(files.identity, format!("{OPENAI_B16}@{COMMIT}"));
    // hf-hub nests a revision with slashes under refs/ (refs/refs/pr/10), holding the commit.
    assert_eq!(std::fs::read_to_string(folder.join("refs/refs/pr/10")).expect("ref file"), COMMIT);
    for file in FILES {
        let downloaded = std::fs::read(snapshot.join(file)).expect("snapshot file");
        assert_eq!(downloaded, fixture(file), "{file} differs from what the hub served");
        assert!(folder.join("blobs").join(etag(&downloaded)).is_file(), "{file} has no blob named by its etag");
    }

    let clip = Clip::load(&files, &Device::Cpu, DType::F32).expect("load the downloaded model");
    assert_eq!(clip.identity, format!("{OPENAI_B16}@{COMMIT}"));
    assert_eq!((clip.config.vision_config.patch_size, clip.config.projection_dim), (16, 24));

    // Per file: a one-byte metadata probe, then the download; the weights come first.
    let expected: Vec<Request> = FILES
        .iter()
        .flat_map(|file| {
            let path = resolve_path(OPENAI_B16, OPENAI_B16_URL_REVISION, file);
            [
                Request { path: path.clone(), range: Some("bytes=0-0".into()) },
                Request { path, range: Some("bytes=0-".into()) },
            ]
        })
        .collect();
    assert_eq!(hub_server.requests(), expected);
}

#[test]
fn a_second_resolve_is_served_from_the_cache_without_network() {
    require_no_proxy();
    let root = TempDir::new().expect("temp dir");
    let cache = cache_in(&root);
    let first = {
        let hub_server = StandInHub::serving(OPENAI_B16, OPENAI_B16_URL_REVISION, COMMIT, &FILES);
        let options = fetch_options(cache.clone(), Some(hub_server.url.clone()), false, Duration::from_secs(10));
        let files = hub(OPENAI_B16, None).resolve(&options).expect("first download");
        assert_eq!(hub_server.requests().len(), 6);
        files
    };

    let counter = StandInHub::counting();
    let options = fetch_options(cache, Some(counter.url.clone()), false, Duration::from_secs(10));
    let second = hub(OPENAI_B16, None).resolve(&options).expect("resolve from the cache");
    assert_eq!(second, first);
    assert_eq!(counter.connections(), 0, "the cached model was fetched again: {:?}", counter.requests());
}

#[test]
fn offline_mode_reads_a_hand_built_cache_and_makes_no_network_call() {
    require_no_proxy();
    let repo = "acme/tiny-clip";
    let counter = StandInHub::counting();

    let root = TempDir::new().expect("temp dir");
    let cache = cache_in(&root);
    hand_built_cache(&cache, repo, "main", COMMIT);
    let options = fetch_options(cache.clone(), Some(counter.url.clone()), true, Duration::from_secs(10));
    let files = hub(repo, None).resolve(&options).expect("resolve offline from the cache");
    let snapshot = repo_folder(&cache, repo).join("snapshots").join(COMMIT);
    assert_eq!(files.weights, snapshot.join(WEIGHTS));
    assert_eq!(files.config, snapshot.join(CONFIG));
    assert_eq!(files.tokenizer, snapshot.join(TOKENIZER));
    assert_eq!(files.identity, format!("{repo}@{COMMIT}"));
    let clip = Clip::load(&files, &Device::Cpu, DType::F32).expect("load from the cache");
    assert_eq!(clip.identity, format!("{repo}@{COMMIT}"));

    let empty_root = TempDir::new().expect("temp dir");
    let empty = cache_in(&empty_root);
    let options = fetch_options(empty.clone(), Some(counter.url.clone()), true, Duration::from_secs(10));
    let err = hub(repo, None).resolve(&options).expect_err("nothing is cached");
    let message = err.to_string();
    match err {
        Error::NotCached { repo: named, file, cache } => {
            assert_eq!(named, format!("{repo}@main"));
            assert_eq!(file, WEIGHTS);
            assert_eq!(cache, empty);
        }
        other => panic!("expected NotCached, got {other:?}"),
    }
    assert!(message.contains(repo) && message.contains("offline"), "{message}");

    assert_eq!(counter.connections(), 0, "offline mode went to the network: {:?}", counter.requests());
}

#[test]
fn a_revision_without_safetensors_is_a_clear_error() {
    require_no_proxy();
    // Only the small files exist on `main`: model.safetensors is a 404, as on the OpenAI repos.
    let root = TempDir::new().expect("temp dir");
    let cache = cache_in(&root);
    let hub_server = StandInHub::serving(OPENAI_B16, "main", COMMIT, &[CONFIG, TOKENIZER]);
    let options = fetch_options(cache.clone(), Some(hub_server.url.clone()), false, Duration::from_secs(10));
    let err = hub(OPENAI_B16, Some("main")).resolve(&options).expect_err("main has no safetensors");
    let message = err.to_string();
    match err {
        Error::HubNoSafetensors { repo, revision, suggestion } => {
            assert_eq!((repo.as_str(), revision.as_str()), (OPENAI_B16, "main"));
            assert_eq!(suggestion.as_deref(), Some("refs/pr/10"));
        }
        other => panic!("expected HubNoSafetensors, got {other:?}"),
    }
    assert!(message.contains(OPENAI_B16) && message.contains("--revision refs/pr/10"), "{message}");
    // It fails on the weights, before fetching anything else.
    let requested: Vec<String> = hub_server.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(requested, [resolve_path(OPENAI_B16, "main", WEIGHTS)]);
    assert!(!repo_folder(&cache, OPENAI_B16).join("snapshots").exists());

    // A repo sclip knows nothing about gets the generic hint.
    let other_repo = "acme/pickle-only";
    let hub_server = StandInHub::serving(other_repo, "main", COMMIT, &[CONFIG, TOKENIZER]);
    let options = fetch_options(cache, Some(hub_server.url.clone()), false, Duration::from_secs(10));
    let err = hub(other_repo, None).resolve(&options).expect_err("no safetensors");
    let message = err.to_string();
    match err {
        Error::HubNoSafetensors { repo, revision, suggestion } => {
            assert_eq!((repo.as_str(), revision.as_str(), suggestion), (other_repo, "main", None));
        }
        other => panic!("expected HubNoSafetensors, got {other:?}"),
    }
    assert!(message.contains(other_repo) && message.contains("refs/pr/N"), "{message}");
}

#[test]
fn a_hub_that_never_answers_times_out() {
    require_no_proxy();
    let repo = "acme/slow-clip";
    let root = TempDir::new().expect("temp dir");
    let hub_server = StandInHub::start(Behaviour::Silent);
    let options = fetch_options(cache_in(&root), Some(hub_server.url.clone()), false, Duration::from_secs(1));
    let started = Instant::now();
    let err = hub(repo, None).resolve(&options).expect_err("the hub never answers");
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(5), "gave up after {elapsed:?}");
    let message = err.to_string();
    match err {
        Error::HubTimeout { repo: named, file, seconds } => {
            assert_eq!((named.as_str(), file.as_str(), seconds), (repo, WEIGHTS, 1));
        }
        other => panic!("expected HubTimeout, got {other:?}"),
    }
    assert!(message.contains(repo) && message.contains("local model directory"), "{message}");
    assert!(hub_server.connections() >= 1, "the client never reached the stand-in hub");
}

#[test]
fn a_missing_tensor_is_named() {
    let missing = "vision_model.post_layernorm.weight";
    let dir = fixture_copy_with_weights(|tensors| {
        tensors.remove(missing).expect("the fixture has the tensor");
    });
    let weights = dir.path().join(WEIGHTS);
    let err = load_error(dir.path());
    let message = err.to_string();
    match err {
        Error::MissingTensor { path, name } => assert_eq!((path, name.as_str()), (weights.clone(), missing)),
        other => panic!("expected MissingTensor, got {other:?}"),
    }
    assert!(message.contains(missing) && message.contains(&weights.display().to_string()), "{message}");
}

#[test]
fn a_truncated_checkpoint_is_refused_before_any_tensor_is_read() {
    let dir = fixture_copy_with_weights(|_| {});
    let weights = dir.path().join(WEIGHTS);
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_error(dir.path());
    let message = err.to_string();
    assert!(matches!(err, Error::InvalidWeights { ref path, .. } if *path == weights), "{err:?}");
    assert!(message.contains("not a valid safetensors file") && message.contains(&weights.display().to_string()));
    std::fs::write(&weights, b"PK\x03\x04 a zip, not safetensors").unwrap();
    assert!(matches!(load_error(dir.path()), Error::InvalidWeights { .. }));
}

#[test]
fn a_mis_shaped_tensor_names_both_shapes() {
    let name = "text_projection.weight";
    let dir = fixture_copy_with_weights(|tensors| {
        let transposed = tensors[name].t().and_then(|t| t.contiguous()).expect("transpose");
        tensors.insert(name.into(), transposed);
    });
    let weights = dir.path().join(WEIGHTS);
    let err = load_error(dir.path());
    let message = err.to_string();
    match err {
        Error::TensorShape { path, name: named, expected, found } => {
            assert_eq!((path, named.as_str()), (weights.clone(), name));
            assert_eq!((expected, found), (vec![24, 32], vec![32, 24]));
        }
        other => panic!("expected TensorShape, got {other:?}"),
    }
    assert!(message.contains(name) && message.contains("[32, 24]") && message.contains("[24, 32]"), "{message}");
}

#[test]
fn a_directory_with_only_a_pickle_checkpoint_is_refused() {
    let pickle = TempDir::new().expect("temp dir");
    for file in [CONFIG, TOKENIZER] {
        std::fs::copy(fixture_dir().join(file), pickle.path().join(file)).expect("copy fixture");
    }
    std::fs::write(pickle.path().join("pytorch_model.bin"), b"PK\x03\x04 not really a pickle").expect("write");
    let spec = pickle.path().to_str().expect("utf-8 temp path");
    let source = ModelSource::parse(spec, None);
    assert_eq!(source, ModelSource::Dir(pickle.path().to_path_buf()));
    let err = source.resolve(&FetchOptions::from_env()).expect_err("pickle only");
    let message = err.to_string();
    match err {
        Error::NoSafetensors { dir, has_pickle } => assert_eq!((dir.as_path(), has_pickle), (pickle.path(), true)),
        other => panic!("expected NoSafetensors, got {other:?}"),
    }
    assert!(message.contains("pickle") && message.contains(spec), "{message}");

    let no_tokenizer = TempDir::new().expect("temp dir");
    for file in [CONFIG, WEIGHTS] {
        std::fs::copy(fixture_dir().join(file), no_tokenizer.path().join(file)).expect("copy fixture");
    }
    let err = ModelFiles::in_dir(no_tokenizer.path()).expect_err("no tokenizer.json");
    let message = err.to_string();
    match err {
        Error::MissingFile { dir, file } => assert_eq!((dir.as_path(), file), (no_tokenizer.path(), TOKENIZER)),
        other => panic!("expected MissingFile, got {other:?}"),
    }
    assert!(message.contains(TOKENIZER), "{message}");
}

#[test]
fn a_corrupt_config_is_reported_with_its_path() {
    let dir = TempDir::new().expect("temp dir");
    for file in FILES {
        std::fs::copy(fixture_dir().join(file), dir.path().join(file)).expect("copy fixture");
    }
    let config = dir.path().join(CONFIG);

    std::fs::write(&config, "{ \"vision_config\": { \"patch_size\": 16, ").expect("write config");
    let err = load_error(dir.path());
    let message = err.to_string();
    assert!(matches!(&err, Error::Config { path, .. } if *path == config), "{err:?}");
    assert!(message.starts_with(&format!("{}: invalid CLIP config", config.display())), "{message}");

    // Well-formed JSON that describes no usable model is refused the same way.
    std::fs::write(&config, r#"{ "vision_config": { "hidden_size": 48, "num_attention_heads": 5 } }"#)
        .expect("write config");
    let err = load_error(dir.path());
    let message = err.to_string();
    assert!(matches!(&err, Error::Config { path, .. } if *path == config), "{err:?}");
    assert!(message.contains("num_attention_heads 5"), "{message}");
}
