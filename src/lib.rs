//! otnsx: opens a VM's maintenance ports through an NSX security tag only while a help-desk
//! ticket is locked. The binary is a thin wrapper around [`main_with`].

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

/// `println!` for everything otnsx prints on stdout: known secrets scrubbed, control and bidi
/// characters escaped (line breaks kept), and a closed pipe (`otnsx check | head -1`) no
/// panic: what cannot be written is dropped. With `--json` or `--quiet`, nothing (see
/// [`output`]).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if $crate::document::for_people() {
            let text = $crate::output::printable_lines(&format!($($arg)*));
            let _ = writeln!(std::io::stdout().lock(), "{text}");
        }
    }};
}

/// [`outln`] for stderr.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let text = $crate::output::printable_lines(&format!($($arg)*));
        $crate::document::said(&text);
        let _ = writeln!(std::io::stderr().lock(), "{text}");
    }};
}

mod apply;
pub mod cli;
mod commands;
mod config;
mod deadline;
mod document;
mod domain;
mod encoding;
mod error;
mod escape;
mod helpdesk;
mod http;
mod nsx;
mod output;
mod parallel;
mod plan;
mod policy;
mod require;
mod secrets;
mod state;
mod sync;
mod sys;
pub mod time;
mod vcenter;
mod xml;

/// The journal's hash chain (its line format and verifier), for tools that check a journal.
pub use state::chain;

/// Parses `args` (the program's name first), runs the command, prints its error if any, and
/// returns the documented exit status.
pub fn main_with(args: impl IntoIterator<Item = impl Into<OsString> + Clone>) -> ExitCode {
    sys::one_malloc_arena();
    sys::reset_signals();
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    document::set_mode(false, false);
    let cli = match cli::Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e, &args),
    };
    document::set_mode(cli.global.json, cli.global.quiet);
    let name = cli.command_name();
    let (exit, error) = match commands::execute(cli) {
        Ok(exit) => (exit, None),
        Err(err) => {
            errln!("otnsx: {err:#}");
            (error::exit_code(&err), Some(format!("{err:#}")))
        }
    };
    if document::json() {
        document::print_document(name.as_deref(), exit.code(), error);
    }
    ExitCode::from(exit.code())
}

/// A command line clap refused (exit 2), or `--help`/`--version` (exit 0). A word where the
/// ticket number goes that is not one is an unknown command: the nearest command is
/// suggested, as git and kubectl do. With `--json` on the line, the JSON document too.
fn usage_error(e: &clap::Error, args: &[OsString]) -> ExitCode {
    if !e.use_stderr() {
        let _ = e.print();
        return ExitCode::from(0);
    }
    let message = match cli::unknown_command(args) {
        Some(text) => {
            errln!("otnsx: {text}");
            text
        }
        None => {
            let _ = e.print();
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or_default();
            first.strip_prefix("error: ").unwrap_or(first).to_string()
        }
    };
    let code = error::Exit::Usage.code();
    let json = args
        .iter()
        .skip(1)
        .take_while(|a| *a != "--")
        .any(|a| a == "--json");
    if json {
        document::print_document(None, code, Some(message));
    }
    ExitCode::from(code)
}

/// Entry points for the fuzz targets in `fuzz/` and for the tests that replay their seeds:
/// each parses untrusted bytes the way otnsx does and must return, never panic.
#[doc(hidden)]
pub mod fuzzing {
    /// A help desk TicketGet or TicketSearch answer.
    pub fn helpdesk(data: &[u8]) {
        use crate::helpdesk::otrs::{
            TicketGet, TicketSearch, parse_search, parse_ticket, vm_names,
        };
        if let Ok(answer) = serde_json::from_slice::<TicketGet>(data) {
            let _ = parse_ticket(&answer, "VMName");
        }
        if let Ok(answer) = serde_json::from_slice::<TicketSearch>(data) {
            let _ = parse_search(&answer);
        }
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data)
            && let Some(field) = value.get("Value")
        {
            let _ = vm_names(field);
        }
    }

    /// An NSX-V XML answer: the tag list, a VM list, an error.
    pub fn nsxv(data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let _ = crate::nsx::v::parse_error(text);
        if let Ok(root) = crate::xml::parse(text) {
            let _ = crate::nsx::v::parse_security_tags(&root);
            let _ = crate::nsx::v::parse_basic_info(&root);
        }
    }

    /// An NSX-T JSON answer: a VM page, an error.
    pub fn nsxt(data: &[u8]) {
        let reply = crate::nsx::json_api::fuzz_parse(data);
        crate::nsx::policy::fuzz_parse(&reply);
    }

    /// A configuration file.
    pub fn config(data: &[u8]) {
        if let Ok(text) = std::str::from_utf8(data) {
            let _ = crate::config::Config::check_offline(text);
        }
    }
}
