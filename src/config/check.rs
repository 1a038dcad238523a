//! Checking the raw configuration into the typed [`Config`], every problem kept with its key.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::model::*;
use super::raw::{RawConfig, RawEndpoint, RawNsx, RawOtrs, RawVcenter};
use super::secret::{MAX_CONFIG, Secret, first_line, read_trusted, run_password_command};
use super::url::{check_url, is_moref};
use crate::time::parse_duration;

pub(super) struct Checker {
    pub(super) problems: Vec<String>,
    /// Whether to read password files and run password commands (not when fuzzing).
    pub(super) read_secrets: bool,
    /// How long a password_command may take: the run's deadline.
    pub(super) command_timeout: Duration,
    pub(super) base: PathBuf,
    pub(super) world_readable: bool,
}

impl Checker {
    fn problem(&mut self, key: &str, what: impl fmt::Display) {
        self.problems.push(format!("{key}: {what}"));
    }

    pub(super) fn config(&mut self, raw: RawConfig) -> Option<Config> {
        let state_dir = match raw.state_dir {
            Some(dir) => self.resolve(&dir),
            None => directories::ProjectDirs::from("", "", "otnsx")
                .map(|d| d.data_dir().to_path_buf())
                .unwrap_or_else(|| {
                    self.problem("state_dir", "no default for this user; set it");
                    PathBuf::new()
                }),
        };
        let deadline = self.duration("deadline", raw.deadline.as_deref(), "20s", true);
        if !deadline.is_zero() {
            self.command_timeout = deadline;
        }
        let otrs = raw.otrs.map(|o| self.otrs(&o));
        let vcenter = raw.vcenter.as_ref().map(|v| self.vcenter(v));
        let has_profiles = !raw.profiles.is_empty();
        let nsx = match raw.nsx {
            Some(n) => self.nsx(&n, raw.vcenter.is_some(), has_profiles),
            None => {
                self.problem("nsx", "section missing");
                None
            }
        };
        let nsx = nsx?;
        if vcenter.is_none() && (nsx.kind == NsxKind::NsxV || nsx.resolve == Resolve::Vcenter) {
            let why = if nsx.kind == NsxKind::NsxV {
                "nsx.kind = \"nsx-v\" needs it"
            } else {
                "nsx.resolve = \"vcenter\" needs it"
            };
            self.problem("vcenter", format!("section missing ({why})"));
        }
        for (key, patterns) in [
            ("policy.allow", &raw.policy.allow),
            ("policy.deny", &raw.policy.deny),
        ] {
            self.patterns(key, patterns.as_deref().unwrap_or_default());
        }
        let mut profiles = self.profiles(&raw.profiles, &nsx);
        let source = self.source(raw.source.as_ref(), &raw.agents, &nsx, &mut profiles);
        if source.is_some() && profiles.iter().any(|p| p.verify.is_some()) {
            self.problem(
                "verify_group",
                "with [source] mode = \"agent\" no tag puts VMs into a group: leave it out (source.verify_realized waits for the rules)",
            );
        }
        if source.is_none() {
            for p in profiles.iter().filter(|p| !p.services.is_empty()) {
                let name = p.key.as_deref().unwrap_or_default();
                self.problem(
                    &format!("profiles.{name}.services"),
                    "used by per-agent rules only: set [source] mode = \"agent\", or leave it out",
                );
            }
        }
        if nsx.verify.is_some() && nsx.tag.is_empty() {
            self.problem(
                "nsx.verify_group",
                "verifies the group of [nsx] tag's profile; without nsx.tag there is none",
            );
        }
        let default_profile = match raw.policy.default_profile.as_deref() {
            Some(name) => match profiles.iter().find(|p| p.name == name) {
                Some(p) => p.key.clone(),
                None => {
                    let names: Vec<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
                    self.problem(
                        "policy.default_profile",
                        format!("{name:?} is no profile (there are: {})", names.join(", ")),
                    );
                    None
                }
            },
            None if !nsx.tag.is_empty() => None,
            None => match profiles.as_slice() {
                [only] => only.key.clone(),
                [] => None, // nsx.tag is missing, and said so
                _ => {
                    self.problem(
                        "policy.default_profile",
                        "missing; without [nsx] tag, name the profile a ticket gets when it names none",
                    );
                    None
                }
            },
        };
        let max_duration = self.duration(
            "policy.max_duration",
            raw.policy.max_duration.as_deref(),
            "8h",
            true,
        );
        let max_grant = match raw.policy.max_grant.as_deref() {
            Some(text) => self.duration("policy.max_grant", Some(text), "", true),
            None => max_duration,
        };
        let manual_duration = self.duration(
            "policy.manual_duration",
            raw.policy.manual_duration.as_deref(),
            "1h",
            true,
        );
        if manual_duration > max_grant && !max_grant.is_zero() {
            self.problem(
                "policy.manual_duration",
                format!(
                    "{} is longer than policy.max_grant ({})",
                    crate::time::format_duration(manual_duration),
                    crate::time::format_duration(max_grant)
                ),
            );
        }
        let require = self.require("policy.require", raw.policy.require.as_ref());
        let policy = Policy {
            require,
            vms: crate::policy::VmPolicy {
                allow: raw.policy.allow.clone().unwrap_or_default(),
                deny: raw.policy.deny.clone().unwrap_or_default(),
            },
            max_duration,
            max_grant,
            manual_duration,
            default_profile,
        };
        let facility_name = raw.log.facility.as_deref().unwrap_or("authpriv");
        let facility = super::model::FACILITIES
            .iter()
            .find(|(name, _)| *name == facility_name)
            .map(|(_, code)| *code)
            .unwrap_or_else(|| {
                self.problem("log.facility", format!("{facility_name:?} is not a syslog facility (authpriv, auth, daemon, local0 to local7, ...)"));
                10
            });
        let rotate_size = match crate::state::rotation::parse_size(
            raw.log.rotate_size.as_deref().unwrap_or("64MiB"),
        ) {
            Ok(size) if size < crate::state::rotation::MIN_SIZE => {
                self.problem("log.rotate_size", "must be at least 4KiB");
                size
            }
            Ok(size) => size,
            Err(why) => {
                self.problem("log.rotate_size", why);
                0
            }
        };
        let rotate_age = self.duration(
            "log.rotate_age",
            raw.log.rotate_age.as_deref(),
            "30d",
            false,
        );
        let log = Log {
            rotation: crate::state::rotation::Rotation {
                size: rotate_size,
                age: (!rotate_age.is_zero()).then_some(rotate_age),
            },
            syslog: raw.log.syslog.unwrap_or(false),
            facility,
            socket: raw
                .log
                .socket
                .as_deref()
                .map_or_else(|| PathBuf::from("/dev/log"), |p| self.resolve(p)),
        };
        let database = raw.state.as_ref().and_then(|s| self.state(s));
        Some(Config {
            log,
            database,
            state_dir,
            deadline,
            otrs: otrs.flatten(),
            vcenter: vcenter.flatten(),
            nsx,
            policy,
            profiles,
            source,
        })
    }

