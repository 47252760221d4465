use std::io::Write;

use clap::CommandFactory;

use crate::cli::args::Cli;

pub fn run(shell: clap_complete::Shell) -> std::io::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "sclip", &mut script);
    std::io::stdout().lock().write_all(&script)
}
