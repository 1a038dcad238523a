//! The journal file's rotation, done by otnsx itself under the journal's lock: when
//! `journal.jsonl` has grown past `[log] rotate_size` or its first entry is older than
//! `[log] rotate_age`, it is renamed to `journal-<UTC time>.jsonl` and a new one begins with a
//! `rotate` entry that continues the hash chain. Nothing is copied or truncated, so no append
//! is lost. `reconcile` later compresses rotated files to `.jsonl.gz`; `history` reads them all,
//! oldest first, and reports what it cannot read.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::state::chain::Place;
use crate::time::Timestamp;

/// When the journal file is rotated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Once the file is at least this large, in bytes.
    pub size: u64,
    /// Once its first entry is at least this old (`None`: never by age).
    pub age: Option<Duration>,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            size: 64 << 20,
            age: Some(Duration::from_secs(30 * 86_400)),
        }
    }
}

/// The smallest `rotate_size`: a rotation per entry or two would only make files.
pub const MIN_SIZE: u64 = 4 << 10;

/// Parses a size: bytes, or a number with `KiB`, `MiB` or `GiB` (`K`, `M`, `G` too).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        _ => {
            return Err(format!(
                "{text:?} is not a size: give bytes or a number with KiB, MiB or GiB (64MiB)"
            ));
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| {
            format!("{text:?} is not a size: give bytes or a number with KiB, MiB or GiB (64MiB)")
        })
}

/// The journal's files, oldest first: the rotated ones (`journal-<time>.jsonl`, compressed or
/// not; a file compressed while it is also there plain is read once, plain), then `live`.
pub fn files(live: &Path) -> Vec<PathBuf> {
    let dir = live.parent().unwrap_or(Path::new("."));
    let mut rotated: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| is_rotated(name))
                .collect()
        })
        .unwrap_or_default();
    rotated.sort_by(|a, b| order(a).cmp(&order(b)).then(a.len().cmp(&b.len())));
    rotated.dedup_by(|later, earlier| stem(later) == stem(earlier));
    let mut all: Vec<PathBuf> = rotated.iter().map(|name| dir.join(name)).collect();
    if live.exists() {
        all.push(live.to_path_buf());
    }
    all
}

fn is_rotated(name: &str) -> bool {
    name.starts_with("journal-") && (name.ends_with(".jsonl") || name.ends_with(".jsonl.gz"))
}

fn stem(name: &str) -> &str {
    name.strip_suffix(".gz").unwrap_or(name)
}

/// When a rotated file was rotated: its time, then its count within that second.
fn order(name: &str) -> (&str, u64) {
    let time = stem(name)
        .trim_start_matches("journal-")
        .trim_end_matches(".jsonl");
    match time.split_once('-') {
        Some((time, n)) => (time, n.parse().unwrap_or(u64::MAX)),
        None => (time, 1),
    }
}

/// A part of the journal that could not be read.
#[derive(Debug, Clone)]
pub struct Gap {
    pub file: PathBuf,
    /// The lines read from it before the failure.
    pub after_line: u64,
    pub error: String,
}

impl std::fmt::Display for Gap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.after_line == 0 {
            write!(
                f,
                "{} could not be read ({}): its entries are missing here",
                self.file.display(),
                self.error
            )
        } else {
            write!(
                f,
                "{} could not be read after line {} ({}): the entries after it are missing here",
                self.file.display(),
                self.after_line,
                self.error
            )
        }
    }
}

/// Feeds every line of every journal file (see [`files`]), oldest first, to `each` with where
/// it is; returns what could not be read.
pub fn each_line(live: &Path, each: &mut dyn FnMut(&Place, &[u8])) -> Vec<Gap> {
    files(live)
        .iter()
        .filter_map(|path| read_file(path, each))
        .collect()
}

