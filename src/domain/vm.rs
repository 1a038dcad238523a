//! A VM as otnsx names it.

use serde::{Deserialize, Serialize};

/// A VM: its name (in vCenter, or NSX-T's display name) and the id the NSX backend tags it by
/// (the managed object id `vm-42` on NSX-V, the NSX external id on NSX-T).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VmRef {
    pub name: String,
    pub id: String,
}

impl std::fmt::Display for VmRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name, self.id)
    }
}
