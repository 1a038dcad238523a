//! The Policy backend (`kind = "nsx-policy"`) against a fake NSX 4 manager whose accounts have
//! NSX 4.1's roles: the tag comes and goes through tag operations, a least-privilege role
//! suffices, no fabric tag action is ever sent, a 200 alone is never taken as success.

use serde_json::json;

use crate::support::nsxt::{Permissions, READER, TAGGER, USER};
use crate::support::{T2, World, set, uuids};
use crate::{actions, lock, otnsx, unlock};

fn policy_world(user: &str, extra: &str, with_vcenter: bool) -> World {
    let world = World::new();
    world.write_config(&world.config_text_policy(user, extra, with_vcenter));
    world
}

fn web01() -> String {
    uuids("vm-42").0
}

fn a_tagging_role_opens_and_closes_by_tag_operations_alone() {
    for auth in ["basic", "session"] {
        let world = policy_world(TAGGER, &format!("auth = \"{auth}\""), false);
        world.nsxt.running_polls(2);
        let run = lock(&world, T2);
        assert_eq!(run.code, 0, "{auth}: {run:?}");
        assert_eq!(
            world.nsxt.tags(&web01()),
            ["backup|daily", "owner|", "otnsx|maintenance"],
            "{auth}: only our tag added"
        );
        let run = unlock(&world, T2);
        assert_eq!(run.code, 0, "{auth}: {run:?}");
        assert_eq!(
            world.nsxt.tags(&web01()),
            ["backup|daily", "owner|"],
            "{auth}"
        );
        assert_eq!(actions(&world), ["grant", "revoke"], "{auth}");
        // Never a fabric tag action, not even as a first attempt.
        assert!(
            world.nsxt.actions().is_empty(),
            "{auth}: {:?}",
            world.nsxt.actions()
        );
        let ops = world.nsxt.operations();
        assert_eq!(
            ops,
            [
                json!({"tag": {"scope": "otnsx", "tag": "maintenance"},
                       "apply_to": [{"resource_type": "VirtualMachine", "resource_ids": [web01()]}]}),
                json!({"tag": {"scope": "otnsx", "tag": "maintenance"},
                       "remove_from": [{"resource_type": "VirtualMachine", "resource_ids": [web01()]}]}),
            ],
            "{auth}"
        );
        // Each operation has a fresh id, and was followed through its Running status.
        let puts: Vec<String> = world
            .nsxt
            .requests()
            .into_iter()
            .filter(|r| r.method == "PUT")
            .map(|r| r.path)
            .collect();
        assert_eq!(puts.len(), 2);
        assert_ne!(puts[0], puts[1], "{auth}");
        let status_reads = world
            .nsxt
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/status"))
            .count();
        assert_eq!(status_reads, 6, "{auth}: 2 Running + 1 ended, twice");
    }
}

fn the_same_role_is_refused_the_fabric_actions_that_kind_nsx_t_sends() {
    let world = World::new();
    let text = world.config_text_nsxt("", false);
    let nsx = text.find("[nsx]").unwrap();
    let text = format!(
        "{}{}",
        &text[..nsx],
        text[nsx..].replacen(
            &format!("user = \"{USER}\""),
            &format!("user = \"{TAGGER}\""),
            1
        )
    );
    world.write_config(&text);
    let run = lock(&world, T2);
    assert_eq!(run.code, 77, "{run:?}");
    assert!(
        run.stderr
            .contains("a least-privilege role needs kind = \"nsx-policy\""),
        "{}",
        run.stderr
    );
    assert!(world.tagged_t().is_empty());
}

fn a_read_only_account_is_refused_with_the_role_it_needs() {
    let world = policy_world(READER, "", false);
    let run = lock(&world, T2);
    assert_eq!(run.code, 77, "{run:?}");
    assert!(
        run.stderr.contains("full access on Inventory > Tags"),
        "{}",
        run.stderr
    );
    assert!(world.tagged_t().is_empty());
    assert!(world.leases().is_empty());
    // check names the role too, and what it could read.
    let run = otnsx(&world, &["check"]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("Inventory > Tags") || run.stderr.contains("Inventory > Tags"),
        "{run:?}"
    );
}

