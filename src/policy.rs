//! Which VMs may be opened: `policy.allow` and `policy.deny`, case-insensitive glob patterns
//! (`*` any run of characters, `?` one character). Deny wins over allow; no allow list means no
//! VM may be opened. Closing access is never subject to policy.

/// The verdict on a VM name, with the pattern that decided it.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    Allowed(&'a str),
    Denied(&'a str),
    NotAllowed,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmPolicy {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

impl VmPolicy {
    pub fn judge(&self, name: &str) -> Verdict<'_> {
        if let Some(p) = self.deny.iter().find(|p| glob(p, name)) {
            return Verdict::Denied(p);
        }
        match self.allow.iter().find(|p| glob(p, name)) {
            Some(p) => Verdict::Allowed(p),
            None => Verdict::NotAllowed,
        }
    }

    /// Why `name` may not be opened, or `None` if it may.
    pub fn refusal(&self, name: &str) -> Option<String> {
        match self.judge(name) {
            Verdict::Allowed(_) => None,
            Verdict::Denied(p) => Some(format!(
                "VM {name:?} is not allowed by policy (policy.deny {p:?})"
            )),
            Verdict::NotAllowed if self.allow.is_empty() => Some(format!(
                "VM {name:?} is not allowed by policy: policy.allow is empty, so no VM may be opened"
            )),
            Verdict::NotAllowed => Some(format!(
                "VM {name:?} is not allowed by policy (no policy.allow pattern matches)"
            )),
        }
    }
}

/// Case-insensitive glob match of the whole `text`: `*` matches any run, `?` one character.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().flat_map(char::to_lowercase).collect();
    let t: Vec<char> = text.chars().flat_map(char::to_lowercase).collect();
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and how much of the text it has taken so far.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("srv-*", "SRV-web01"));
        assert!(glob("app-??-prod", "app-01-prod"));
        assert!(!glob("app-??-prod", "app-001-prod"));
        assert!(glob("*", ""));
        assert!(glob("*a*b*", "xxaYYbzz"));
        assert!(!glob("*a*b", "xxaYYbzz"));
        assert!(glob("büro*", "BÜRO 01"));
        assert!(!glob("vc", "vc01"));
        assert!(glob("vc*", "vc01"));
        assert!(!glob("", "x"));
    }

    #[test]
    fn deny_wins_and_no_allow_list_allows_nothing() {
        let policy = VmPolicy {
            allow: vec!["*".into()],
            deny: vec!["vc*".into(), "nsx*".into()],
        };
        assert_eq!(policy.judge("web01"), Verdict::Allowed("*"));
        assert_eq!(policy.judge("VC01"), Verdict::Denied("vc*"));
        assert!(
            policy
                .refusal("nsx-mgr")
                .is_some_and(|r| r.contains("policy.deny \"nsx*\""))
        );
        let empty = VmPolicy::default();
        assert!(
            empty
                .refusal("web01")
                .is_some_and(|r| r.contains("policy.allow is empty"))
        );
    }
}