    /// `[state]`: `backend = "file"` (the default) or `"postgres"` with its database.
    fn state(&mut self, raw: &super::raw::RawState) -> Option<Database> {
        let backend = raw.backend.as_deref().unwrap_or("file");
        let keys = [
            ("url", raw.url.is_some()),
            ("password", raw.password.is_some()),
            ("password_file", raw.password_file.is_some()),
            ("password_env", raw.password_env.is_some()),
            ("password_command", raw.password_command.is_some()),
            ("ca_file", raw.ca_file.is_some()),
            (
                "accept_unverified_server",
                raw.accept_unverified_server.is_some(),
            ),
        ];
        match backend {
            "file" => {
                for (key, _) in keys.iter().filter(|(_, given)| *given) {
                    self.problem(
                        &format!("state.{key}"),
                        "only for backend = \"postgres\"; the file backend keeps the state in state_dir",
                    );
                }
                return None;
            }
            "postgres" => {}
            other => {
                self.problem(
                    "state.backend",
                    format!("{other:?} is not a backend (\"file\" or \"postgres\")"),
                );
                return None;
            }
        }
        let parsed = match raw.url.as_deref() {
            None => {
                self.problem(
                    "state.url",
                    "missing; e.g. postgres://otnsx@db.example.com/otnsx",
                );
                None
            }
            Some(url) => match super::url::check_database_url(url) {
                Ok(parsed) => Some(parsed),
                Err(why) => {
                    self.problem("state.url", why);
                    None
                }
            },
        };
        let ca_file = raw.ca_file.as_deref().map(|p| self.resolve(p));
        if let Some(ca) = &ca_file
            && !ca.is_file()
        {
            self.problem(
                "state.ca_file",
                format!("{} is not a readable file", ca.display()),
            );
        }
        let endpoint = RawEndpoint {
            url: raw.url.as_deref(),
            user: parsed.as_ref().map(|p| p.user.as_str()),
            password: raw.password.as_deref(),
            password_file: raw.password_file.as_deref(),
            password_env: raw.password_env.as_deref(),
            password_command: raw.password_command.as_deref(),
            ca_file: raw.ca_file.as_deref(),
            tls_sha256: None,
            insecure: None,
            client_identity: false,
        };
        let password = self.password("state", &endpoint);
        let (parsed, password) = (parsed?, password?);
        if self.read_secrets {
            crate::secrets::password(&parsed.user, password.expose());
        }
        use super::url::SslMode;
        let unverified = raw.accept_unverified_server == Some(true);
        let (tls, verify_server) = match parsed.sslmode.unwrap_or(SslMode::VerifyFull) {
            // Loopback without ca_file: plain, as http:// is for loopback only.
            SslMode::VerifyFull => (!parsed.loopback || ca_file.is_some(), true),
            SslMode::Require if unverified => (true, false),
            SslMode::Require => {
                self.problem(
                    "state.url",
                    "sslmode=require does not verify the server (anyone on the path can read the password and the leases): use sslmode=verify-full (the default) with ca_file naming the CA, or add accept_unverified_server = true to [state] to take that risk",
                );
                return None;
            }
            SslMode::Disable if parsed.loopback => (false, true),
            SslMode::Disable => {
                self.problem(
                    "state.url",
                    "sslmode=disable is for loopback addresses only (127.0.0.1, ::1, localhost): use sslmode=verify-full (the default)",
                );
                return None;
            }
        };
        if unverified && verify_server {
            self.problem(
                "state.accept_unverified_server",
                "only with sslmode=require in state.url (the server is verified otherwise); remove it",
            );
        }
        if !tls && ca_file.is_some() {
            self.problem(
                "state.ca_file",
                "sslmode=disable makes no TLS connection; remove ca_file or sslmode",
            );
        }
        Some(Database {
            url: raw.url.clone().unwrap_or_default(),
            tls,
            verify_server,
            connect_timeout: parsed.connect_timeout,
            hosts: parsed.hosts,
            user: parsed.user,
            dbname: parsed.dbname,
            password,
            ca_file,
        })
    }

