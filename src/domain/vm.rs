//! A VM as otnsx names it, and under which access profile it is opened.

use serde::{Deserialize, Serialize};

/// A VM: its name (in vCenter, or NSX-T's display name) and the id the NSX backend tags it by
/// (the managed object id `vm-42` on NSX-V, the NSX external id on NSX-T); with the access
/// profile it is opened under, whose tag it carries (`None`: the profile of `[nsx] tag`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VmRef {
    pub name: String,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

impl VmRef {
    /// The VM under the profile of `[nsx] tag`.
    pub fn new(name: impl Into<String>, id: impl Into<String>) -> Self {
        VmRef {
            name: name.into(),
            id: id.into(),
            profile: None,
        }
    }

    /// What leases, plans and NSX's tag state are matched by: the VM under its profile.
    pub fn key(&self) -> String {
        target_key(&self.id, self.profile.as_deref())
    }
}

/// The key of VM `id` under `profile`: the id alone for the profile of `[nsx] tag`, else
/// `id#profile` (NSX ids hold no `#`).
pub fn target_key(id: &str, profile: Option<&str>) -> String {
    match profile {
        None => id.to_string(),
        Some(p) => format!("{id}#{p}"),
    }
}

impl std::fmt::Display for VmRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name, self.id)?;
        if let Some(p) = &self.profile {
            write!(f, " [{p}]")?;
        }
        Ok(())
    }
}
