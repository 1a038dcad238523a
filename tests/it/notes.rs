//! The internal notes that tell the agent, in the ticket, what otnsx did.

use serde_json::{Value, json};

use crate::support::{T2, T3, World, set};
use crate::{event, lock, note_entries, otnsx, unlock};

/// The PATCH bodies the help desk received, parsed.
fn patches(world: &World) -> Vec<Value> {
    world
        .helpdesk
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| {
            assert_eq!(r.media_type(), "application/json");
            serde_json::from_slice(&r.body).unwrap()
        })
        .collect()
}

fn opening_and_closing_post_internal_notes_never_visible_to_the_customer() {
    let world = World::new();
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    let bodies = patches(&world);
    assert_eq!(bodies.len(), 1);
    let article = &bodies[0]["Article"];
    let until = world.leases()[0]["expires_at"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        *article,
        json!({
            "CommunicationChannel": "Internal", "IsVisibleForCustomer": 0, "SenderType": "agent",
            "Subject": "otnsx: maintenance access opened",
            "Body": format!("Access to web01 is open until {until} (UTC), or until the ticket is unlocked."),
            "ContentType": "text/plain; charset=utf8", "MimeType": "text/plain", "Charset": "utf8",
            "NoAgentNotify": 1
        })
    );
    assert!(bodies[0]["SessionID"].is_string());
    assert!(
        bodies[0].get("Password").is_none(),
        "the note uses the session, not the password"
    );
    assert_eq!(
        world.helpdesk.ticket(T2.0).articles[0]["IsVisibleForCustomer"],
        0
    );

    assert_eq!(unlock(&world, T2).code, 0);
    let article = &patches(&world)[1]["Article"];
    assert_eq!(article["Subject"], "otnsx: maintenance access closed");
    assert_eq!(article["Body"], "Access to web01 is closed.");
    let notes = note_entries(&world);
    assert_eq!(notes.len(), 2);
    assert_eq!(
        notes[1]["detail"],
        "otnsx: maintenance access closed: Access to web01 is closed."
    );
    assert_eq!(notes[1]["result"], "ok");
}

fn a_duplicate_event_posts_no_note() {
    let world = World::new();
    assert_eq!(lock(&world, T2).code, 0);
    assert_eq!(event(&world, T2).code, 0);
    assert_eq!(patches(&world).len(), 1);
}

fn refusals_and_failures_say_what_to_do() {
    let world = World::new();
    world
        .helpdesk
        .update(T2.0, |t| t.vm_field = json!("nosuchvm dup"));
    assert_eq!(lock(&world, T2).code, 65);
    let article = &patches(&world)[0]["Article"];
    assert_eq!(article["Subject"], "otnsx: maintenance access problem");
    let body = article["Body"].as_str().unwrap();
    assert!(body.contains("nosuchvm was not opened: vCenter has no VM named \"nosuchvm\"; check the name in the ticket."), "{body}");
    assert!(
        body.contains("dup was not opened: 2 VMs are named \"dup\""),
        "{body}"
    );

    world.helpdesk.update(T3.0, |t| t.vm_field = json!("db01"));
    world.nsx.fail_changes(Some(500));
    assert_eq!(lock(&world, T3).code, 69);
    let body = patches(&world)[1]["Article"]["Body"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        body.starts_with("Access to db01 could not be opened: "),
        "{body}"
    );
    assert!(
        body.ends_with(
            "Unlock and lock the ticket again to retry; if that fails too, tell the administrators."
        ),
        "{body}"
    );
}

fn a_note_that_fails_changes_nothing_but_is_journaled() {
    let world = World::new();
    world.helpdesk.update(T2.0, |t| t.notable = false);
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged(), set(&["vm-42"]));
    assert!(
        run.stderr.contains("adding a note to ticket ID 2"),
        "{}",
        run.stderr
    );
    // The permission is named, not "no such ticket".
    assert!(
        run.stderr
            .contains("it needs ro + note on the ticket's queue"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("no such ticket"), "{}", run.stderr);
    let notes = note_entries(&world);
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0]["result"], "failed");
    assert!(
        notes[0]["detail"]
            .as_str()
            .unwrap()
            .contains("TicketUpdate.AccessDenied"),
        "{}",
        notes[0]
    );
}

fn otrs_5_gets_an_article_type_and_notes_can_be_off() {
    let world = World::new();
    world.helpdesk.set_generation(5);
    world.write_config(&world.config_text().replace(
        "vm_field = \"VMName\"",
        "vm_field = \"VMName\"\nversion = 5",
    ));
    assert_eq!(lock(&world, T2).code, 0);
    let article = &patches(&world)[0]["Article"];
    assert_eq!(article["ArticleType"], "note-internal");
    assert!(
        article.get("IsVisibleForCustomer").is_none()
            && article.get("CommunicationChannel").is_none()
    );

    world.write_config(&world.config_text().replace(
        "vm_field = \"VMName\"",
        "vm_field = \"VMName\"\nnotes = false",
    ));
    assert_eq!(unlock(&world, T2).code, 0);
    assert_eq!(patches(&world).len(), 1, "no note with notes = false");
}