    fn otrs(&mut self, raw: &RawOtrs) -> Option<OtrsConfig> {
        let vm_field = raw.vm_field.clone().unwrap_or_else(|| "VMName".into());
        if vm_field.trim().is_empty() {
            self.problem("otrs.vm_field", "must name the ticket's dynamic field");
        }
        let version = raw.version.unwrap_or(6);
        if version < 5 {
            self.problem(
                "otrs.version",
                "otnsx needs OTRS 5 or later (Znuny and OTOBO count as 6)",
            );
        }
        if let Some(field) = &raw.profile_field
            && (field.trim().is_empty() || *field == vm_field)
        {
            self.problem(
                "otrs.profile_field",
                "must name a dynamic field of its own (not otrs.vm_field)",
            );
        }
        let endpoint = self.endpoint("otrs", &raw.endpoint_keys());
        Some(OtrsConfig {
            endpoint: endpoint?,
            vm_field,
            profile_field: raw.profile_field.clone(),
            notes: raw.notes.unwrap_or(true),
            notify_agents: raw.notify_agents.unwrap_or(false),
            version,
        })
    }

    fn vcenter(&mut self, raw: &RawVcenter) -> Option<VcenterConfig> {
        for (key, value) in [("folder", &raw.folder), ("datacenter", &raw.datacenter)] {
            if let Some(v) = value
                && !is_moref(v)
            {
                self.problem(
                    &format!("vcenter.{key}"),
                    format!("{v:?} is not a managed object id like group-v22 or datacenter-2"),
                );
            }
        }
        let endpoint = self.endpoint("vcenter", &raw.endpoint_keys());
        Some(VcenterConfig {
            endpoint: endpoint?,
            api: raw.api.unwrap_or(ApiGeneration::Auto),
            folder: raw.folder.clone(),
            datacenter: raw.datacenter.clone(),
        })
    }

    fn nsx(&mut self, raw: &RawNsx, has_vcenter: bool, has_profiles: bool) -> Option<NsxConfig> {
        let kind = raw.kind;
        if kind.is_none() {
            self.problem(
                "nsx.kind",
                "missing; write kind = \"nsx-policy\" (NSX-T 3.2+, NSX 4.x, Policy API), \"nsx-t\" (NSX-T 3.x, NSX 4.x, Manager API) or \"nsx-v\"",
            );
        }
        let tag = raw.tag.clone().unwrap_or_default();
        // With [profiles.NAME] sections, [nsx] tag may be left out: each profile has its own.
        if tag.trim().is_empty() && (raw.tag.is_some() || !has_profiles) {
            self.problem(
                "nsx.tag",
                "missing; name the security tag that opens access (or define [profiles.NAME] sections, each with its tag)",
            );
        }
        let scope = raw.scope.clone().unwrap_or_default();
        match kind {
            Some(k) if k.json() && scope.trim().is_empty() && raw.tag.is_some() => {
                self.problem(
                    "nsx.scope",
                    "missing; NSX-T tags are a scope and a value, e.g. scope = \"otnsx\"",
                );
            }
            Some(NsxKind::NsxV) => {
                for (key, given) in [
                    ("scope", raw.scope.is_some()),
                    ("auth", raw.auth.is_some()),
                    ("resolve", raw.resolve.is_some()),
                ] {
                    if given {
                        self.problem(
                            &format!("nsx.{key}"),
                            "applies to kind = \"nsx-t\" and \"nsx-policy\" only",
                        );
                    }
                }
            }
            _ => {}
        }
        for (key, value) in [("nsx.scope", &scope), ("nsx.tag", &tag)] {
            self.tag_part(key, value, kind);
        }
        let resolve = raw.resolve.unwrap_or(if has_vcenter {
            Resolve::Vcenter
        } else {
            Resolve::Nsx
        });
        let mut keys = raw.endpoint_keys();
        keys.client_identity = raw.client_cert.is_some() || raw.client_key.is_some();
        let client = self.client_identity(raw, kind);
        let endpoint = self
            .endpoint("nsx", &keys)
            .map(|endpoint| Endpoint { client, ..endpoint });
        Some(NsxConfig {
            kind: kind?,
            endpoint: endpoint?,
            tag,
            scope,
            auth: raw.auth.unwrap_or(NsxAuth::Basic),
            resolve,
            verify: self.verify_group(raw, kind),
        })
    }

