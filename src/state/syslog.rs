//! Journal entries also sent to the local syslog socket (RFC 5424 over a Unix datagram
//! socket), so that central logging learns who opened what. Best effort: a syslog that cannot
//! be reached is said once on stderr and changes nothing else.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

use crate::domain::cause::EntryResult;
use crate::state::journal::{Action, Entry};

pub struct Syslog {
    socket: PathBuf,
    facility: u8,
    hostname: String,
    warned: std::sync::atomic::AtomicBool,
}

impl Syslog {
    pub fn new(socket: PathBuf, facility: u8) -> Self {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic()))
            .unwrap_or_else(|| "-".into());
        Syslog {
            socket,
            facility,
            hostname,
            warned: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Sends one journal entry; its JSON line is the message.
    pub fn send(&self, entry: &Entry, json: &str) {
        let message = format_message(
            self.facility,
            &self.hostname,
            std::process::id(),
            entry,
            json,
        );
        let sent =
            UnixDatagram::unbound().and_then(|s| s.send_to(message.as_bytes(), &self.socket));
        if let Err(e) = sent
            && !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            errln!(
                "otnsx: warning: syslog {}: {e}; the journal has the entry",
                self.socket.display()
            );
        }
    }
}

/// `<PRI>1 TIMESTAMP HOSTNAME otnsx PROCID MSGID - MSG`: the journal line as the message, the
/// action as MSGID; errors at severity err, other failures (refusals, notes) at warning, the
/// rest at info.
fn format_message(facility: u8, hostname: &str, pid: u32, entry: &Entry, json: &str) -> String {
    let severity = match (entry.action, entry.result) {
        (Action::Error, _) => 3,
        (_, EntryResult::Failed) => 4,
        _ => 6,
    };
    let msgid = serde_json::to_value(entry.action)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "-".into());
    format!(
        "<{}>1 {} {hostname} otnsx {pid} {msgid} - {json}",
        u16::from(facility) * 8 + severity,
        entry.ts
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;

    #[test]
    fn formats_rfc_5424() {
        let entry = Entry {
            id: "1.2.3".into(),
            ts: Timestamp(1_795_448_203),
            action: Action::Grant,
            ticket_number: None,
            ticket_id: None,
            vm: None,
            vm_id: None,
            result: EntryResult::Ok,
            detail: String::new(),
            actor: "alice".into(),
            cause: crate::domain::cause::Cause::Grant,
            gained: vec![],
            lost: vec![],
            reason: None,
            opened_by: Vec::new(),
            group: None,
            profile: None,
            agent: None,
        };
        assert_eq!(
            format_message(10, "helpdesk01", 42, &entry, "{}"),
            "<86>1 2026-11-23T15:36:43Z helpdesk01 otnsx 42 grant - {}"
        );
        let failed = Entry {
            action: Action::Error,
            result: EntryResult::Failed,
            ..entry
        };
        assert!(format_message(4, "h", 1, &failed, "{}").starts_with("<35>1 "));
    }
}
