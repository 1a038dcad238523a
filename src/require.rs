//! Conditions on the ticket that opens access: `[policy.require]` for every ticket, and
//! `[profiles.NAME.require]` for one profile besides. Each key is a list of case-insensitive
//! patterns (as `allow`'s: `*` any run, `?` one character) that the ticket's value must match
//! (a multiselect field: any of its values); `responsible_differs` asks for a second person,
//! the ticket's Responsible, other than the agent who holds the lock. A ticket that does not
//! meet them opens nothing for the profile. Manual `grant`s are not tickets: `[policy]`
//! governs them alone.

use crate::domain::ticket::Facts;
use crate::policy::glob;

/// What a condition is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Queue,
    Type,
    State,
    Priority,
    Service,
    Sla,
    CustomerId,
    /// A dynamic field, by name.
    Field(String),
}

impl Key {
    /// Its key in the configuration.
    pub fn config(&self) -> String {
        match self {
            Key::Queue => "queue".into(),
            Key::Type => "type".into(),
            Key::State => "state".into(),
            Key::Priority => "priority".into(),
            Key::Service => "service".into(),
            Key::Sla => "sla".into(),
            Key::CustomerId => "customer_id".into(),
            Key::Field(name) => format!("dynamic_field.{name}"),
        }
    }

    /// Its name in a sentence: "ticket type", "field ChangeApproval".
    pub fn words(&self) -> String {
        match self {
            Key::Queue => "ticket queue".into(),
            Key::Type => "ticket type".into(),
            Key::State => "ticket state".into(),
            Key::Priority => "ticket priority".into(),
            Key::Service => "ticket service".into(),
            Key::Sla => "ticket SLA".into(),
            Key::CustomerId => "ticket customer ID".into(),
            Key::Field(name) => format!("field {name}"),
        }
    }

    /// The ticket's values for it.
    fn values<'a>(&self, facts: &'a Facts) -> Vec<&'a str> {
        let one = |value: &'a Option<String>| value.as_deref().into_iter().collect();
        match self {
            Key::Queue => one(&facts.queue),
            Key::Type => one(&facts.kind),
            Key::State => one(&facts.state),
            Key::Priority => one(&facts.priority),
            Key::Service => one(&facts.service),
            Key::Sla => one(&facts.sla),
            Key::CustomerId => one(&facts.customer_id),
            Key::Field(name) => facts
                .fields
                .get(name)
                .map(|values| values.iter().map(String::as_str).collect())
                .unwrap_or_default(),
        }
    }
}

/// The conditions of `[policy.require]` or of one profile's `require`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    /// Each key with its patterns, in the configuration's order.
    pub patterns: Vec<(Key, Vec<String>)>,
    /// The ticket's Responsible must be an agent other than the one who holds the lock.
    pub responsible_differs: bool,
}

/// The help desk's own user (ID 1, `root@localhost`): what OTRS, Znuny and OTOBO make a
/// ticket's Responsible when nobody was named. It is nobody's approval.
const HELPDESK_ADMIN_ID: u64 = 1;

/// A condition the ticket does not meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmet {
    /// What the ticket has: "ticket type is Incident".
    pub found: String,
    /// What was wanted: "Change", "a Responsible other than agent1".
    pub wanted: String,
    /// The configuration's key: `type`, `dynamic_field.ChangeApproval`, `responsible_differs`.
    pub key: String,
}

impl Unmet {
    /// In the agent's words, for `needs` (a profile's name, or "every ticket"): "ticket type
    /// is Incident, db-admin needs Change".
    pub fn words(&self, needs: &str) -> String {
        format!("{}, {needs} needs {}", self.found, self.wanted)
    }
}

impl Conditions {
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty() && !self.responsible_differs
    }

    /// The first condition the ticket (`facts`, its lock held by `holder`) does not meet.
    pub fn unmet(&self, facts: &Facts, holder: Option<&str>) -> Option<Unmet> {
        for (key, patterns) in &self.patterns {
            let values = key.values(facts);
            if values.iter().any(|v| patterns.iter().any(|p| glob(p, v))) {
                continue;
            }
            let found = match values.as_slice() {
                [] => format!("{} is not set", key.words()),
                [one] => format!("{} is {}", key.words(), shown(one)),
                many => format!(
                    "{} is {}",
                    key.words(),
                    many.iter().map(|v| shown(v)).collect::<Vec<_>>().join(", ")
                ),
            };
            return Some(Unmet {
                found,
                wanted: patterns.join(" or "),
                key: key.config(),
            });
        }
        if self.responsible_differs {
            let holder = holder.unwrap_or_default();
            let responsible = facts
                .responsible
                .as_deref()
                .filter(|_| facts.responsible_id != Some(HELPDESK_ADMIN_ID));
            let found = match responsible {
                None => Some("the ticket has no Responsible".to_string()),
                Some(r) if holder.is_empty() || r.eq_ignore_ascii_case(holder) => Some(format!(
                    "its Responsible is {}, who holds the lock",
                    shown(r)
                )),
                Some(_) => None,
            };
            if let Some(found) = found {
                return Some(Unmet {
                    found,
                    wanted: "a Responsible other than the agent who locks it".into(),
                    key: "responsible_differs".into(),
                });
            }
        }
        None
    }

    /// The conditions in words, one per key: "ticket type is Change".
    pub fn describe(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .patterns
            .iter()
            .map(|(key, patterns)| format!("{} is {}", key.words(), patterns.join(" or ")))
            .collect();
        if self.responsible_differs {
            out.push("its Responsible is an agent other than the one who locks it".into());
        }
        out
    }
}