fn otrs_version_5_against_a_later_help_desk_never_posts_a_customer_visible_note() {
    let world = World::new(); // the fake is of generation 6
    world.write_config(&world.config_text().replace(
        "vm_field = \"VMName\"",
        "vm_field = \"VMName\"\nversion = 5",
    ));
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    // The event's TicketGet asked for the first article, which told the generation.
    let get = world
        .helpdesk
        .requests()
        .into_iter()
        .find(|r| r.method == "GET")
        .unwrap();
    assert_eq!(get.query_value("AllArticles").as_deref(), Some("1"));
    assert_eq!(get.query_value("ArticleLimit").as_deref(), Some("1"));
    let article = &patches(&world)[0]["Article"];
    assert_eq!(article["IsVisibleForCustomer"], 0, "{article}");
    assert_eq!(article["CommunicationChannel"], "Internal");
    assert!(article.get("ArticleType").is_none(), "{article}");
    let stored = &world.helpdesk.ticket(T2.0).articles[0];
    assert_eq!(
        stored["IsVisibleForCustomer"], 0,
        "internal in the help desk"
    );
    assert!(
        run.stderr.contains("set otrs.version = 6"),
        "{}",
        run.stderr
    );
    assert!(
        note_entries(&world)[0]["detail"]
            .as_str()
            .unwrap()
            .contains("set otrs.version = 6")
    );
    // check says so too.
    let run = otnsx(&world, &["check", "--ticket", "2"]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains(
            "✗ help desk version: otrs.version = 5, but the articles are those of OTRS 6 or later"
        ),
        "{}",
        run.stdout
    );
}

fn two_tickets_the_second_unlock_notes_what_stays_open() {
    let world = World::new();
    assert_eq!(lock(&world, T2).code, 0);
    assert_eq!(lock(&world, T3).code, 0);
    assert_eq!(unlock(&world, T2).code, 0);
    let bodies = patches(&world);
    assert_eq!(
        bodies[1]["Article"]["Body"]
            .as_str()
            .unwrap()
            .split(" until ")
            .next(),
        Some("Access to web01 is open")
    );
    assert_eq!(
        bodies[2]["Article"]["Body"],
        "This ticket no longer holds web01; it stays open for ticket 2026112310000021."
    );
}

fn agents_are_notified_of_notes_only_when_asked_to() {
    let world = World::new();
    world.write_config(&world.config_text().replace(
        "vm_field = \"VMName\"",
        "vm_field = \"VMName\"\nnotify_agents = true",
    ));
    assert_eq!(lock(&world, T2).code, 0);
    assert_eq!(patches(&world)[0]["Article"]["NoAgentNotify"], 0);
}

fn an_empty_field_at_lock_time_gets_a_note() {
    let world = World::new();
    world.helpdesk.update(T2.0, |t| t.vm_field = json!(null));
    assert_eq!(lock(&world, T2).code, 0);
    let bodies = patches(&world);
    assert_eq!(bodies.len(), 1);
    assert_eq!(
        bodies[0]["Article"]["Body"],
        "This ticket names no VM in its field VMName; nothing was opened. Fill in the field, then unlock and lock the ticket again."
    );
    assert_eq!(bodies[0]["Article"]["IsVisibleForCustomer"], 0);
    // An unlock that holds nothing posts nothing.
    assert_eq!(unlock(&world, T2).code, 0);
    assert_eq!(patches(&world).len(), 1);
}

fn reconcile_closing_an_unlocked_ticket_posts_the_unlock_note() {
    let world = World::new();
    assert_eq!(lock(&world, T2).code, 0);
    // Unlocked in the help desk, and the event never reached otnsx.
    world.helpdesk.set_lock(T2.0, "unlock");
    let run = otnsx(&world, &["reconcile"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(world.tagged().is_empty());
    let bodies = patches(&world);
    assert_eq!(bodies.len(), 2, "the lock's note and the close's");
    assert_eq!(bodies[1]["Article"]["Body"], "Access to web01 is closed.");
    assert_eq!(
        bodies[1]["Article"]["Subject"],
        "otnsx: maintenance access closed"
    );
}

fn journal_lines_and_notes_of_a_lock_and_unlock_are_pinned() {
    let world = World::new();
    let now = "2026-11-23T15:36:43Z";
    world.helpdesk.set_lock(T2.0, "lock");
    assert_eq!(crate::otnsx_at(&world, now, &[T2.1, "2"]).code, 0);
    world.helpdesk.set_lock(T2.0, "unlock");
    assert_eq!(crate::otnsx_at(&world, now, &[T2.1, "2"]).code, 0);
    let journal = std::fs::read_to_string(world.state_dir().join("journal.jsonl")).unwrap();
    crate::golden(
        "lock-unlock.journal.jsonl",
        &crate::redact(&world, &journal),
    );
    let notes: String = patches(&world)
        .iter()
        .map(|p| format!("{}\n{}\n\n", p["Article"]["Subject"], p["Article"]["Body"]))
        .collect();
    crate::golden("lock-unlock.notes.txt", &notes);
}

crate::tests! {
    opening_and_closing_post_internal_notes_never_visible_to_the_customer,
    a_duplicate_event_posts_no_note,
    refusals_and_failures_say_what_to_do,
    a_note_that_fails_changes_nothing_but_is_journaled,
    otrs_5_gets_an_article_type_and_notes_can_be_off,
    otrs_version_5_against_a_later_help_desk_never_posts_a_customer_visible_note,
    two_tickets_the_second_unlock_notes_what_stays_open,
    agents_are_notified_of_notes_only_when_asked_to,
    an_empty_field_at_lock_time_gets_a_note,
    reconcile_closing_an_unlocked_ticket_posts_the_unlock_note,
    journal_lines_and_notes_of_a_lock_and_unlock_are_pinned,
}
