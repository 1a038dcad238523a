//! The same access flow on NSX-T / NSX 4: otnsx's `{scope, tag}` comes and goes, every other
//! tool's tags stay.

use serde_json::json;

use crate::support::{T2, T3, World, set, uuids};
use crate::{actions, event, lock, otnsx, unlock};

fn nsxt_world(extra: &str, with_vcenter: bool) -> World {
    let world = World::new();
    world.write_config(&world.config_text_nsxt(extra, with_vcenter));
    world
}

fn web01() -> String {
    uuids("vm-42").0
}

fn lock_adds_only_our_tag_and_unlock_removes_only_ours() {
    let world = nsxt_world("", false);
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains(&format!("opened web01 ({})", web01())),
        "{}",
        run.stdout
    );
    assert_eq!(
        world.nsxt.tags(&web01()),
        ["backup|daily", "owner|", "otnsx|maintenance"]
    );
    assert_eq!(world.leases()[0]["vm_id"], web01().as_str());
    assert_eq!(world.nsxt.actions(), ["add_tags"]);
    let add = world
        .nsxt
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    assert_eq!(add.header("content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_slice(&add.body).unwrap();
    assert_eq!(
        body,
        json!({"external_id": web01(), "tags": [{"scope": "otnsx", "tag": "maintenance"}]})
    );

    let run = unlock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.nsxt.tags(&web01()), ["backup|daily", "owner|"]);
    assert_eq!(world.nsxt.actions(), ["add_tags", "remove_tags"]);
    assert!(
        world.vcenter.requests().is_empty(),
        "resolve = nsx without [vcenter]"
    );
    assert_eq!(actions(&world), ["grant", "revoke"]);
}

fn two_tickets_share_a_vm_on_nsxt_too() {
    let world = nsxt_world("", false);
    assert_eq!(lock(&world, T2).code, 0);
    assert_eq!(lock(&world, T3).code, 0);
    assert_eq!(unlock(&world, T2).code, 0);
    assert_eq!(world.tagged_t(), set(&["web01"]));
    assert_eq!(unlock(&world, T3).code, 0);
    assert_eq!(world.tagged_t(), set(&[]));
    assert_eq!(world.nsxt.actions(), ["add_tags", "remove_tags"]);
}

fn a_duplicate_lock_event_changes_nothing_on_nsxt() {
    let world = nsxt_world("", false);
    assert_eq!(lock(&world, T2).code, 0);
    assert_eq!(event(&world, T2).code, 0);
    assert_eq!(world.nsxt.actions(), ["add_tags"]);
}

fn duplicate_display_names_are_refused() {
    let world = nsxt_world("", false);
    world.helpdesk.update(T2.0, |t| t.vm_field = json!("dup"));
    let run = lock(&world, T2);
    assert_eq!(run.code, 65, "{run:?}");
    assert!(
        run.stderr.contains("2 VMs are named \"dup\" in NSX"),
        "{}",
        run.stderr
    );
    assert!(world.nsxt.actions().is_empty());
}

fn resolve_by_vcenter_finds_a_vm_nsx_knows_by_its_bios_uuid() {
    let world = nsxt_world("", true); // [vcenter] present: resolve defaults to "vcenter"
    world
        .helpdesk
        .update(T2.0, |t| t.vm_field = json!("legacy01"));
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    let bios = uuids("vm-47").1;
    assert_eq!(world.nsxt.tags(&bios), ["otnsx|maintenance"]);
    let lookups: Vec<String> = world
        .nsxt
        .requests()
        .iter()
        .filter(|r| r.method == "GET")
        .map(|r| r.query_value("external_id").unwrap_or_default())
        .collect();
    let instance = uuids("vm-47").0;
    assert_eq!(
        &lookups[..2],
        [instance, bios.clone()],
        "instance UUID first, then the BIOS UUID"
    );
    assert_eq!(world.vcenter.open_sessions(), 0);
    // Duplicate names in NSX do not matter when vCenter tells them apart.
    world.write_config(
        &world
            .config_text_nsxt("", true)
            .replace("api = \"auto\"", "api = \"auto\"\nfolder = \"group-v2\""),
    );
    world.helpdesk.update(T3.0, |t| t.vm_field = json!("dup"));
    assert_eq!(lock(&world, T3).code, 0);
    assert_eq!(
        world.nsxt.tags(&uuids("vm-51").0),
        ["backup|daily", "owner|", "otnsx|maintenance"]
    );
}

