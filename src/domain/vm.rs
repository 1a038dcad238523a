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
    /// With per-agent rules (`[source] mode = "agent"`): the agent whose desktop the opening
    /// is from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

impl VmRef {
    /// The VM under the profile of `[nsx] tag`.
    pub fn new(name: impl Into<String>, id: impl Into<String>) -> Self {
        VmRef {
            name: name.into(),
            id: id.into(),
            profile: None,
            agent: None,
        }
    }

    /// What leases, plans and NSX's tag state are matched by: the VM under its profile.
    pub fn key(&self) -> String {
        target_key(&self.id, self.profile.as_deref(), self.agent.as_deref())
    }
}

/// The key of VM `id` under `profile`, from `agent`'s desktop: the id alone for the profile of
/// `[nsx] tag` open to every desktop, else `id#profile` (NSX ids hold no `#`), and the agent
/// after a unit separator (no login holds one).
pub fn target_key(id: &str, profile: Option<&str>, agent: Option<&str>) -> String {
    let mut key = id.to_string();
    if let Some(p) = profile {
        key.push('#');
        key.push_str(p);
    }
    if let Some(a) = agent {
        key.push('\u{1f}');
        key.push_str(a);
    }
    key
}

impl std::fmt::Display for VmRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name, self.id)?;
        if let Some(p) = &self.profile {
            write!(f, " [{p}]")?;
        }
        if let Some(a) = &self.agent {
            write!(f, " from {a}'s desktop")?;
        }
        Ok(())
    }
}
