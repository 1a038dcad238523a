//! The command line, as clap types only: no I/O here.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::time::parse_duration;

/// Opens a VM's maintenance ports through an NSX security tag only while a help-desk ticket is
/// locked, or for a while by hand.
#[derive(Debug, Parser)]
#[command(
    name = "otnsx",
    version,
    subcommand_negates_reqs = true,
    arg_required_else_help = true,
    override_usage = "otnsx [OPTIONS] <TICKET_NUMBER> <TICKET_ID>\n       otnsx [OPTIONS] <COMMAND>",
    after_help = "The help desk's Generic Agent runs `otnsx <TICKET_NUMBER> <TICKET_ID>`. See `man otnsx`."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,

    #[command(subcommand)]
    pub command: Option<Command>,

    /// The ticket's number, as the help desk's "Execute Ticket Commands" passes it (first).
    #[arg(value_name = "TICKET_NUMBER", value_parser = parse_ticket_number, requires = "ticket_id")]
    pub ticket_number: Option<String>,

    /// The ticket's ID (second).
    #[arg(value_name = "TICKET_ID", value_parser = parse_ticket_id)]
    pub ticket_id: Option<u64>,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Configuration file [default: /etc/otnsx/otnsx.toml, else the user's config directory]
    #[arg(long, global = true, env = "OTNSX_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Resolve everything and print what would change; change nothing (grant, revoke,
    /// reconcile, a ticket event)
    #[arg(long, global = true)]
    pub dry_run: bool,

    /// Print one JSON document on one line, also on failure (see JSON OUTPUT in the man page)
    #[arg(long, global = true)]
    pub json: bool,

    /// Print nothing on stdout; errors still go to stderr, the exit status tells the rest
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Print each request to the services (without secrets) on stderr
    #[arg(short, long, global = true)]
    pub verbose: bool,
}

/// `check` reads the configuration itself, to list its problems one by one; every other
/// command starts from a valid configuration and the state directory.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the configuration and every service; the first command after install
    #[command(display_order = 5)]
    Check {
        /// A ticket whose VM field to check (default: any ticket the API user may read)
        #[arg(long, value_name = "ID", value_parser = parse_ticket_id)]
        ticket: Option<u64>,

        /// Also add one internal note to that ticket, to test the note permission
        #[arg(long)]
        note: bool,
    },

    /// Print the completion script for a shell (bash, zsh, fish, elvish, powershell)
    #[command(display_order = 9)]
    Completions {
        /// The shell
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },

    #[command(flatten)]
    Configured(Configured),
}

/// The commands that need a valid configuration and the state directory.
#[derive(Debug, Subcommand)]
pub enum Configured {
    /// Apply a ticket's lock state, for callers that know only the ticket's ID
    #[command(display_order = 1)]
    Ticket {
        /// The ticket's ID
        #[arg(value_name = "TICKET_ID", value_parser = parse_ticket_id)]
        ticket_id: u64,

        /// The ticket's number; when given, it must match the ticket
        #[arg(long, value_name = "N", value_parser = parse_ticket_number)]
        number: Option<String>,
    },