    /// A tag's scope or value on the JSON kinds: at most 128 characters, without `|` (a Policy
    /// group's condition joins them with it).
    fn tag_part(&mut self, key: &str, value: &str, kind: Option<NsxKind>) {
        if kind.is_some_and(NsxKind::json) && (value.chars().count() > 128 || value.contains('|')) {
            self.problem(key, "at most 128 characters, without '|'");
        }
    }

    /// The access profiles: `[nsx] tag`'s (when given) as `default`, then each
    /// `[profiles.NAME]` with its tag (and scope, by default `nsx.scope`) and its own
    /// allow/deny; no two with the same tag.
    fn profiles(
        &mut self,
        raw: &std::collections::BTreeMap<String, crate::config::raw::RawProfile>,
        nsx: &NsxConfig,
    ) -> Vec<Profile> {
        let json = nsx.kind.json();
        let mut out = Vec::new();
        if !nsx.tag.is_empty() {
            out.push(Profile {
                name: NSX_TAG_PROFILE.into(),
                key: None,
                tag: nsx.tag.clone(),
                scope: nsx.scope.clone(),
                vms: None,
                services: Vec::new(),
                verify: nsx.verify.clone(),
                require: Default::default(),
            });
        }
        for (name, p) in raw {
            let at = |key: &str| format!("profiles.{name}.{key}");
            if !is_profile_name(name) || name == NSX_TAG_PROFILE {
                self.problem(
                    &format!("profiles.{name}"),
                    "a profile's name is 1 to 32 of a-z, 0-9, - and _, starting with a letter, and not \"default\" (the name of [nsx] tag's profile)",
                );
                continue;
            }
            let tag = p.tag.clone().unwrap_or_default();
            if tag.trim().is_empty() {
                self.problem(
                    &at("tag"),
                    "missing; name the tag this profile opens access with",
                );
            }
            let scope = match (&p.scope, json) {
                (Some(_), false) => {
                    self.problem(
                        &at("scope"),
                        "applies to kind = \"nsx-t\" and \"nsx-policy\" only",
                    );
                    String::new()
                }
                (Some(scope), true) => scope.clone(),
                (None, _) => nsx.scope.clone(),
            };
            if json && scope.trim().is_empty() {
                self.problem(&at("scope"), "missing (and no nsx.scope to default to)");
            }
            self.tag_part(&at("scope"), &scope, Some(nsx.kind));
            self.tag_part(&at("tag"), &tag, Some(nsx.kind));
            for (key, patterns) in [("allow", &p.allow), ("deny", &p.deny)] {
                self.patterns(&at(key), patterns.as_deref().unwrap_or_default());
            }
            let vms = (p.allow.is_some() || p.deny.is_some()).then(|| crate::policy::VmPolicy {
                allow: p.allow.clone().unwrap_or_else(|| vec!["*".into()]),
                deny: p.deny.clone().unwrap_or_default(),
            });
            if let Some(other) = out
                .iter()
                .find(|o: &&Profile| o.tag == tag && o.scope == scope)
            {
                self.problem(
                    &at("tag"),
                    format!("the same tag as profile {:?}: each profile needs its own tag (and security group)", other.name),
                );
            }
            let services = p.services.clone().unwrap_or_default();
            self.services(&at("services"), &services);
            let verify = self.verify_group_at(
                &format!("profiles.{name}"),
                p.verify_group.as_ref(),
                p.verify_domain.as_ref(),
                Some(nsx.kind),
            );
            let require = self.require(&at("require"), p.require.as_ref());
            out.push(Profile {
                name: name.clone(),
                key: Some(name.clone()),
                tag,
                scope,
                vms,
                services,
                verify,
                require,
            });
        }
        out
    }

    /// Policy service paths: each `/infra/services/ID`, at most 128.
    fn services(&mut self, key: &str, services: &[String]) {
        if services.len() > 128 {
            self.problem(key, "at most 128 services");
        }
        for service in services {
            let id = service.strip_prefix("/infra/services/").unwrap_or("");
            if id.is_empty()
                || id
                    .chars()
                    .any(|c| c == '/' || c.is_whitespace() || c.is_control())
            {
                self.problem(
                    key,
                    format!(
                        "{:?} is not a Policy service path like \"/infra/services/SSH\"",
                        crate::escape::shorten(service)
                    ),
                );
            }
        }
    }

