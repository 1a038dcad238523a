//! The state directory: the leases under their lock, the audit journal, and syslog.

pub mod journal;
pub mod memo;
pub mod recorder;
pub mod store;
pub mod syslog;