    /// Open VMs by hand, for a while
    #[command(display_order = 2)]
    Grant {
        /// The VM's name in vCenter (repeatable)
        #[arg(long = "vm", value_name = "NAME", required = true, num_args = 1..)]
        vms: Vec<String>,

        /// How long [default: policy.manual_duration]
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_positive_duration)]
        duration: Option<Duration>,

        /// Why, for the journal
        #[arg(long, value_name = "TEXT", value_parser = parse_reason)]
        reason: Option<String>,

        /// The access profile [default: policy.default_profile]
        #[arg(long, value_name = "NAME")]
        profile: Option<String>,
    },

    /// Close VMs opened by hand; with --all, close every VM at once
    #[command(display_order = 3)]
    Revoke {
        /// The VM's name in vCenter (repeatable)
        #[arg(long = "vm", value_name = "NAME", required_unless_present = "all", num_args = 1..)]
        vms: Vec<String>,

        /// Close the VM even while tickets hold it (drops every lease on it)
        #[arg(long)]
        force: bool,

        /// Emergency: detach the tag from every VM that carries it, drop every lease
        #[arg(long, conflicts_with_all = ["vms", "force"])]
        all: bool,
    },

    /// Make NSX match the leases: expiry, unlocked tickets, drift (run it from a timer)
    #[command(display_order = 4)]
    Reconcile,

    /// The journal as access periods, refusals and failures, for the audit
    #[command(display_order = 6)]
    History {
        /// Only what happened since then: a duration back from now (7d) or a date
        #[arg(long, value_name = "DURATION|DATE")]
        since: Option<String>,

        /// Only this VM
        #[arg(long, value_name = "NAME")]
        vm: Option<String>,

        /// Only this ticket (number or ID)
        #[arg(long, value_name = "N", value_parser = parse_ticket_number)]
        ticket: Option<String>,

        /// Check the journal's hash chain too: exit 65 if an entry was changed, removed or inserted
        #[arg(long)]
        verify: bool,
    },

    /// Show which VMs are open, for whom, until when, and whether NSX agrees
    #[command(display_order = 7)]
    Status {
        /// Only this VM
        #[arg(long, value_name = "NAME")]
        vm: Option<String>,
    },

    /// The PostgreSQL state backend's schema, and moving a state directory into it
    #[command(display_order = 8, subcommand)]
    State(StateCommand),
}

/// `otnsx state ...`: for `[state] backend = "postgres"`.
#[derive(Subcommand, Debug)]
pub enum StateCommand {
    /// Create the tables, or bring them to this otnsx's schema version (idempotent)
    Migrate,
    /// Move a state directory's leases.json and journal.jsonl into the database
    Import {
        /// The state directory to read (it is left as it is)
        #[arg(long, value_name = "DIR")]
        from_file: std::path::PathBuf,
    },
}

impl Cli {
    /// The command's name, as the JSON document's `command` gives it: `ticket` for a ticket
    /// event, `state migrate` for a subcommand's subcommand.
    pub fn command_name(&self) -> Option<String> {
        let name = match &self.command {
            None if self.ticket_id.is_some() => "ticket",
            None => return None,
            Some(Command::Check { .. }) => "check",
            Some(Command::Completions { .. }) => "completions",
            Some(Command::Configured(c)) => match c {
                Configured::Ticket { .. } => "ticket",
                Configured::Grant { .. } => "grant",
                Configured::Revoke { .. } => "revoke",
                Configured::Reconcile => "reconcile",
                Configured::History { .. } => "history",
                Configured::Status { .. } => "status",
                Configured::State(StateCommand::Migrate) => "state migrate",
                Configured::State(StateCommand::Import { .. }) => "state import",
            },
        };
        Some(name.to_string())
    }

    /// Whether the command may change something: `--dry-run` is for these only.
    pub fn changes(&self) -> bool {
        match &self.command {
            None => true,
            Some(Command::Configured(c)) => matches!(
                c,
                Configured::Ticket { .. }
                    | Configured::Grant { .. }
                    | Configured::Revoke { .. }
                    | Configured::Reconcile
            ),
            Some(_) => false,
        }
    }
}

/// For a command line clap refused: when its first word (past the global options) is neither
/// a command nor a number (it has no digit), it was meant as a command. Says so, with the
/// nearest command when one is near (`did you mean `status`?`). `None` otherwise: clap's
/// own error stands (`otnsx 12a 4` is a bad ticket number).
pub fn unknown_command(args: &[std::ffi::OsString]) -> Option<String> {
    use clap::CommandFactory;
    let mut words = args.iter().skip(1).map(|a| a.to_string_lossy());
    let word = loop {
        let arg = words.next()?;
        match arg.as_ref() {
            "--" => break words.next()?,
            "--config" => {
                words.next();
            }
            _ if arg.starts_with('-') => {}
            _ => break arg,
        }
    };
    if word.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    let cli = Cli::command();
    let names: Vec<String> = cli
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .filter(|n| n != "help")
        .collect();
    if word == "help" || names.iter().any(|n| *n == word) {
        return None;
    }
    let shown = crate::escape::shorten(&word);
    Some(match nearest(&word, &names) {
        Some(name) => format!(
            "unknown command `{shown}`: did you mean `{name}`? (a ticket event is `otnsx TICKET_NUMBER TICKET_ID`, digits only; see --help)"
        ),
        None => format!(
            "unknown command `{shown}`; the commands are {}; a ticket event is `otnsx TICKET_NUMBER TICKET_ID`, digits only (see --help)",
            names.join(", ")
        ),
    })
}