/// A ticket's value as said to the agent and journaled: shortened (printing escapes it).
fn shown(value: &str) -> String {
    crate::escape::shorten(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        let mut facts = Facts {
            queue: Some("Change::Approved".into()),
            kind: Some("Change".into()),
            state: Some("approved".into()),
            priority: Some("3 normal".into()),
            service: Some("Database".into()),
            sla: Some("Gold".into()),
            customer_id: Some("acme".into()),
            responsible: Some("agent2".into()),
            responsible_id: Some(3),
            ..Facts::default()
        };
        facts
            .fields
            .insert("ChangeApproval".into(), vec!["approved".into()]);
        facts
            .fields
            .insert("Teams".into(), vec!["dba".into(), "ops".into()]);
        facts
    }

    fn on(key: Key, patterns: &[&str]) -> Conditions {
        Conditions {
            patterns: vec![(key, patterns.iter().map(|p| p.to_string()).collect())],
            responsible_differs: false,
        }
    }

    #[test]
    fn each_key_matches_its_value_case_insensitively_with_globs() {
        let facts = facts();
        for (key, yes, no) in [
            (Key::Queue, "change::*", "Maintenance"),
            (Key::Type, "CHANGE", "Incident"),
            (Key::State, "approved", "new"),
            (Key::Priority, "3 *", "5 very high"),
            (Key::Service, "Data?ase", "Mail"),
            (Key::Sla, "gold", "Silver"),
            (Key::CustomerId, "acme", "globex"),
            (Key::Field("ChangeApproval".into()), "Approved", "pending"),
        ] {
            assert_eq!(on(key.clone(), &[yes]).unmet(&facts, Some("agent1")), None);
            assert_eq!(
                on(key.clone(), &["x", yes]).unmet(&facts, Some("agent1")),
                None
            );
            let unmet = on(key.clone(), &[no])
                .unmet(&facts, Some("agent1"))
                .unwrap();
            assert_eq!(unmet.key, key.config());
            assert_eq!(unmet.wanted, no);
        }
    }

    #[test]
    fn a_multiselect_matches_when_any_value_matches() {
        let facts = facts();
        let teams = || Key::Field("Teams".into());
        assert_eq!(on(teams(), &["ops"]).unmet(&facts, None), None);
        assert_eq!(on(teams(), &["DBA"]).unmet(&facts, None), None);
        let unmet = on(teams(), &["net"]).unmet(&facts, None).unwrap();
        assert_eq!(unmet.found, "field Teams is dba, ops");
        // A field the ticket lacks, or leaves empty, matches nothing.
        let unmet = on(Key::Field("Missing".into()), &["*"])
            .unmet(&facts, None)
            .unwrap();
        assert_eq!(unmet.found, "field Missing is not set");
    }

    #[test]
    fn the_agents_words_name_the_value_and_what_was_needed() {
        let mut facts = facts();
        facts.kind = Some("Incident".into());
        let unmet = on(Key::Type, &["Change"]).unmet(&facts, None).unwrap();
        assert_eq!(
            unmet.words("db-admin"),
            "ticket type is Incident, db-admin needs Change"
        );
        let unmet = on(Key::Queue, &["Maintenance", "Change::*"]);
        facts.queue = Some("Raw".into());
        assert_eq!(
            unmet.unmet(&facts, None).unwrap().words("every ticket"),
            "ticket queue is Raw, every ticket needs Maintenance or Change::*"
        );
        // A long value is shortened (escaping is the printing's business: see escape).
        facts.kind = Some("x".repeat(500));
        let unmet = on(Key::Type, &["Change"]).unmet(&facts, None).unwrap();
        assert!(unmet.found.contains("more characters)"), "{}", unmet.found);
    }

    #[test]
    fn four_eyes_need_a_responsible_other_than_the_lock_holder() {
        let four_eyes = Conditions {
            patterns: Vec::new(),
            responsible_differs: true,
        };
        let mut facts = facts();
        // Another agent is responsible: met.
        assert_eq!(four_eyes.unmet(&facts, Some("agent1")), None);
        // The agent who holds the lock is also responsible (in any case): not met.
        let unmet = four_eyes.unmet(&facts, Some("AGENT2")).unwrap();
        assert_eq!(unmet.key, "responsible_differs");
        assert_eq!(unmet.found, "its Responsible is agent2, who holds the lock");
        // Nobody holds the lock: nobody to differ from.
        assert!(four_eyes.unmet(&facts, None).is_some());
        // No Responsible, or the help desk's own user (its default): no second person.
        facts.responsible = None;
        assert_eq!(
            four_eyes.unmet(&facts, Some("agent1")).unwrap().found,
            "the ticket has no Responsible"
        );
        facts.responsible = Some("root@localhost".into());
        facts.responsible_id = Some(1);
        assert!(four_eyes.unmet(&facts, Some("agent1")).is_some());
        assert_eq!(
            four_eyes.describe(),
            ["its Responsible is an agent other than the one who locks it"]
        );
    }
}
