//! Small files the clients keep in the state directory between runs (the help desk's
//! SessionID, NSX-V's tag id): read without following a link and at most 4 KiB, written to a
//! temporary file in the directory's group (as every state file) and renamed into place.
//! Neither failing matters: the client then asks the service again.

use std::io::{Read, Write};
use std::path::Path;

/// The file's text, if it can be read.
pub fn read(path: &Path) -> Option<String> {
    let mut text = String::new();
    crate::sys::open_no_follow(std::fs::OpenOptions::new().read(true), path)
        .ok()?
        .take(4096)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// Replaces the file with `text`, or leaves it as it was.
pub fn write(path: &Path, text: &str) {
    let temp = path.with_extension(format!("{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&temp);
    let written = crate::sys::open_shared(
        std::fs::OpenOptions::new().create_new(true).write(true),
        &temp,
    )
    .and_then(|mut f| f.write_all(text.as_bytes()))
    .and_then(|()| std::fs::rename(&temp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
}