    /// `[source]` and `[agents]`: with `mode = "agent"` (nsx-policy only) a security policy to
    /// write rules into, each profile's services, and every agent's addresses checked.
    fn source(
        &mut self,
        raw: Option<&crate::config::raw::RawSource>,
        agents: &std::collections::BTreeMap<String, Vec<String>>,
        nsx: &NsxConfig,
        profiles: &mut [Profile],
    ) -> Option<AgentSource> {
        let Some(raw) = raw else {
            if !agents.is_empty() {
                self.problem("agents", "set only with [source] mode = \"agent\"");
            }
            return None;
        };
        match raw.mode.as_deref() {
            Some("agent") => {}
            None | Some("any") => {
                for (key, given) in [
                    ("security_policy", raw.security_policy.is_some()),
                    ("domain", raw.domain.is_some()),
                    ("services", raw.services.is_some()),
                    ("verify_realized", raw.verify_realized.is_some()),
                    ("desktop", raw.desktop.is_some()),
                    ("widest_ipv4", raw.widest_ipv4.is_some()),
                    ("widest_ipv6", raw.widest_ipv6.is_some()),
                ] {
                    if given {
                        self.problem(&format!("source.{key}"), "applies to mode = \"agent\" only");
                    }
                }
                if !agents.is_empty() {
                    self.problem("agents", "set only with [source] mode = \"agent\"");
                }
                return None;
            }
            Some(other) => {
                self.problem(
                    "source.mode",
                    format!("{:?}: write \"any\" (the tag opens to every admin desktop) or \"agent\" (a rule per locking agent)", crate::escape::shorten(other)),
                );
                return None;
            }
        }
        if nsx.kind != NsxKind::NsxPolicy {
            self.problem("source.mode", "\"agent\" needs nsx.kind = \"nsx-policy\" (the rules are written through the Policy API)");
        }
        let id_ok = |id: &str| {
            !id.is_empty()
                && id.chars().count() <= 255
                && !id
                    .chars()
                    .any(|c| c == '/' || c.is_whitespace() || c.is_control())
        };
        let policy = raw.security_policy.clone().unwrap_or_default();
        if !id_ok(&policy) {
            self.problem("source.security_policy", "missing; the id of the security policy otnsx writes its rules into (the site creates it, above its deny rule)");
        }
        let domain = raw.domain.clone().unwrap_or_else(|| "default".into());
        if !id_ok(&domain) {
            self.problem("source.domain", "a Policy domain id");
        }
        let default_services = raw.services.clone().unwrap_or_default();
        self.services("source.services", &default_services);
        for profile in profiles.iter_mut() {
            if profile.key.is_none() {
                profile.services = default_services.clone();
            }
            if profile.services.is_empty() {
                let key = match &profile.key {
                    None => "source.services".to_string(),
                    Some(name) => format!("profiles.{name}.services"),
                };
                self.problem(&key, format!("missing: profile {:?} needs the services its rules open, e.g. [\"/infra/services/SSH\"]", profile.name));
            }
        }
        let widest_ipv4 = self.widest("source.widest_ipv4", raw.widest_ipv4, 24, 8..=32);
        let widest_ipv6 = self.widest("source.widest_ipv6", raw.widest_ipv6, 64, 32..=128);
        self.agents(agents, widest_ipv4, widest_ipv6);
        if let Some(pattern) = &raw.desktop {
            let example = pattern.replace("{login}", "agent1");
            if !pattern.contains("{login}")
                || example.is_empty()
                || example.chars().count() > MAX_VM_NAME
                || example
                    .chars()
                    .any(|c| c.is_control() || c == '{' || c == '}')
            {
                self.problem(
                    "source.desktop",
                    "a desktop VM's name with {login} for the agent's login, like \"vdi-{login}\"",
                );
            }
        }
        Some(AgentSource {
            security_policy: policy,
            domain,
            verify_realized: raw.verify_realized.unwrap_or(false),
            agents: agents.clone(),
            desktop: raw.desktop.clone(),
        })
    }

    /// `source.widest_ipv4` / `widest_ipv6`: the shortest prefix an `[agents]` network may
    /// have, within `range`.
    fn widest(
        &mut self,
        key: &str,
        given: Option<i64>,
        default: u8,
        range: std::ops::RangeInclusive<u8>,
    ) -> u8 {
        match given {
            None => default,
            Some(n) => match u8::try_from(n) {
                Ok(n) if range.contains(&n) => n,
                _ => {
                    self.problem(
                        key,
                        format!(
                            "{n}: a prefix length from {} to {} (default {default}); any address is never accepted",
                            range.start(),
                            range.end()
                        ),
                    );
                    default
                }
            },
        }
    }

