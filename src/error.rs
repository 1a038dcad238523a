//! The documented exit codes and the one typed error that carries them.
//!
//! Every failure travels as an `anyhow::Error`; where the exit code matters, a [`Fault`] or a
//! service's failure ([`ServiceError`], which the HTTP client and the API clients build) sits
//! somewhere in its chain and [`exit_code`] finds it.

use std::fmt;

/// Exit status, after sysexits(3). The numbers are part of the interface: see `man otnsx`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    /// Done, or nothing to do.
    Ok = 0,
    /// Some of the work failed; the rest was done (partly done).
    Partial = 1,
    /// The command line was wrong.
    Usage = 2,
    /// The ticket's data was unusable: no such ticket, number and ID disagree, VM not found or
    /// ambiguous, VM name invalid.
    DataErr = 65,
    /// A service was unreachable or kept failing.
    Unavailable = 69,
    /// The state (lease file, lock, journal, or their database) could not be read or written. Closing
    /// was still carried out as far as NSX allowed; nothing was opened without its record.
    IoErr = 74,
    /// Try again later: the state lock was busy, or a service asked us to slow down.
    TempFail = 75,
    /// Refused: credentials rejected, or not allowed by policy.
    NoPerm = 77,
    /// The configuration is invalid.
    Config = 78,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// The exit code of a service's HTTP status, the same for every service: credentials or
/// rights refused (401, 403) are 77, "slow down" (429) is 75 once the retries are spent, and
/// every other failure (a persistent 503 included) is 69.
pub fn for_status(status: u16) -> Exit {
    match status {
        401 | 403 => Exit::NoPerm,
        429 => Exit::TempFail,
        _ => Exit::Unavailable,
    }
}

/// A failure whose exit code callers depend on.
#[derive(Debug)]
pub struct Fault {
    pub exit: Exit,
    pub message: String,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Fault {}

/// An error kept to be said again (by a request made ahead, for the caller who needs it):
/// its exit code and its whole message.
#[derive(Debug, Clone)]
pub struct Kept {
    exit: Exit,
    message: String,
}

impl Kept {
    pub fn of(err: &anyhow::Error) -> Self {
        Kept {
            exit: exit_code(err),
            message: format!("{err:#}"),
        }
    }

    pub fn again(&self) -> anyhow::Error {
        fault(self.exit, self.message.clone())
    }
}

/// A service's failure, by kind: what callers decide by (a refused login, a tag that may be
/// gone, a service that did not answer) instead of reading messages. Its exit code comes from
/// the one table, [`for_status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No answer within the run's deadline.
    Deadline,
    /// The server's certificate was not accepted.
    Certificate,
    /// No answer could be had: the connection failed or was dropped, the answer was too large
    /// or not text.
    NoAnswer,
    /// The service answered with this failure status.
    Status(u16),
    /// The service answered, but not in a shape this client knows.
    Malformed,
}

/// A failure of a service, with the message that names the service, the object and the fix.
#[derive(Debug)]
pub struct ServiceError {
    pub kind: Kind,
    pub message: String,
}

impl ServiceError {
    /// A failure answer: `status`, said by `message`.
    pub fn status(status: u16, message: impl Into<String>) -> anyhow::Error {
        Self::of(Kind::Status(status), message)
    }

    /// An answer this client cannot read.
    pub fn malformed(message: impl Into<String>) -> anyhow::Error {
        Self::of(Kind::Malformed, message)
    }

    pub fn of(kind: Kind, message: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(ServiceError {
            kind,
            message: message.into(),
        })
    }

    /// The failure status an error (under any context) carries, if it is a service's answer.
    pub fn status_of(error: &anyhow::Error) -> Option<u16> {
        match error
            .chain()
            .find_map(|e| e.downcast_ref::<ServiceError>())?
            .kind
        {
            Kind::Status(status) => Some(status),
            _ => None,
        }
    }

    /// The exit code: credentials or rights refused (401, 403) are 77, "slow down" (429) is
    /// 75, anything else 69.
    pub fn exit(&self) -> Exit {
        match self.kind {
            Kind::Status(status) => for_status(status),
            Kind::Deadline | Kind::Certificate | Kind::NoAnswer | Kind::Malformed => {
                Exit::Unavailable
            }
        }
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ServiceError {}

/// Builds an error that exits with `exit`.
pub fn fault(exit: Exit, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Fault {
        exit,
        message: message.into(),
    })
}

/// The exit code an error maps to: that of the outermost [`Fault`] or service error in its
/// chain, else [`Exit::Partial`] (something failed that has no more specific code).
pub fn exit_code(err: &anyhow::Error) -> Exit {
    err.chain()
        .find_map(|cause| {
            let service = cause.downcast_ref::<ServiceError>();
            (cause.downcast_ref::<Fault>().map(|f| f.exit)).or(service.map(|e| e.exit()))
        })
        .unwrap_or(Exit::Partial)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn exit_code_is_found_under_context() {
        let err = Err::<(), _>(fault(Exit::NoPerm, "denied"))
            .context("reading ticket 2")
            .unwrap_err();
        assert_eq!(exit_code(&err), Exit::NoPerm);
        assert_eq!(format!("{err:#}"), "reading ticket 2: denied");
    }

    #[test]
    fn one_table_for_every_service() {
        assert_eq!(for_status(401), Exit::NoPerm);
        assert_eq!(for_status(403), Exit::NoPerm);
        assert_eq!(for_status(429), Exit::TempFail);
        assert_eq!(for_status(503), Exit::Unavailable);
        assert_eq!(for_status(500), Exit::Unavailable);
    }

    #[test]
    fn unclassified_errors_exit_1() {
        assert_eq!(exit_code(&anyhow::anyhow!("disk full")), Exit::Partial);
    }

    #[test]
    fn the_kind_gives_the_exit_code_under_context() {
        let err = Err::<(), _>(ServiceError::status(403, "NSX: refused"))
            .context("attaching the tag")
            .unwrap_err();
        assert_eq!(exit_code(&err), Exit::NoPerm);
        let err = ServiceError::of(Kind::Deadline, "no answer");
        assert_eq!(exit_code(&err), Exit::Unavailable);
        assert_eq!(
            exit_code(&ServiceError::status(429, "slow")),
            Exit::TempFail
        );
    }
}