fn an_old_manager_gets_update_tags_with_the_other_tags_kept() {
    let world = nsxt_world("", false);
    world.nsxt.old_manager(true);
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        world.nsxt.tags(&web01()),
        ["backup|daily", "owner|", "otnsx|maintenance"]
    );
    assert_eq!(world.nsxt.actions(), ["add_tags", "update_tags"]);
    let detail = world.journal()[0]["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("last writer wins"), "{detail}");

    let run = unlock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.nsxt.tags(&web01()), ["backup|daily", "owner|"]);
}

fn session_auth_renews_an_expired_token_once_and_logs_out() {
    let world = nsxt_world("auth = \"session\"", false);
    world.helpdesk.set_lock(T2.0, "lock");
    world.nsxt.expire_tokens();
    let run = event(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged_t(), set(&["web01"]));
    assert_eq!(
        world.nsxt.sessions(),
        (2, 1, 0),
        "two sessions made, the live one destroyed"
    );
    assert!(
        world
            .nsxt
            .requests()
            .iter()
            .all(|r| r.header("authorization").is_none())
    );
}

fn a_429_storm_within_the_deadline_ends_in_success() {
    let world = nsxt_world("", false);
    world.nsxt.rate_limit(3, 0);
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged_t(), set(&["web01"]));
}

fn a_429_storm_past_the_deadline_exits_75_without_sleeping_past_it() {
    let world = nsxt_world("", false);
    world.write_config(
        &world
            .config_text_nsxt("", false)
            .replace("deadline = \"10s\"", "deadline = \"3s\""),
    );
    world.nsxt.rate_limit(1000, 1);
    let started = std::time::Instant::now();
    let run = lock(&world, T2);
    assert_eq!(run.code, 75, "{run:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(world.leases().is_empty());
    assert_eq!(world.tagged_t(), set(&[]));
}

fn one_retry_loop_at_most_four_attempts_per_request() {
    // 607 on every change: four POSTs, not 24.
    let world = nsxt_world("", false);
    world.nsxt.abort_transactions(1000);
    let run = lock(&world, T2);
    assert_eq!(run.code, 69, "{run:?}");
    assert_eq!(world.nsxt.actions(), ["add_tags"; 4]);
    // 429 for ever: the first request is tried four times, then 75.
    let world = nsxt_world("", false);
    world.nsxt.rate_limit(1000, 0);
    let run = lock(&world, T2);
    assert_eq!(run.code, 75, "{run:?}");
    assert_eq!(world.nsxt.requests().len(), 4);
    // A persistent 503 is 69, as on NSX-V.
    let world = nsxt_world("", false);
    world.nsxt.unavailable(1000);
    let run = lock(&world, T2);
    assert_eq!(run.code, 69, "{run:?}");
    assert_eq!(world.nsxt.requests().len(), 4);
    assert_eq!(world.tagged_t(), set(&[]));
}

fn transaction_aborted_607_is_retried() {
    let world = nsxt_world("", false);
    world.nsxt.abort_transactions(2);
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.nsxt.actions(), ["add_tags", "add_tags", "add_tags"]);
}