/// Feeds every line of one journal file (compressed or not) to `each`; returns what could not
/// be read of it. A file that is not there (compressed meanwhile) has nothing to read.
pub fn read_file(path: &Path, each: &mut dyn FnMut(&Place, &[u8])) -> Option<Gap> {
    let source = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut place = Place { source, line: 0 };
    let gap = |place: &Place, error: String| Gap {
        file: path.to_path_buf(),
        after_line: place.line,
        error,
    };
    let file = match crate::sys::open_no_follow(OpenOptions::new().read(true), path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return Some(gap(&place, e.to_string())),
    };
    let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(file)
    };
    for line in BufReader::with_capacity(256 << 10, reader).split(b'\n') {
        match line {
            Ok(line) => {
                place.line += 1;
                each(&place, &line);
            }
            Err(e) => return Some(gap(&place, e.to_string())),
        }
    }
    None
}

/// The name a journal rotated at `now` gets in `dir`: `journal-20261206T163000Z.jsonl`, with
/// `-2`, `-3`... when one by that name is there already (rotated in the same second).
pub fn rotated_name(dir: &Path, now: Timestamp) -> PathBuf {
    let stamp: String = now
        .to_string()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let mut n = 1;
    loop {
        let name = if n == 1 {
            format!("journal-{stamp}.jsonl")
        } else {
            format!("journal-{stamp}-{n}.jsonl")
        };
        let path = dir.join(&name);
        if !path.exists() && !dir.join(format!("{name}.gz")).exists() {
            return path;
        }
        n += 1;
    }
}

/// The `ts` of the first line of `file`, if it has one.
pub fn first_ts(file: &File) -> Option<Timestamp> {
    use std::os::unix::fs::FileExt;
    let mut head = vec![0u8; 8 << 10];
    let n = file.read_at(&mut head, 0).ok()?;
    let first = head[..n].split(|&b| b == b'\n').next()?;
    let value: serde_json::Value = serde_json::from_slice(first).ok()?;
    Timestamp::parse(value.get("ts")?.as_str()?)
}

/// Compresses the rotated journal files in `dir` that are not compressed yet, oldest first, as
/// long as `time_left` says there is time: each to a temporary file, synced, renamed to
/// `<name>.gz`, then the plain file removed. Returns how many, and the first failure.
pub fn compress(live: &Path, time_left: &dyn Fn() -> bool) -> (usize, Option<String>) {
    let dir = live.parent().unwrap_or(Path::new("."));
    let mut done = 0;
    for path in files(live) {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if path == live || !name.ends_with(".jsonl") || !time_left() {
            continue;
        }
        let gz = dir.join(format!("{name}.gz"));
        let temp = dir.join(format!(".{name}.gz.{}.tmp", std::process::id()));
        let result = (|| -> std::io::Result<()> {
            let mut from = crate::sys::open_no_follow(OpenOptions::new().read(true), &path)?;
            let out = crate::sys::open_shared(
                OpenOptions::new().create(true).write(true).truncate(true),
                &temp,
            )?;
            let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
            std::io::copy(&mut from, &mut encoder)?;
            let mut out = encoder.finish()?;
            out.flush()?;
            out.sync_all()?;
            fs::rename(&temp, &gz)?;
            File::open(dir)?.sync_all()?;
            fs::remove_file(&path)
        })();
        match result {
            Ok(()) => done += 1,
            Err(e) => {
                let _ = fs::remove_file(&temp);
                return (done, Some(format!("compressing {}: {e}", path.display())));
            }
        }
    }
    (done, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("40 KiB"), Ok(40 << 10));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        for bad in [
            "",
            "MiB",
            "64 MB",
            "-1",
            "1.5MiB",
            "99999999999999999999GiB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn files_come_oldest_first_and_once() {
        let dir = std::env::temp_dir().join(format!("otnsx-rotation-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        for name in [
            "journal-20261201T000000Z.jsonl.gz",
            "journal-20261201T000000Z-2.jsonl",
            "journal-20261130T000000Z.jsonl",
            "journal-20261201T000000Z.jsonl",
            "journal-20261202T000000Z.jsonl.gz",
            "journal.jsonl",
            "journal.appended",
            "other.jsonl",
        ] {
            fs::write(dir.join(name), "").unwrap();
        }
        let names: Vec<String> = files(&dir.join("journal.jsonl"))
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "journal-20261130T000000Z.jsonl",
                "journal-20261201T000000Z.jsonl",
                "journal-20261201T000000Z-2.jsonl",
                "journal-20261202T000000Z.jsonl.gz",
                "journal.jsonl"
            ]
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
