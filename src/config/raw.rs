//! The configuration file as serde reads it: every section and key, unknown keys refused.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::model::{ApiGeneration, NsxAuth, NsxKind, Resolve};

/// Declares a raw config section: the keys every service takes, plus its own.
macro_rules! raw_service_section {
    ($name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        #[derive(Deserialize, Default)]
        #[serde(deny_unknown_fields)]
        pub(super) struct $name {
            pub(super) url: Option<String>,
            pub(super) user: Option<String>,
            pub(super) password: Option<String>,
            pub(super) password_file: Option<PathBuf>,
            pub(super) password_env: Option<String>,
            pub(super) password_command: Option<Vec<String>>,
            pub(super) ca_file: Option<PathBuf>,
            pub(super) tls_sha256: Option<String>,
            pub(super) insecure: Option<bool>,
            $(pub(super) $field: $ty,)*
        }

        impl $name {
            pub(super) fn endpoint_keys(&self) -> RawEndpoint<'_> {
                RawEndpoint {
                    url: self.url.as_deref(),
                    user: self.user.as_deref(),
                    password: self.password.as_deref(),
                    password_file: self.password_file.as_deref(),
                    password_env: self.password_env.as_deref(),
                    password_command: self.password_command.as_deref(),
                    ca_file: self.ca_file.as_deref(),
                    tls_sha256: self.tls_sha256.as_deref(),
                    insecure: self.insecure,
                    client_identity: false,
                }
            }
        }
    };
}

raw_service_section!(RawOtrs {
    vm_field: Option<String>,
    profile_field: Option<String>,
    notes: Option<bool>,
    notify_agents: Option<bool>,
    version: Option<u32>,
});
raw_service_section!(RawVcenter {
    api: Option<ApiGeneration>,
    folder: Option<String>,
    datacenter: Option<String>,
});
raw_service_section!(RawNsx {
    kind: Option<NsxKind>,
    tag: Option<String>,
    scope: Option<String>,
    auth: Option<NsxAuth>,
    resolve: Option<Resolve>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    verify_group: Option<String>,
    verify_domain: Option<String>,
});

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    pub(super) default_profile: Option<String>,
    pub(super) max_duration: Option<String>,
    pub(super) manual_duration: Option<String>,
    pub(super) max_grant: Option<String>,
    pub(super) allow: Option<Vec<String>>,
    pub(super) deny: Option<Vec<String>>,
    pub(super) require: Option<RawRequire>,
}

/// `[policy.require]`, `[profiles.NAME.require]`: conditions on the ticket that opens access.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRequire {
    pub(super) queue: Option<Vec<String>>,
    #[serde(rename = "type")]
    pub(super) kind: Option<Vec<String>>,
    pub(super) state: Option<Vec<String>>,
    pub(super) priority: Option<Vec<String>>,
    pub(super) service: Option<Vec<String>>,
    pub(super) sla: Option<Vec<String>>,
    pub(super) customer_id: Option<Vec<String>>,
    pub(super) dynamic_field: Option<std::collections::BTreeMap<String, Vec<String>>>,
    pub(super) responsible_differs: Option<bool>,
}

/// `[profiles.NAME]`: an access profile, with its own tag.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProfile {
    pub(super) tag: Option<String>,
    pub(super) verify_group: Option<String>,
    pub(super) verify_domain: Option<String>,
    pub(super) services: Option<Vec<String>>,
    pub(super) scope: Option<String>,
    pub(super) allow: Option<Vec<String>>,
    pub(super) deny: Option<Vec<String>>,
    pub(super) require: Option<RawRequire>,
}

/// `[source]`: from where access opens.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    pub(super) mode: Option<String>,
    pub(super) security_policy: Option<String>,
    pub(super) domain: Option<String>,
    pub(super) services: Option<Vec<String>>,
    pub(super) verify_realized: Option<bool>,
    pub(super) desktop: Option<String>,
    pub(super) widest_ipv4: Option<i64>,
    pub(super) widest_ipv6: Option<i64>,
}

/// `[state]`: where the leases and the journal are kept.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawState {
    pub(super) backend: Option<String>,
    pub(super) url: Option<String>,
    pub(super) password: Option<String>,
    pub(super) password_file: Option<PathBuf>,
    pub(super) password_env: Option<String>,
    pub(super) password_command: Option<Vec<String>>,
    pub(super) ca_file: Option<PathBuf>,
    pub(super) accept_unverified_server: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) syslog: Option<bool>,
    pub(super) facility: Option<String>,
    pub(super) socket: Option<PathBuf>,
    pub(super) rotate_size: Option<String>,
    pub(super) rotate_age: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) state_dir: Option<PathBuf>,
    pub(super) deadline: Option<String>,
    pub(super) otrs: Option<RawOtrs>,
    pub(super) vcenter: Option<RawVcenter>,
    pub(super) nsx: Option<RawNsx>,
    #[serde(default)]
    pub(super) policy: RawPolicy,
    #[serde(default)]
    pub(super) profiles: std::collections::BTreeMap<String, RawProfile>,
    pub(super) source: Option<RawSource>,
    #[serde(default)]
    pub(super) agents: std::collections::BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub(super) log: RawLog,
    pub(super) state: Option<RawState>,
}

pub(super) struct RawEndpoint<'a> {
    pub(super) url: Option<&'a str>,
    pub(super) user: Option<&'a str>,
    pub(super) password: Option<&'a str>,
    pub(super) password_file: Option<&'a Path>,
    pub(super) password_env: Option<&'a str>,
    pub(super) password_command: Option<&'a [String]>,
    pub(super) ca_file: Option<&'a Path>,
    pub(super) tls_sha256: Option<&'a str>,
    pub(super) insecure: Option<bool>,
    /// Whether the service is logged in to with a client certificate (no password then).
    pub(super) client_identity: bool,
}