    /// `[agents]`: each login's desktop networks, 1 to 128 of them, each a network a desktop
    /// can own (not any address, unspecified, loopback, link-local, multicast, broadcast or
    /// IPv4-mapped), no host bit set, no wider than `/widest_ipv4` or `/widest_ipv6`, and in
    /// one agent's list only (an address in two lists would open one agent's VMs to the other).
    fn agents(
        &mut self,
        agents: &std::collections::BTreeMap<String, Vec<String>>,
        widest_ipv4: u8,
        widest_ipv6: u8,
    ) {
        let mut listed: Vec<(Network, &str, &str)> = Vec::new();
        for (agent, addresses) in agents {
            let key = format!("agents.{agent}");
            if !is_login(agent) {
                self.problem(
                    "agents",
                    format!("{:?} is not a login", crate::escape::shorten(agent)),
                );
            }
            if addresses.is_empty() || addresses.len() > 128 {
                self.problem(&key, "1 to 128 addresses");
            }
            for address in addresses {
                let shown = crate::escape::shorten(address);
                let network = match Network::parse(address) {
                    Ok(network) => network,
                    Err(NetworkError::Malformed) => {
                        self.problem(
                            &key,
                            format!("{shown:?} is not an IPv4 or IPv6 address or CIDR"),
                        );
                        continue;
                    }
                    Err(NetworkError::HostBits(network)) => {
                        let host = address.split('/').next().unwrap_or_default();
                        self.problem(
                            &key,
                            format!("{shown:?} has host bits set under its prefix: write the network {:?}, or the desktop's own address {host:?}", network.to_string()),
                        );
                        continue;
                    }
                };
                if let Some((what, range)) = network.no_desktop() {
                    self.problem(
                        &key,
                        format!("{shown:?} is {what} ({range}), never a desktop's own address: list the agent's desktop addresses, like \"10.1.2.3\" or \"fd00::3\""),
                    );
                    continue;
                }
                let (widest, setting) = match network.is_ipv4() {
                    true => (widest_ipv4, "widest_ipv4"),
                    false => (widest_ipv6, "widest_ipv6"),
                };
                if network.prefix < widest {
                    self.problem(
                        &key,
                        format!("{shown:?} is wider than /{widest}: list the desktop's own addresses, or, if the whole network is this agent's desktops, set [source] {setting} = {}", network.prefix),
                    );
                    continue;
                }
                listed.push((network, agent, address));
            }
        }
        // Sorted by first address, the wider first: every network that overlaps one holds
        // it, and those still open when it comes are a chain, each inside the one before.
        listed.sort();
        let mut open: Vec<(Network, &str, &str)> = Vec::new();
        for &(network, agent, address) in &listed {
            while open.last().is_some_and(|(o, _, _)| !o.overlaps(&network)) {
                open.pop();
            }
            if let Some((_, other, theirs)) = open.iter().rev().find(|(_, a, _)| *a != agent) {
                self.problem(
                    &format!("agents.{other}"),
                    format!(
                        "{:?} overlaps agents.{agent}'s {:?}: an address belongs to one agent's desktop, and a rule from it would let the other agent in too; keep it in one of the two lists",
                        crate::escape::shorten(theirs),
                        crate::escape::shorten(address)
                    ),
                );
            }
            open.push((network, agent, address));
        }
    }

    /// VM name patterns: each 1 to [`MAX_VM_NAME`] characters, no control characters.
    /// `[policy.require]` or `[profiles.NAME.require]` (at `at`): each key a list of 1 to 64
    /// patterns as `allow`'s, a dynamic field by its name.
    fn require(
        &mut self,
        at: &str,
        raw: Option<&crate::config::raw::RawRequire>,
    ) -> crate::require::Conditions {
        use crate::require::Key;
        let Some(raw) = raw else {
            return Default::default();
        };
        let mut patterns = Vec::new();
        let mut keys: Vec<(Key, &Option<Vec<String>>)> = vec![
            (Key::Queue, &raw.queue),
            (Key::Type, &raw.kind),
            (Key::State, &raw.state),
            (Key::Priority, &raw.priority),
            (Key::Service, &raw.service),
            (Key::Sla, &raw.sla),
            (Key::CustomerId, &raw.customer_id),
        ];
        let fields: Vec<(String, Option<Vec<String>>)> = (raw.dynamic_field.iter().flatten())
            .map(|(name, list)| (name.clone(), Some(list.clone())))
            .collect();
        for (name, list) in &fields {
            let valid = !name.is_empty()
                && name.len() <= 200
                && name.chars().all(|c| c.is_ascii_alphanumeric());
            if !valid {
                self.problem(
                    &format!("{at}.dynamic_field"),
                    format!(
                        "{:?} is not a dynamic field's name (letters and digits, as the help desk allows)",
                        crate::escape::shorten(name)
                    ),
                );
                continue;
            }
            keys.push((Key::Field(name.clone()), list));
        }
        for (key, list) in keys {
            let Some(list) = list else {
                continue;
            };
            let name = format!("{at}.{}", key.config());
            if list.is_empty() || list.len() > 64 {
                self.problem(
                    &name,
                    "1 to 64 patterns (an empty list would let no ticket open anything: leave the key out instead)",
                );
                continue;
            }
            self.patterns(&name, list);
            patterns.push((key, list.clone()));
        }
        crate::require::Conditions {
            patterns,
            responsible_differs: raw.responsible_differs.unwrap_or(false),
        }
    }