fn dry_run_changes_nothing_on_nsxt() {
    let world = nsxt_world("", false);
    world.helpdesk.set_lock(T2.0, "lock");
    let run = otnsx(&world, &["--dry-run", T2.1, "2"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("dry run: ticket 2026112310000011: would open web01"),
        "{}",
        run.stdout
    );
    assert!(world.nsxt.actions().is_empty());
    assert!(world.leases().is_empty());
}

fn grant_and_revoke_work_on_nsxt() {
    let world = nsxt_world("", false);
    assert_eq!(otnsx(&world, &["grant", "--vm", "db01"]).code, 0);
    assert_eq!(world.tagged_t(), set(&["db01"]));
    assert_eq!(otnsx(&world, &["revoke", "--vm", "db01"]).code, 0);
    assert_eq!(world.tagged_t(), set(&[]));
    assert_eq!(
        world.nsxt.tags(&uuids("vm-43").0),
        ["backup|daily", "owner|"]
    );
}

fn nsx_t_settings_are_checked() {
    let world = World::new();
    let text = world
        .config_text_nsxt("", false)
        .replace("scope = \"otnsx\"\n", "");
    world.write_config(&text);
    let run = otnsx(&world, &["grant", "--vm", "web01"]);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(run.stderr.contains("nsx.scope: missing"), "{}", run.stderr);
    world.write_config(&world.config_text_nsxt("resolve = \"vcenter\"", false));
    let run = otnsx(&world, &["grant", "--vm", "web01"]);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(
        run.stderr.contains("nsx.resolve = \"vcenter\" needs it"),
        "{}",
        run.stderr
    );
    world.write_config(&world.config_text().replace(
        "tag = \"otnsx-maintenance\"",
        "tag = \"otnsx-maintenance\"\nscope = \"x\"",
    ));
    let run = otnsx(&world, &["grant", "--vm", "web01"]);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(
        run.stderr
            .contains("nsx.scope: applies to kind = \"nsx-t\" and \"nsx-policy\" only"),
        "{}",
        run.stderr
    );
}

fn resolve_by_vcenter_on_65_explains_what_to_set() {
    let world = World::with(crate::support::Generation::Rest65);
    world.write_config(&world.config_text_nsxt("", true));
    let run = lock(&world, T2);
    assert_eq!(run.code, 69, "{run:?}");
    assert!(
        run.stderr
            .contains("it needs 6.7U1 or later); set nsx.resolve = \"nsx\""),
        "{}",
        run.stderr
    );
    assert!(world.leases().is_empty());
}

/// The inventory listings without a filter (the whole inventory, page by page).
fn whole_listings(world: &World) -> usize {
    world
        .nsxt
        .requests()
        .iter()
        .filter(|r| r.path == "/api/v1/fabric/virtual-machines" && r.method == "GET")
        .filter(|r| {
            r.query_value("external_id").is_none() && r.query_value("display_name").is_none()
        })
        .count()
}

fn reconcile_finds_the_tagged_vms_by_search_and_lists_the_inventory_only_when_search_cannot() {
    // A scope with Lucene's special characters: the search term escapes them.
    let world = World::new();
    let text = world
        .config_text_nsxt("", true)
        .replace("scope = \"otnsx\"", "scope = \"ops/team:a b\"");
    world.write_config(&text);
    assert_eq!(lock(&world, T2).code, 0);
    assert_eq!(
        world.nsxt.carrying("ops/team:a b", "maintenance"),
        ["web01"]
    );
    world.nsxt.server.clear_log();
    let run = otnsx(&world, &["reconcile"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("nothing to repair"), "{}", run.stdout);
    let searches: Vec<String> = world
        .nsxt
        .requests()
        .iter()
        .filter(|r| r.path == "/api/v1/search/query")
        .filter_map(|r| r.query_value("query"))
        .collect();
    assert_eq!(
        searches,
        ["resource_type:VirtualMachine AND tags.scope:ops\\/team\\:a\\ b AND tags.tag:maintenance"]
    );
    assert_eq!(whole_listings(&world), 0, "the inventory is not listed");
    // The index is being built: the inventory is listed instead, with the same result.
    world.nsxt.indexing(1);
    world.nsxt.server.clear_log();
    let run = otnsx(&world, &["reconcile"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("nothing to repair"), "{}", run.stdout);
    assert!(whole_listings(&world) > 0);
    // A manager without the search API: listed too.
    world.nsxt.without_search();
    world.nsxt.server.clear_log();
    let run = otnsx(&world, &["reconcile"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("nothing to repair"), "{}", run.stdout);
    assert!(whole_listings(&world) > 0);
    assert_eq!(
        world.nsxt.carrying("ops/team:a b", "maintenance"),
        ["web01"]
    );
}

fn a_vm_with_a_full_tag_list_is_named_and_nothing_is_rewritten() {
    let world = nsxt_world("", true);
    let db01 = uuids("vm-43").0;
    world.nsxt.fill_tags(&db01);
    let before = world.nsxt.tags(&db01);
    let run = otnsx(
        &world,
        &["grant", "--vm", "web01", "--vm", "db01", "--for", "1h"],
    );
    assert_eq!(run.code, 1, "partly done: {run:?}");
    assert!(
        run.stderr.contains("db01") && run.stderr.contains("25 tags, the most NSX allows"),
        "{}",
        run.stderr
    );
    assert_eq!(world.tagged_t(), set(&["web01"]));
    assert_eq!(world.nsxt.tags(&db01), before, "nothing rewritten");
    assert!(!world.nsxt.actions().contains(&"update_tags".to_string()));
    // Alone, the full VM exits 69.
    let run = otnsx(&world, &["grant", "--vm", "db01", "--for", "1h"]);
    assert_eq!(run.code, 69, "{run:?}");
}

fn a_400_from_a_current_manager_is_an_error_never_a_fallback_to_update_tags() {
    let world = nsxt_world("", true);
    world.nsxt.bad_requests(1);
    let run = lock(&world, T2);
    assert_eq!(run.code, 69, "{run:?}");
    assert!(world.tagged_t().is_empty());
    assert_eq!(world.nsxt.actions(), ["add_tags"]);
    // The next run uses add_tags again: nothing was learnt from one refusal.
    assert_eq!(lock(&world, T2).code, 0);
    assert_eq!(world.nsxt.actions(), ["add_tags", "add_tags"]);
}

fn a_vm_deleted_from_the_inventory_closes_its_lease_instead_of_retrying_forever() {
    let world = nsxt_world("", true);
    assert_eq!(lock(&world, T2).code, 0);
    world.nsxt.remove_vm(&web01());
    let run = unlock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    // NSX no longer lists it, so it carries no tag: the lease is released, not kept for a
    // retry that would fail for ever. (A VM deleted between the read and the detach gets 404
    // from remove_tags, which is taken the same way.)
    assert!(run.stdout.contains("already closed"), "{}", run.stdout);
    assert!(
        world.leases().is_empty(),
        "the lease is dropped, not kept for retry"
    );
    let last = world
        .journal()
        .into_iter()
        .rev()
        .find(|e| e["action"] == "revoke")
        .unwrap();
    assert_eq!(last["result"], "ok");
}

fn an_account_that_may_read_but_not_tag_is_refused_with_its_role_named() {
    for auth in ["basic", "session"] {
        let world = World::new();
        let text = world.config_text_nsxt(&format!("auth = \"{auth}\""), true);
        let nsx = text.find("[nsx]").unwrap();
        let text = format!(
            "{}{}",
            &text[..nsx],
            text[nsx..].replacen("user = \"otnsx\"", "user = \"otnsx-reader\"", 1)
        );
        assert!(text.contains("otnsx-reader"), "{text}");
        world.write_config(&text);
        let run = lock(&world, T2);
        assert_eq!(run.code, 77, "{auth}: {run:?}");
        assert!(
            run.stderr
                .contains("its role (it must be allowed to change VM tags; NSX 4.1 allows the fabric tag actions to Enterprise Admin only: a least-privilege role needs kind = \"nsx-policy\")"),
            "{auth}: {}",
            run.stderr
        );
        assert!(world.tagged_t().is_empty(), "{auth}");
        assert!(world.leases().is_empty(), "{auth}");
    }
}

crate::tests! {
    lock_adds_only_our_tag_and_unlock_removes_only_ours,
    two_tickets_share_a_vm_on_nsxt_too,
    a_duplicate_lock_event_changes_nothing_on_nsxt,
    duplicate_display_names_are_refused,
    resolve_by_vcenter_finds_a_vm_nsx_knows_by_its_bios_uuid,
    an_old_manager_gets_update_tags_with_the_other_tags_kept,
    session_auth_renews_an_expired_token_once_and_logs_out,
    a_429_storm_within_the_deadline_ends_in_success,
    a_429_storm_past_the_deadline_exits_75_without_sleeping_past_it,
    one_retry_loop_at_most_four_attempts_per_request,
    transaction_aborted_607_is_retried,
    dry_run_changes_nothing_on_nsxt,
    grant_and_revoke_work_on_nsxt,
    nsx_t_settings_are_checked,
    resolve_by_vcenter_on_65_explains_what_to_set,
    reconcile_finds_the_tagged_vms_by_search_and_lists_the_inventory_only_when_search_cannot,
    a_vm_with_a_full_tag_list_is_named_and_nothing_is_rewritten,
    a_400_from_a_current_manager_is_an_error_never_a_fallback_to_update_tags,
    a_vm_deleted_from_the_inventory_closes_its_lease_instead_of_retrying_forever,
    an_account_that_may_read_but_not_tag_is_refused_with_its_role_named,
}
