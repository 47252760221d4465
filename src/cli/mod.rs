//! The `sclip` command line: argument parsing and what each subcommand does with the library.

mod args;
mod completions;
mod inputs;
mod output;
mod segment;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};
use output::{one_line, Printer, Verbosity};

/// sclip's exit codes: 0 all good, 1 some inputs failed, 2 usage or model error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Success,
    Failure,
    Error,
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> Self {
        match status {
            ExitStatus::Success => ExitCode::SUCCESS,
            ExitStatus::Failure => ExitCode::from(1),
            ExitStatus::Error => ExitCode::from(2),
        }
    }
}

pub fn main() -> ExitCode {
    // Panics are caught and reported per image; the default hook would print a multi-line message first.
    std::panic::set_hook(Box::new(|_| {}));
    let cli = Cli::parse();
    match cli.command {
        Command::Completions { shell } => match completions::run(shell) {
            Ok(()) => ExitStatus::Success,
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitStatus::Success,
            Err(e) => {
                Printer::new(Verbosity::Quiet).error(&e.to_string());
                ExitStatus::Error
            }
        },
        Command::Segment(args) => {
            let verbosity = match (args.quiet, args.verbose) {
                (true, _) => Verbosity::Quiet,
                (false, 0) => Verbosity::Normal,
                (false, _) => Verbosity::Verbose,
            };
            let mut printer = Printer::new(verbosity);
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| segment::run(*args, &mut printer)));
            match outcome {
                Ok(Ok(status)) => status,
                Ok(Err(err)) => {
                    printer.finish_progress();
                    printer.error(&one_line(&format!("{err:#}")));
                    ExitStatus::Error
                }
                Err(_) => {
                    printer.error("internal error (please report this)");
                    ExitStatus::Error
                }
            }
        }
    }
    .into()
}
