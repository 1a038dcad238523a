//! The domain's plain facts, shared by the decisions, the state and the clients: which VM, why
//! something changed, how it ended.

pub mod cause;
pub mod ticket;
pub mod vm;