    fn patterns(&mut self, key: &str, patterns: &[String]) {
        for pattern in patterns {
            if pattern.is_empty()
                || pattern.chars().count() > MAX_VM_NAME
                || pattern.chars().any(char::is_control)
            {
                self.problem(
                    key,
                    format!("{pattern:?} is not a pattern of 1 to {MAX_VM_NAME} characters"),
                );
            }
        }
    }

    /// `nsx.verify_group` and `nsx.verify_domain`: an id without `/`, white space or control
    /// characters; the domain only beside a group, and not on NSX-V (which has none).
    fn verify_group(&mut self, raw: &RawNsx, kind: Option<NsxKind>) -> Option<VerifyGroup> {
        self.verify_group_at(
            "nsx",
            raw.verify_group.as_ref(),
            raw.verify_domain.as_ref(),
            kind,
        )
    }

    /// `{at}.verify_group` and `{at}.verify_domain` (`nsx` or `profiles.NAME`).
    fn verify_group_at(
        &mut self,
        at: &str,
        group: Option<&String>,
        domain: Option<&String>,
        kind: Option<NsxKind>,
    ) -> Option<VerifyGroup> {
        let bad = |id: &str| {
            id.is_empty()
                || id.chars().count() > 255
                || id
                    .chars()
                    .any(|c| c == '/' || c.is_whitespace() || c.is_control())
        };
        if let Some(d) = domain {
            let key = format!("{at}.verify_domain");
            if group.is_none() {
                self.problem(&key, format!("set only beside {at}.verify_group"));
            } else if kind == Some(NsxKind::NsxV) {
                self.problem(
                    &key,
                    "applies to kind = \"nsx-t\" and \"nsx-policy\" only: NSX-V security groups have no domain",
                );
            } else if bad(d) {
                self.problem(
                    &key,
                    "a Policy domain id (without '/', spaces or control characters)",
                );
            }
        }
        let group = group?;
        if bad(group) {
            let what = match kind {
                Some(NsxKind::NsxV) => "the security group's object id, like securitygroup-10",
                _ => "the Policy group's id (without '/', spaces or control characters)",
            };
            self.problem(&format!("{at}.verify_group"), what);
            return None;
        }
        Some(VerifyGroup {
            group: group.clone(),
            domain: domain.cloned().unwrap_or_else(|| "default".into()),
        })
    }

