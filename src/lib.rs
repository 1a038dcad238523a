//! otnsx: opens a VM's maintenance ports through an NSX security tag only while a help-desk
//! ticket is locked. The binary is a thin wrapper around [`main_with`].

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

/// `println!` for everything otnsx prints on stdout: known secrets scrubbed, control and bidi
/// characters escaped (line breaks kept), and a closed pipe (`otnsx check | head -1`) no
/// panic: what cannot be written is dropped.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let text = $crate::output::printable_lines(&format!($($arg)*));
        let _ = writeln!(std::io::stdout().lock(), "{text}");
    }};
}

/// [`outln`] for stderr.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let text = $crate::output::printable_lines(&format!($($arg)*));
        let _ = writeln!(std::io::stderr().lock(), "{text}");
    }};
}

mod apply;
pub mod cli;
mod commands;
mod config;
mod deadline;
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
            errln!("otnsx: {err:#}");
            ExitCode::from(error::exit_code(&err).code())
        }
    }
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
