//! `otnsx status [--vm NAME] [--json]`: one row per lease, and per VM that carries the tag with
//! no lease; NSX's own view beside the leases, drift marked plainly. Reads only: no lock.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::error::Exit;
use crate::state::store::{Holder, Lease, LeaseState};
use crate::time::{Timestamp, format_duration};

use super::run::Run;

/// One VM in `status --json`. The field names are a stable interface (see the man page).
#[derive(Debug, Serialize)]
struct VmStatus {
    vm: String,
    vm_id: String,
    /// The access profile, when it is not that of `[nsx] tag`.
    #[serde(skip_serializing_if = "Option::is_none")]
    profile: Option<String>,
    /// With per-agent rules, whose desktop the opening is from.
    #[serde(skip_serializing_if = "Option::is_none")]
    agent: Option<String>,
    /// Whether NSX reports the tag on the VM; `null` when NSX could not be asked.
    tagged: Option<bool>,
    /// `null`, `"tag without lease"` or `"lease without tag"`.
    drift: Option<&'static str>,
    leases: Vec<LeaseStatus>,
}

#[derive(Debug, Serialize)]
struct LeaseStatus {
    holder: Holder,
    reason: Option<String>,
    granted_at: Timestamp,
    expires_at: Timestamp,
    /// Seconds until it expires; 0 once expired.
    left_seconds: u64,
    /// `active`, `expired` (waiting for reconcile), or `detach_failed`.
    state: &'static str,
}

#[derive(Serialize)]
struct Report {
    now: Timestamp,
    /// Why NSX could not be asked, if it could not (the leases are shown all the same).
    #[serde(skip_serializing_if = "Option::is_none")]
    nsx_error: Option<String>,
    /// Whether any VM shows drift (the exit status is then 1).
    drift: bool,
    vms: Vec<VmStatus>,
}

pub fn run(run: &Run, only: Option<&str>, json: bool) -> anyhow::Result<Exit> {
    let leases = run.store.load()?;
    // NSX down at 3 a.m. must not hide the leases: they are shown, NSX's column unknown.
    let (tagged, nsx_error) = match run.with_backend(|backend| backend.all_tagged()) {
        Ok(tagged) => (Some(tagged), None),
        Err(e) => {
            errln!("otnsx: {e:#}; showing the leases without NSX's view");
            (None, Some(format!("{e:#}")))
        }
    };
    let known = tagged.is_some();
    let now = run.clock.decides_at;
    let mut vms: BTreeMap<String, VmStatus> = BTreeMap::new();
    for lease in &leases {
        let entry = vms.entry(lease.key()).or_insert_with(|| VmStatus {
            vm: lease.vm.clone(),
            vm_id: lease.vm_id.clone(),
            profile: lease.profile.clone(),
            agent: lease.agent.clone(),
            tagged: known.then_some(false),
            drift: None,
            leases: Vec::new(),
        });
        entry.leases.push(lease_status(lease, now));
    }
    for vm in tagged.into_iter().flatten() {
        vms.entry(vm.key())
            .or_insert_with(|| VmStatus {
                vm: vm.name.clone(),
                vm_id: vm.id.clone(),
                profile: vm.profile.clone(),
                agent: vm.agent.clone(),
                tagged: None,
                drift: None,
                leases: Vec::new(),
            })
            .tagged = Some(true);
    }
    let mut list: Vec<VmStatus> = vms
        .into_values()
        .filter(|v| only.is_none_or(|name| v.vm == name))
        .collect();
    for vm in &mut list {
        let live = vm.leases.iter().any(|l| l.state == "active");
        vm.drift = match (live, vm.tagged) {
            (false, Some(true)) => Some("tag without lease"),
            (true, Some(false)) => Some("lease without tag"),
            _ => None,
        };
    }
    list.sort_by(|a, b| (&a.vm, &a.vm_id, &a.profile).cmp(&(&b.vm, &b.vm_id, &b.profile)));
    // NSX and the leases disagree: 1, as for any work left undone (reconcile repairs it).
    let drift = list.iter().any(|v| v.drift.is_some());
    let exit = match (known, drift) {
        (false, _) => Exit::Unavailable,
        (true, true) => Exit::Partial,
        (true, false) => Exit::Ok,
    };
    if drift {
        errln!("otnsx: NSX and the leases disagree (drift); `otnsx reconcile` repairs it");
    }
    if json {
        let report = Report {
            now,
            nsx_error,
            drift,
            vms: list,
        };
        crate::document::fields(&report);
        return Ok(exit);
    }
    if list.is_empty() {
        match (only, known) {
            (Some(name), true) => outln!("{name}: no lease and no tag; access is closed"),
            (None, true) => outln!("no VM is open: no lease, and no VM carries the tag"),
            (Some(name), false) => {
                outln!("{name}: no lease (NSX could not be asked about the tag)")
            }
            (None, false) => outln!("no lease (NSX could not be asked which VMs carry the tag)"),
        }
        return Ok(exit);
    }
    outln!("{}", table(&list).trim_end_matches('\n'));
    Ok(exit)
}

fn lease_status(lease: &Lease, now: Timestamp) -> LeaseStatus {
    let left = u64::try_from(lease.expires_at.0.saturating_sub(now.0)).unwrap_or(0);
    LeaseStatus {
        holder: lease.holder.clone(),
        reason: lease.reason.clone(),
        granted_at: lease.granted_at,
        expires_at: lease.expires_at,
        left_seconds: left,
        state: match lease.state {
            LeaseState::DetachFailed => "detach_failed",
            LeaseState::Active if left == 0 => "expired",
            LeaseState::Active => "active",
        },
    }
}

/// An aligned table: a row per lease, and a row for a tagged VM without lease.
fn table(list: &[VmStatus]) -> String {
    let header = [
        "VM", "ID", "HELD BY", "REASON", "GRANTED", "EXPIRES", "LEFT", "NSX",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.map(String::from).to_vec()];
    for vm in list {
        // A VM under another profile than that of `[nsx] tag` is named with it.
        let name = match &vm.profile {
            Some(p) => format!("{} [{p}]", vm.vm),
            None => vm.vm.clone(),
        };
        let nsx = match (vm.drift, vm.tagged) {
            (Some(drift), Some(true)) => format!("tagged DRIFT: {drift}"),
            (Some(drift), _) => format!("untagged DRIFT: {drift}"),
            (None, Some(true)) => "tagged".into(),
            (None, Some(false)) => "untagged".into(),
            (None, None) => "unknown".into(),
        };
        if vm.leases.is_empty() {
            rows.push(vec![
                name.clone(),
                vm.vm_id.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                nsx.clone(),
            ]);
        }
        for lease in &vm.leases {
            let left = match lease.state {
                "active" => format_duration(Duration::from_secs(lease.left_seconds)),
                other => other.replace('_', " "),
            };
            rows.push(vec![
                name.clone(),
                vm.vm_id.clone(),
                lease.holder.to_string(),
                lease.reason.clone().unwrap_or_else(|| "-".into()),
                lease.granted_at.to_string(),
                lease.expires_at.to_string(),
                left,
                nsx.clone(),
            ]);
        }
    }
    super::table::aligned(&rows)
}
