//! `otnsx completions SHELL`: the completion script for bash, zsh, fish, elvish or
//! PowerShell, from the command line's own definition (what dist/completions/ ships). Needs
//! no configuration.

use clap::CommandFactory;
use clap_complete::Shell;

use crate::error::{Exit, fault};

pub fn run(shell: Shell) -> anyhow::Result<Exit> {
    if crate::document::json() {
        return Err(fault(
            Exit::Usage,
            "completions prints a shell script; --json does not apply",
        ));
    }
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut crate::cli::Cli::command(), "otnsx", &mut script);
    // The script as clap wrote it (outln! would escape its tabs), --quiet or not: it is
    // for the shell, not for people.
    use std::io::Write as _;
    let _ = std::io::stdout().lock().write_all(&script);
    Ok(Exit::Ok)
}