fn check_says_the_role_and_that_the_account_may_use_tag_operations() {
    let world = policy_world(TAGGER, "", false);
    let run = otnsx(&world, &["check"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("read-only on Virtual Machines, full access on Tags"),
        "{}",
        run.stdout
    );
    assert!(world.nsxt.operations().is_empty(), "check changes nothing");
}

fn a_200_whose_status_names_an_error_is_a_failure_and_no_lease() {
    let world = policy_world(TAGGER, "", false);
    world.nsxt.failing_operations(1);
    let run = lock(&world, T2);
    assert_eq!(run.code, 69, "{run:?}");
    assert!(
        run.stderr.contains("Internal error while applying the tag"),
        "{}",
        run.stderr
    );
    assert!(crate::open_leases(&world).is_empty());
    assert!(world.tagged_t().is_empty());
    assert_eq!(lock(&world, T2).code, 0, "the next run opens");
}

fn a_status_of_success_that_the_read_back_contradicts_is_not_success() {
    let world = policy_world(TAGGER, "", false);
    world.nsxt.unapplied_operations(1);
    let run = lock(&world, T2);
    assert_eq!(run.code, 69, "{run:?}");
    assert!(
        run.stderr.contains("read back unchanged (unverified)"),
        "{}",
        run.stderr
    );
    assert!(crate::open_leases(&world).is_empty());
    // Closing is verified the same way: a lease stays while the tag may still be on.
    assert_eq!(lock(&world, T2).code, 0);
    world.nsxt.unapplied_operations(1);
    let run = unlock(&world, T2);
    assert_eq!(run.code, 69, "{run:?}");
    assert_eq!(world.tagged_t(), set(&["web01"]));
    assert_eq!(world.leases().len(), 1, "kept for the next run to close");
    assert_eq!(unlock(&world, T2).code, 0);
    assert!(world.tagged_t().is_empty());
}

fn a_full_vm_is_named_one_vm_alone_exits_69_with_others_1_nothing_replaced() {
    let world = policy_world(TAGGER, "", true);
    let db01 = uuids("vm-43").0;
    world.nsxt.fill_tags(&db01);
    let before = world.nsxt.tags(&db01);
    let run = otnsx(
        &world,
        &["grant", "--vm", "web01", "--vm", "db01", "--for", "1h"],
    );
    assert_eq!(run.code, 1, "partly done: {run:?}");
    assert!(
        run.stderr.contains("db01") && run.stderr.contains("25 tags, the most NSX allows (25)"),
        "{}",
        run.stderr
    );
    assert_eq!(world.tagged_t(), set(&["web01"]));
    assert_eq!(world.nsxt.tags(&db01), before, "nothing replaced");
    let run = otnsx(&world, &["grant", "--vm", "db01", "--for", "1h"]);
    assert_eq!(run.code, 69, "{run:?}");
    assert!(world.nsxt.actions().is_empty());
}

fn a_vm_deleted_while_leased_closes_its_lease() {
    let world = policy_world(TAGGER, "", true);
    assert_eq!(lock(&world, T2).code, 0);
    world.nsxt.remove_vm(&web01());
    let run = unlock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(world.leases().is_empty());
}

fn without_the_fabric_read_vms_are_found_in_the_realized_list_of_more_than_1000() {
    let world = policy_world(TAGGER, "", false);
    world.nsxt.refuse_fabric_reads();
    // A manager without effective-resources, whose search index is being built.
    world.nsxt.without_effective_resources();
    world.nsxt.indexing(100);
    // 1500 more VMs: the realized-state list gives no cursor past 1000 and, unsorted, a
    // different order on each request.
    for n in 0..1500 {
        let id = format!("5099{n:04}-0000-0000-0000-{n:012}");
        let tags: &[(&str, Option<&str>)] = if n % 500 == 7 {
            &[("otnsx", Some("maintenance"))]
        } else {
            &[]
        };
        world.nsxt.add_vm(&format!("bulk{n:04}"), &id, &[], tags);
    }
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged_t().len(), 4, "web01 and three bulk VMs");
    // status lists them all from the realized list (the search index is being built).
    let run = otnsx(&world, &["status"]);
    // The bulk VMs carry the tag with no lease: drift, 1.
    assert_eq!(run.code, 1, "{run:?}");
    for name in ["web01", "bulk0007", "bulk0507", "bulk1007"] {
        assert!(run.stdout.contains(name), "{name}: {}", run.stdout);
    }
    let realized: Vec<_> = world
        .nsxt
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/realized-state/virtual-machines"))
        .collect();
    assert!(!realized.is_empty());
    assert!(
        realized
            .iter()
            .all(|r| r.query_value("sort_by").as_deref() == Some("external_id")),
        "always sorted"
    );
    assert!(
        realized
            .iter()
            .any(|r| r.query_value("cursor").as_deref() == Some("1000")),
        "the cursor past 1000 is computed"
    );
}

