//! What otnsx prints on stdout, by the global `--json` and `--quiet` flags.
//!
//! Without them, commands print for people ([`outln`]). With `--quiet`, nothing goes to
//! stdout (errors still go to stderr). With `--json`, nothing but one JSON document, on one
//! line, once the command ends: the envelope `{"command","ok","exit","error"}` and beside it
//! the fields the command added ([`field`]); see JSON OUTPUT in the man page.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Map, Value};

static JSON: AtomicBool = AtomicBool::new(false);
static QUIET: AtomicBool = AtomicBool::new(false);
static FIELDS: Mutex<Option<Map<String, Value>>> = Mutex::new(None);
static LAST_SAID: Mutex<Option<String>> = Mutex::new(None);

/// Sets the run's output mode from the command line, and starts its document afresh (a
/// caller of `main_with` may run several commands in one process).
pub fn set_mode(json: bool, quiet: bool) {
    JSON.store(json, Ordering::Relaxed);
    QUIET.store(quiet, Ordering::Relaxed);
    *crate::sync::lock(&FIELDS) = None;
    *crate::sync::lock(&LAST_SAID) = None;
}

/// Whether the output is one JSON document.
pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Whether [`outln`] prints: neither `--json` nor `--quiet`.
pub fn for_people() -> bool {
    !json() && !QUIET.load(Ordering::Relaxed)
}

/// Adds (or replaces) a top-level field of the JSON document.
pub fn field(key: &str, value: impl serde::Serialize) {
    let value = serde_json::to_value(value).unwrap_or(Value::Null);
    crate::sync::lock(&FIELDS)
        .get_or_insert_with(Map::new)
        .insert(key.to_string(), value);
}

/// Adds every field of `object` (a struct that serializes as a JSON object) at the top level.
pub fn fields(object: impl serde::Serialize) {
    if let Ok(Value::Object(map)) = serde_json::to_value(object) {
        for (key, value) in map {
            field(&key, value);
        }
    }
}

/// Appends `value` to the array field `key`.
pub fn push(key: &str, value: Value) {
    let mut guard = crate::sync::lock(&FIELDS);
    let map = guard.get_or_insert_with(Map::new);
    match map.get_mut(key) {
        Some(Value::Array(list)) => list.push(value),
        _ => {
            map.insert(key.to_string(), Value::Array(vec![value]));
        }
    }
}

/// Remembers the last line said on stderr (by [`errln`]): the `error` of a run that failed
/// without an error of its own (a state problem said along the way).
pub fn said(text: &str) {
    let text = text.strip_prefix("otnsx: ").unwrap_or(text);
    *crate::sync::lock(&LAST_SAID) = Some(text.to_string());
}

/// The JSON document of a run: the envelope (`command`, `ok`, `exit`, `error`) first in
/// meaning, the command's fields beside it; an envelope field always wins over a command's.
pub fn document(command: Option<&str>, exit: u8, error: Option<String>) -> String {
    let mut map = crate::sync::lock(&FIELDS).take().unwrap_or_default();
    let error = match error {
        Some(e) => Some(e),
        None if exit != 0 => crate::sync::lock(&LAST_SAID).clone(),
        None => None,
    };
    map.insert("command".into(), command.into());
    map.insert("ok".into(), (exit == 0).into());
    map.insert("exit".into(), exit.into());
    map.insert("error".into(), error.into());
    crate::output::json(Value::Object(map).to_string())
}

/// Prints [`document`] on stdout, one line.
pub fn print_document(command: Option<&str>, exit: u8, error: Option<String>) {
    use std::io::Write as _;
    let text = document(command, exit, error);
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}
