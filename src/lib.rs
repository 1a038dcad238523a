//! otnsx: opens a VM's maintenance ports through an NSX security tag only while a help-desk
//! ticket is locked. The binary is a thin wrapper around [`main_with`].

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

mod backend;
pub mod cli;
mod commands;
mod config;
mod deadline;
mod error;
mod http;
mod journal;
mod nsxt;
mod nsxv;
mod otrs;
mod plan;
mod policy;
mod store;
mod syslog;
pub mod time;
mod vcenter;
mod xml;

/// Parses `args` (the program's name first), runs the command, prints its error if any, and
/// returns the documented exit status.
pub fn main_with(args: impl IntoIterator<Item = impl Into<OsString> + Clone>) -> ExitCode {
    let cli = match cli::Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                error::Exit::Usage.code()
            } else {
                0
            });
        }
    };
    match commands::execute(cli) {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(err) => {
            eprintln!("otnsx: {err:#}");
            ExitCode::from(error::exit_code(&err).code())
        }
    }
}