/// The NSX requests made by the fake since its log was last read, as `METHOD path`.
fn nsx_paths(world: &World) -> Vec<String> {
    world
        .nsxt
        .requests()
        .into_iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

fn the_least_privilege_role_passes_check_by_feature_id_or_name() {
    for shape in [Permissions::ByFeatureId, Permissions::ByNameOnly] {
        let world = policy_world(TAGGER, "", false);
        world.nsxt.permissions(shape);
        let run = otnsx(&world, &["check"]);
        assert_eq!(run.code, 0, "{run:?}");
        assert!(
            run.stdout.contains("the account's role has what it needs")
                && run.stdout.contains("crud on policy_vm_vm_tags, read on vm_vm_info"),
            "{}",
            run.stdout
        );
        // The permissions sufficed: no tag operation was read to find out.
        assert!(
            !nsx_paths(&world)
                .iter()
                .any(|p| p.starts_with("GET /policy/api/v1/infra/tags/tag-operations")),
            "{:?}",
            nsx_paths(&world)
        );
    }
    // Without the permissions endpoint: a read of the tag operations, allowed.
    let world = policy_world(TAGGER, "", false);
    world.nsxt.permissions(Permissions::Missing);
    let run = otnsx(&world, &["check"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("NSX does not list the account's permissions; it may read tag operations"),
        "{}",
        run.stdout
    );
}

fn a_role_without_full_access_on_tags_fails_check_and_a_lock_77_naming_the_feature_and_the_fix() {
    for shape in [Permissions::ByFeatureId, Permissions::ByNameOnly] {
        let world = policy_world(READER, "", false);
        world.nsxt.permissions(shape);
        // check fails as it documents (1: a check failed), naming the feature and the fix.
        let run = otnsx(&world, &["check"]);
        assert_eq!(run.code, 1, "{run:?}");
        let said = format!("{}{}", run.stdout, run.stderr);
        assert!(
            said.contains("✗ NSX")
                && said.contains("\"read\" on policy_vm_vm_tags")
                && said.contains("System > User Management > Roles")
                && said.contains("full access on Inventory > Tags"),
            "{said}"
        );
        // A lock with that role: 77, naming the feature too.
        let run = lock(&world, T2);
        assert_eq!(run.code, 77, "{run:?}");
        assert!(
            run.stderr.contains("policy_vm_vm_tags crud"),
            "{}",
            run.stderr
        );
        assert!(world.tagged_t().is_empty());
    }
}

fn the_tagged_vms_come_from_effective_resources_following_its_cursor() {
    let world = policy_world(TAGGER, "", false);
    // Five tagged VMs: three pages of the fake's at most two, each cursor the server's own.
    for n in 0..5 {
        let id = format!("5077{n:04}-0000-0000-0000-{n:012}");
        world
            .nsxt
            .add_vm(&format!("tagged{n}"), &id, &[], &[("otnsx", Some("maintenance"))]);
    }
    world.nsxt.add_tag(&web01(), "otnsx", "other-tag");
    let run = otnsx(&world, &["status"]);
    // Tagged without a lease: drift, 1.
    assert_eq!(run.code, 1, "{run:?}");
    for n in 0..5 {
        assert!(run.stdout.contains(&format!("tagged{n}")), "{}", run.stdout);
    }
    assert!(!run.stdout.contains("web01"), "{}", run.stdout);
    let lists: Vec<_> = world
        .nsxt
        .requests()
        .into_iter()
        .filter(|r| r.path == "/policy/api/v1/infra/tags/effective-resources")
        .collect();
    let cursors: Vec<Option<String>> = lists.iter().map(|r| r.query_value("cursor")).collect();
    assert_eq!(
        cursors,
        [None, Some("er:2".into()), Some("er:4".into())],
        "the server's cursor followed"
    );
    for r in &lists {
        assert_eq!(r.query_value("scope").as_deref(), Some("otnsx"));
        assert_eq!(r.query_value("tag").as_deref(), Some("maintenance"));
        assert_eq!(r.query_value("page_size").as_deref(), Some("1000"));
    }
    assert!(
        !nsx_paths(&world).iter().any(|p| p.contains("/search/")
            || p.contains("/realized-state/virtual-machines")),
        "exact: no search, no inventory list: {:?}",
        nsx_paths(&world)
    );
}

fn a_vm_tagged_a_moment_ago_is_found_though_the_search_lags() {
    let world = policy_world(TAGGER, "", true);
    let db01 = uuids("vm-43").0;
    world.nsxt.lagging_search();
    // Tagged behind otnsx's back a moment ago: the search index does not show it yet.
    world.nsxt.add_tag(&db01, "otnsx", "maintenance");
    let run = otnsx(&world, &["revoke", "--all"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(world.tagged_t().is_empty(), "{:?}", world.tagged_t());
    // reconcile finds it the same way.
    world.nsxt.add_tag(&db01, "otnsx", "maintenance");
    let run = otnsx(&world, &["reconcile"]);
    assert!(world.tagged_t().is_empty(), "{run:?}");
    // On a manager without effective-resources the same lag hides it from the search: the
    // fake's lag is real.
    let world = policy_world(TAGGER, "", true);
    world.nsxt.without_effective_resources();
    world.nsxt.lagging_search();
    world.nsxt.add_tag(&db01, "otnsx", "maintenance");
    let run = otnsx(&world, &["revoke", "--all"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged_t(), set(&["db01"]));
    world.nsxt.search_catches_up();
    assert_eq!(otnsx(&world, &["revoke", "--all"]).code, 0);
    assert!(world.tagged_t().is_empty());
}

fn an_older_manager_is_searched_smaller_pages_and_on_a_not_now_search_listed() {
    let world = policy_world(TAGGER, "", false);
    world.nsxt.without_effective_resources();
    world.nsxt.add_tag(&web01(), "otnsx", "maintenance");
    // The page too large twice: asked again for 100 fewer each time.
    world.nsxt.search_too_large(2);
    let run = otnsx(&world, &["status"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("web01"), "{}", run.stdout);
    let sizes: Vec<Option<String>> = world
        .nsxt
        .requests()
        .into_iter()
        .filter(|r| r.path == "/policy/api/v1/search/query")
        .map(|r| r.query_value("page_size"))
        .collect();
    assert_eq!(
        sizes,
        [Some("1000".into()), Some("900".into()), Some("800".into())]
    );
    assert!(
        !nsx_paths(&world)
            .iter()
            .any(|p| p.contains("/realized-state/virtual-machines")),
        "{:?}",
        nsx_paths(&world)
    );
    // The index being built: the realized-state list, read with the server's cursor.
    let world = policy_world(TAGGER, "", false);
    world.nsxt.without_effective_resources();
    world.nsxt.indexing(1);
    for n in 0..600 {
        let id = format!("5088{n:04}-0000-0000-0000-{n:012}");
        let tags: &[(&str, Option<&str>)] = match n {
            599 => &[("otnsx", Some("maintenance"))],
            _ => &[],
        };
        world.nsxt.add_vm(&format!("bulk{n:04}"), &id, &[], tags);
    }
    let run = otnsx(&world, &["status"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("bulk0599"), "{}", run.stdout);
    let cursors: Vec<Option<String>> = world
        .nsxt
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/realized-state/virtual-machines"))
        .map(|r| r.query_value("cursor"))
        .collect();
    assert_eq!(
        cursors,
        [None, Some("0500".into())],
        "the server's cursor (0500), not the computed offset (500)"
    );
}

fn a_lock_reads_the_status_at_once_and_the_vm_beside_it() {
    let world = policy_world(TAGGER, "", false);
    world
        .nsxt
        .server
        .set_delay(std::time::Duration::from_millis(250));
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    let paths = nsx_paths(&world);
    let after_put: Vec<&String> = paths
        .iter()
        .skip_while(|p| !p.starts_with("PUT "))
        .skip(1)
        .collect();
    // One status read (the operation ended at once) and one read of the VM: no read-back
    // after them.
    assert_eq!(after_put.len(), 2, "{paths:?}");
    assert!(after_put.iter().any(|p| p.ends_with("/status")), "{paths:?}");
    assert!(
        after_put
            .iter()
            .any(|p| p.as_str() == "GET /api/v1/fabric/virtual-machines"),
        "{paths:?}"
    );
    // Beside each other: NSX's requests of the lock form a chain of 3 (find, the operation,
    // its status with the read), not 4.
    assert_eq!(chain(world.nsxt.server.spans()), 3, "{paths:?}");
}

/// The most requests that followed one another (each began after the one before was
/// answered).
fn chain(mut spans: Vec<(std::time::Instant, std::time::Instant)>) -> usize {
    spans.sort_by_key(|(_, end)| *end);
    let mut count = 0;
    let mut last_end: Option<std::time::Instant> = None;
    for (start, end) in spans {
        if last_end.is_none_or(|last| start >= last) {
            count += 1;
            last_end = Some(end);
        }
    }
    count
}

crate::tests! {
    a_tagging_role_opens_and_closes_by_tag_operations_alone,
    the_same_role_is_refused_the_fabric_actions_that_kind_nsx_t_sends,
    a_read_only_account_is_refused_with_the_role_it_needs,
    check_says_the_role_and_that_the_account_may_use_tag_operations,
    a_200_whose_status_names_an_error_is_a_failure_and_no_lease,
    a_status_of_success_that_the_read_back_contradicts_is_not_success,
    a_full_vm_is_named_one_vm_alone_exits_69_with_others_1_nothing_replaced,
    a_vm_deleted_while_leased_closes_its_lease,
    without_the_fabric_read_vms_are_found_in_the_realized_list_of_more_than_1000,
    the_least_privilege_role_passes_check_by_feature_id_or_name,
    a_role_without_full_access_on_tags_fails_check_and_a_lock_77_naming_the_feature_and_the_fix,
    the_tagged_vms_come_from_effective_resources_following_its_cursor,
    a_vm_tagged_a_moment_ago_is_found_though_the_search_lags,
    an_older_manager_is_searched_smaller_pages_and_on_a_not_now_search_listed,
    a_lock_reads_the_status_at_once_and_the_vm_beside_it,
}
