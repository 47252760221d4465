//! Where results go: files written atomically, data on stdout, messages on stderr.

use std::io::Write;
use std::path::Path;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Writes `bytes` to a temporary file beside `path`, then renames it into place: a reader, or an
/// interrupted run, never sees a half-written output.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut builder = tempfile::Builder::new();
    builder.prefix(".sclip-").suffix(".tmp");
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
    let mut file = builder.tempfile_in(dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_data()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Fails early, before the model loads, when nothing could be written to `dir`.
pub fn check_writable_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        anyhow::bail!("{}: output directory does not exist", dir.display());
    }
    tempfile::Builder::new()
        .prefix(".sclip-probe-")
        .tempfile_in(dir)
        .map_err(|e| anyhow::anyhow!("{}: cannot write to the output directory: {e}", dir.display()))?;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

/// Messages for people, on stderr: drawn above the progress bar when there is one.
pub struct Printer {
    pub verbosity: Verbosity,
    bar: Option<ProgressBar>,
}

impl Printer {
    pub fn new(verbosity: Verbosity) -> Self {
        Self { verbosity, bar: None }
    }

    /// A progress bar over `total` inputs, when stderr is a terminal and not in quiet mode.
    pub fn start_progress(&mut self, total: usize) {
        let draw =
            std::io::IsTerminal::is_terminal(&std::io::stderr()) && self.verbosity > Verbosity::Quiet && total > 1;
        if draw {
            let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} images, {per_sec}, eta {eta} {wide_msg}")
                    .expect("the template is valid")
                    .progress_chars("=> "),
            );
            self.bar = Some(bar);
        }
    }

    pub fn advance(&self, message: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(message.to_string());
            bar.inc(1);
        }
    }

    pub fn finish_progress(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    fn print(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln_quietly(line)),
            None => eprintln_quietly(line),
        }
    }

    pub fn info(&self, line: &str) {
        if self.verbosity >= Verbosity::Normal {
            self.print(line);
        }
    }

    pub fn detail(&self, line: &str) {
        if self.verbosity >= Verbosity::Verbose {
            self.print(line);
        }
    }

    /// Errors are printed whatever the verbosity, on one line.
    pub fn error(&self, message: &str) {
        self.print(&format!("sclip: error: {}", one_line(message)));
    }
}

/// A closed or broken stderr must not turn into a panic.
fn eprintln_quietly(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Error chains from candle and friends can span lines; a user gets one.
pub fn one_line(message: &str) -> String {
    message.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(": ")
}