/// The name nearest `word` by edit distance, if near enough to be a typo (a third of its
/// length, at least 1, as git's and clap's suggestions are), or one that `word` begins.
fn nearest<'a>(word: &str, names: &'a [String]) -> Option<&'a str> {
    let word = word.to_lowercase();
    let best = names
        .iter()
        .map(|n| (edit_distance(&word, n), n.as_str()))
        .min_by_key(|(d, _)| *d)?;
    let limit = (word.chars().count() / 3).max(1);
    if best.0 <= limit {
        return Some(best.1);
    }
    names
        .iter()
        .find(|n| word.len() >= 3 && n.starts_with(&word))
        .map(String::as_str)
}

/// The Damerau-Levenshtein distance (optimal string alignment): a swap of two neighbours
/// (`stauts`) counts once.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// A ticket ID: digits only, 1 to 2^63-1.
pub fn parse_ticket_id(text: &str) -> Result<u64, String> {
    let err = || format!("{text:?} is not a ticket ID (digits only, 1 to 9223372036854775807)");
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err());
    }
    match text.parse::<u64>() {
        Ok(id) if id >= 1 && i64::try_from(id).is_ok() => Ok(id),
        _ => Err(err()),
    }
}

/// A ticket number: digits only, at most 64 of them (the rule of the help desk's answers and of
/// the lease store, [`crate::config::is_ticket_number`]).
pub fn parse_ticket_number(text: &str) -> Result<String, String> {
    if !crate::config::is_ticket_number(text) {
        return Err(format!("{text:?} is not a ticket number (digits only)"));
    }
    Ok(text.to_string())
}

fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err("must be longer than zero".into()),
        d => Ok(d),
    }
}

fn parse_reason(text: &str) -> Result<String, String> {
    if text.chars().count() > 200 || text.chars().any(char::is_control) {
        return Err("at most 200 characters, on one line".into());
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticket_arguments_are_digits_only() {
        assert_eq!(parse_ticket_id("2"), Ok(2));
        assert_eq!(parse_ticket_id("9223372036854775807"), Ok(i64::MAX as u64));
        for bad in [
            "",
            "0",
            "-1",
            "+2",
            "2 ",
            "2;rm",
            "9223372036854775808",
            "１",
        ] {
            assert!(parse_ticket_id(bad).is_err(), "{bad:?}");
        }
        assert!(parse_ticket_number("2026112310000011").is_ok());
        assert!(parse_ticket_number("2026x").is_err());
    }

    #[test]
    fn the_help_desk_form_parses() {
        let cli = Cli::try_parse_from(["otnsx", "2026112310000011", "2"]).expect("parses");
        assert_eq!(cli.ticket_number.as_deref(), Some("2026112310000011"));
        assert_eq!(cli.ticket_id, Some(2));
        assert!(Cli::try_parse_from(["otnsx", "2026112310000011"]).is_err());
        let cli = Cli::try_parse_from(["otnsx", "grant", "--vm", "a", "b", "--for", "2h"])
            .expect("parses");
        assert!(
            matches!(cli.command, Some(Command::Configured(Configured::Grant { ref vms, .. })) if vms.len() == 2)
        );
    }

    #[test]
    fn typos_find_the_nearest_command() {
        let names: Vec<String> = ["status", "state", "history", "check", "completions"]
            .map(String::from)
            .to_vec();
        assert_eq!(nearest("stauts", &names), Some("status"));
        assert_eq!(nearest("histroy", &names), Some("history"));
        assert_eq!(nearest("completion", &names), Some("completions"));
        assert_eq!(nearest("chekc", &names), Some("check"));
        assert_eq!(nearest("comp", &names), Some("completions"));
        assert_eq!(nearest("xyz", &names), None);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("ab", "ba"), 1);
    }
}