    /// `nsx.client_cert` and `nsx.client_key`: both or neither, NSX-T only; the key a secret
    /// (not readable by every user), both PEM that parses.
    fn client_identity(&mut self, raw: &RawNsx, kind: Option<NsxKind>) -> Option<ClientIdentity> {
        let (cert, key) = match (&raw.client_cert, &raw.client_key) {
            (None, None) => return None,
            (Some(cert), Some(key)) => (self.resolve(cert.as_path()), self.resolve(key.as_path())),
            (Some(_), None) => {
                self.problem(
                    "nsx.client_key",
                    "missing; client_cert needs its private key",
                );
                return None;
            }
            (None, Some(_)) => {
                self.problem(
                    "nsx.client_cert",
                    "missing; client_key needs its certificate",
                );
                return None;
            }
        };
        if kind == Some(NsxKind::NsxV) {
            self.problem(
                "nsx.client_cert",
                "applies to kind = \"nsx-t\" and \"nsx-policy\" only: NSX-V logs in with user and password",
            );
            return None;
        }
        if !self.read_secrets {
            return None;
        }
        let cert_pem = match read_trusted(&cert, MAX_CONFIG) {
            Ok((text, _)) => text,
            Err(why) => {
                self.problem("nsx.client_cert", why);
                return None;
            }
        };
        let (key_pem, meta) = match read_trusted(&key, MAX_CONFIG) {
            Ok(read) => read,
            Err(why) => {
                self.problem("nsx.client_key", why);
                return None;
            }
        };
        if meta.permissions().mode() & 0o004 != 0 {
            self.problem(
                "nsx.client_key",
                format!("{} is world-readable; chmod o-r it", key.display()),
            );
            return None;
        }
        let items = |pem: &str| -> Vec<ureq::tls::PemItem<'static>> {
            ureq::tls::parse_pem(pem.as_bytes())
                .filter_map(Result::ok)
                .collect()
        };
        if !items(&cert_pem)
            .iter()
            .any(|i| matches!(i, ureq::tls::PemItem::Certificate(_)))
        {
            self.problem(
                "nsx.client_cert",
                format!("{} holds no PEM certificate", cert.display()),
            );
            return None;
        }
        if !items(&key_pem)
            .iter()
            .any(|i| matches!(i, ureq::tls::PemItem::PrivateKey(_)))
        {
            self.problem(
                "nsx.client_key",
                format!("{} holds no PEM private key", key.display()),
            );
            return None;
        }
        crate::secrets::token(key_pem.trim());
        Some(ClientIdentity {
            cert_path: cert,
            cert_pem,
            key_pem: Secret(key_pem),
        })
    }

    fn endpoint(&mut self, section: &str, raw: &RawEndpoint<'_>) -> Option<Endpoint> {
        let url = match raw.url {
            None => {
                self.problem(&format!("{section}.url"), "missing");
                None
            }
            Some(u) => match check_url(u) {
                Ok(url) => Some(url),
                Err(why) => {
                    self.problem(&format!("{section}.url"), why);
                    None
                }
            },
        };
        let user = match raw.user {
            Some(u) if !u.is_empty() => Some(u.to_string()),
            _ => {
                self.problem(&format!("{section}.user"), "missing");
                None
            }
        };
        let pin = raw.tls_sha256.and_then(|text| {
            let pin = crate::http::pin::parse_fingerprint(text);
            if pin.is_none() {
                self.problem(
                    &format!("{section}.tls_sha256"),
                    "not a SHA-256 fingerprint (64 hex digits, with or without colons)",
                );
            }
            pin
        });
        let tls_keys = [
            raw.ca_file.is_some(),
            raw.tls_sha256.is_some(),
            raw.insecure == Some(true),
        ];
        if tls_keys.iter().filter(|k| **k).count() > 1 {
            self.problem(
                section,
                "give only one of ca_file, tls_sha256 and insecure = true",
            );
        }
        let ca_file = raw.ca_file.map(|p| self.resolve(p));
        if let Some(ca) = &ca_file
            && !ca.is_file()
        {
            self.problem(
                &format!("{section}.ca_file"),
                format!("{} is not a readable file", ca.display()),
            );
        }
        let password = self.password(section, raw);
        if let (Some(user), Some(password)) = (&user, &password)
            && self.read_secrets
        {
            crate::secrets::password(user, password.expose());
        }
        Some(Endpoint {
            client: None,
            url: url?,
            user: user?,
            password: password?,
            tls: Tls {
                ca_file,
                pin,
                insecure: raw.insecure.unwrap_or(false),
            },
        })
    }

    fn password(&mut self, section: &str, raw: &RawEndpoint<'_>) -> Option<Secret> {
        let given = [
            raw.password.is_some(),
            raw.password_file.is_some(),
            raw.password_env.is_some(),
            raw.password_command.is_some(),
        ];
        if raw.client_identity {
            if given.iter().any(|g| *g) {
                self.problem(
                    &format!("{section}.client_cert"),
                    "give either client_cert and client_key or a password, not both",
                );
                return None;
            }
            return Some(Secret(String::new()));
        }
        let key = format!("{section}.password");
        match given.iter().filter(|g| **g).count() {
            0 => {
                self.problem(
                    &key,
                    "missing; set password_file, password_env, password_command or password",
                );
                return None;
            }
            1 => {}
            _ => {
                self.problem(
                    &key,
                    "give only one of password_file, password_env, password_command and password",
                );
                return None;
            }
        }
        if !self.read_secrets && raw.password.is_none() {
            return Some(Secret("(not read)".into()));
        }
        if let Some(command) = raw.password_command {
            let key = format!("{section}.password_command");
            return match run_password_command(command, self.command_timeout) {
                Ok(secret) => self.non_empty(&key, secret),
                Err(why) => {
                    self.problem(&key, why);
                    None
                }
            };
        }
        if let Some(inline) = raw.password {
            if self.world_readable {
                self.problem(
                    &key,
                    "an inline password in a world-readable file is refused; chmod o-r the file or use password_file",
                );
                return None;
            }
            return self.non_empty(&key, inline.to_string());
        }
        if let Some(file) = raw.password_file {
            let file = self.resolve(file);
            let key = format!("{section}.password_file");
            let (text, meta) = match read_trusted(&file, MAX_CONFIG) {
                Ok(read) => read,
                Err(why) => {
                    self.problem(&key, why);
                    return None;
                }
            };
            if meta.permissions().mode() & 0o004 != 0 {
                self.problem(
                    &key,
                    format!("{} is world-readable; chmod o-r it", file.display()),
                );
                return None;
            }
            return self.non_empty(&key, first_line(&text));
        }
        let var = raw.password_env.unwrap_or_default();
        let key = format!("{section}.password_env");
        match std::env::var(var) {
            Ok(value) => self.non_empty(&key, first_line(&value)),
            Err(_) => {
                self.problem(&key, format!("environment variable {var} is not set"));
                None
            }
        }
    }

    fn non_empty(&mut self, key: &str, secret: String) -> Option<Secret> {
        if secret.is_empty() {
            self.problem(key, "the password is empty");
            return None;
        }
        Some(Secret(secret))
    }

    fn duration(
        &mut self,
        key: &str,
        text: Option<&str>,
        default: &str,
        positive: bool,
    ) -> Duration {
        match parse_duration(text.unwrap_or(default)) {
            Ok(d) if d > MAX_DURATION => {
                self.problem(key, "must be at most 3650d (ten years)");
                Duration::ZERO
            }
            Ok(d) if positive && d.is_zero() => {
                self.problem(key, "must be longer than zero");
                d
            }
            Ok(d) => d,
            Err(why) => {
                self.problem(key, why);
                Duration::ZERO
            }
        }
    }

    fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base.join(path)
        }
    }
}
