//! What NSX holds in otnsx's own place that no lease explains (the backend's strays: with
//! per-agent rules, rules in otnsx's security policy that stand for no opening, and VM groups
//! no rule uses): `reconcile` and `revoke --all` remove each that lets anything through, after
//! journaling it whole, so that a person can make it again; what only restricts is left, and
//! said.

use serde_json::{Value, json};

use crate::domain::cause::EntryResult;
use crate::nsx::TagBackend;
use crate::nsx::backend::Stray;
use crate::state::journal::Action;
use crate::state::recorder::Subject;

use super::run::Run;

/// Removes the strays the backend's last listing found. Returns them for `--json` and whether
/// a removal failed.
pub fn remove(run: &Run, backend: &dyn TagBackend, subject: &Subject) -> (Vec<Value>, bool) {
    let mut listed = Vec::new();
    let mut failed = false;
    for stray in backend.strays() {
        let what = what(&stray);
        if !stray.removed() {
            outln!(
                "left {what}: it only restricts traffic, but the policy is otnsx's alone; move it to a policy of the site's"
            );
            listed.push(json!({"path": stray.path, "summary": stray.summary, "result": "left"}));
            continue;
        }
        if run.dry_run {
            outln!("dry run: would remove {what}: no lease explains it");
            listed.push(
                json!({"path": stray.path, "summary": stray.summary, "result": "would remove"}),
            );
            continue;
        }
        // First the record, whole: what is removed can be made again from the journal.
        let before = format!(
            "removing {what} from NSX: no lease explains it; as NSX held it: {}",
            stray.content
        );
        run.recorder
            .record(&run.recorder.entry(subject, Action::Warning, None, &before));
        let mut entry = run.recorder.entry(subject, Action::Revoke, None, "");
        let result = backend.remove_stray(&stray);
        match &result {
            Ok(()) => {
                entry.detail = format!("removed {what}");
                outln!("removed {what}: no lease explains it (its content is in the journal)");
            }
            Err(e) => {
                failed = true;
                entry.result = EntryResult::Failed;
                entry.detail = format!("could not remove {what}: {e:#}");
                errln!("otnsx: {}", crate::output::printable(&entry.detail));
            }
        }
        run.recorder.record(&entry);
        listed.push(json!({"path": stray.path, "summary": stray.summary,
                            "result": if result.is_ok() { "removed" } else { "failed" }}));
    }
    (listed, failed)
}

/// The stray, named for a person: what it is, and where.
pub fn what(stray: &Stray) -> String {
    format!("{} at {}", stray.summary, stray.path)
}
