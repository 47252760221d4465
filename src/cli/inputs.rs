//! Which files a run processes and what their outputs are called.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "gif", "webp", "bmp"];

/// One image to process and the stem its outputs are named from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub path: PathBuf,
    pub stem: String,
}

/// Expands the command line's inputs: files as given, the images inside directories (sorted, and
/// recursively with `recursive`), and paths read from stdin for `-`.
pub fn expand(args: &[PathBuf], recursive: bool, nul_separated: bool) -> Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    let mut read_stdin = false;
    for arg in args {
        if arg.as_os_str() == "-" {
            if std::mem::replace(&mut read_stdin, true) {
                bail!("`-` (read paths from stdin) is given more than once");
            }
            paths.extend(paths_from_stdin(nul_separated)?);
        } else if arg.is_dir() {
            let before = paths.len();
            images_in(arg, recursive, &mut paths)?;
            if paths.len() == before {
                bail!(
                    "{}: no images in this directory (PNG, JPEG, GIF, WebP, BMP){}",
                    arg.display(),
                    if recursive { "" } else { "; use --recursive to look in subdirectories" }
                );
            }
        } else {
            paths.push(arg.clone());
        }
    }
    Ok(paths)
}

fn images_in(dir: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list directory", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()
        .with_context(|| format!("{}: cannot list directory", dir.display()))?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            if recursive {
                images_in(&path, recursive, out)?;
            }
        } else if has_image_extension(&path) {
            out.push(path);
        }
    }
    Ok(())
}

fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|known| e.eq_ignore_ascii_case(known)))
}

fn paths_from_stdin(nul_separated: bool) -> Result<Vec<PathBuf>> {
    let mut bytes = Vec::new();
    std::io::stdin().read_to_end(&mut bytes).context("cannot read paths from stdin")?;
    let separator = if nul_separated { b'\0' } else { b'\n' };
    Ok(bytes
        .split(|&b| b == separator)
        .map(|p| if !nul_separated { p.strip_suffix(b"\r").unwrap_or(p) } else { p })
        .filter(|p| !p.is_empty())
        .map(|p| PathBuf::from(os_string(p.to_vec())))
        .collect())
}

#[cfg(unix)]
fn os_string(bytes: Vec<u8>) -> OsString {
    std::os::unix::ffi::OsStringExt::from_vec(bytes)
}

#[cfg(not(unix))]
fn os_string(bytes: Vec<u8>) -> OsString {
    OsString::from(String::from_utf8_lossy(&bytes).into_owned())
}

/// FNV-1a of the path's bytes: stable across runs, machines and input order, which `--shard` and the
/// names of clashing stems rely on.
fn path_hash(path: &Path) -> u64 {
    path.as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// Names every input's outputs from its file stem. Stems shared by several inputs get a suffix from a
/// hash of the whole path, so no output overwrites another and the name does not depend on the order
/// of the inputs. Paths never contribute a directory part, so outputs stay inside the output directory.
pub fn name_outputs(paths: Vec<PathBuf>) -> Vec<Input> {
    let stem_of = |path: &Path| {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty() && s != "..")
            .unwrap_or_else(|| "image".into())
    };
    let mut uses: HashMap<String, usize> = HashMap::new();
    for path in &paths {
        *uses.entry(stem_of(path)).or_default() += 1;
    }
    paths
        .into_iter()
        .map(|path| {
            let stem = stem_of(&path);
            let stem = if uses[&stem] > 1 { format!("{stem}-{:08x}", path_hash(&path) as u32) } else { stem };
            Input { path, stem }
        })
        .collect()
}

/// Whether shard `k` of `n` (1-based) owns this input.
pub fn in_shard(input: &Input, (k, n): (u64, u64)) -> bool {
    path_hash(&input.path) % n == k - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clashing_stems_get_distinct_order_independent_names() {
        let named = name_outputs(vec!["a/cat.jpg".into(), "b/cat.png".into(), "dog.jpg".into()]);
        assert_eq!(named[2].stem, "dog");
        assert_ne!(named[0].stem, named[1].stem);
        assert!(named[0].stem.starts_with("cat-"));
        let reversed = name_outputs(vec!["b/cat.png".into(), "a/cat.jpg".into()]);
        assert_eq!(reversed[1].stem, named[0].stem);
    }

    #[test]
    fn stems_never_name_a_directory() {
        let named = name_outputs(vec!["..".into(), "/".into(), "x/../.hidden.png".into()]);
        assert_eq!(named[2].stem, ".hidden");
        assert!(named.iter().all(|i| !i.stem.contains('/') && i.stem != ".."));
    }

    #[test]
    fn shards_partition_the_inputs() {
        let inputs = name_outputs((0..100).map(|i| PathBuf::from(format!("img{i}.png"))).collect());
        let sizes: Vec<usize> = (1..=3).map(|k| inputs.iter().filter(|i| in_shard(i, (k, 3))).count()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 100);
        assert!(sizes.iter().all(|&s| s > 15), "{sizes:?}");
    }
}
