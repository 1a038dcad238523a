//! A service's failure, by kind: what callers decide by (a refused login, a tag that may be
//! gone, a service that did not answer) instead of reading messages. Its exit code comes from
//! the one table, [`crate::error::for_status`].

use std::fmt;

use crate::error::{Exit, for_status};

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

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn the_kind_gives_the_exit_code_under_context() {
        let err = Err::<(), _>(ServiceError::status(403, "NSX: refused"))
            .context("attaching the tag")
            .unwrap_err();
        assert_eq!(crate::error::exit_code(&err), Exit::NoPerm);
        let err = ServiceError::of(Kind::Deadline, "no answer");
        assert_eq!(crate::error::exit_code(&err), Exit::Unavailable);
        assert_eq!(
            crate::error::exit_code(&ServiceError::status(429, "slow")),
            Exit::TempFail
        );
    }
}
