//! The state: the leases under their lock and the audit journal, in the state directory or in
//! PostgreSQL, and syslog.

pub mod chain;
pub mod entry;
pub mod journal;
pub mod keys;
pub mod lease;
pub mod memo;
pub mod pg;
pub mod recorder;
pub mod rotation;
pub mod store;
pub mod syslog;
