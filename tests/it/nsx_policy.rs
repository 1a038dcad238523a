//! The Policy backend (`kind = "nsx-policy"`) against a fake NSX 4 manager whose accounts have
//! NSX 4.1's roles: the tag comes and goes through tag operations, a least-privilege role
//! suffices, no fabric tag action is ever sent, a 200 alone is never taken as success.

use serde_json::json;

use crate::support::nsxt::{READER, TAGGER, USER};
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
}
