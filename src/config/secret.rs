//! Secrets and the files they come from: the redacting [`Secret`], configuration and password
//! files read only when otnsx may trust them, and password commands run in a bounded sandbox.

use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub(super) String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(redacted)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(redacted)")
    }
}

/// The file's text and permission bits.
pub(super) fn read(path: &Path) -> Result<(String, u32), String> {
    let (text, meta) = read_trusted(path, MAX_CONFIG)?;
    Ok((text, meta.permissions().mode()))
}

/// The largest configuration or secret file otnsx reads.
pub(super) const MAX_CONFIG: u64 = 1 << 20;

/// Reads a configuration or secret file that otnsx may trust: a regular file (never a FIFO or
/// a device, which could block or never end) of at most `max` bytes, not writable by every
/// user, and, when otnsx runs as root, owned by root or by the user otnsx runs as (the rule
/// of ssh's StrictModes): another user could otherwise rewrite what root believes.
pub(super) fn read_trusted(path: &Path, max: u64) -> Result<(String, fs::Metadata), String> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let file = crate::sys::open_regular(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read the permissions of {}: {e}", path.display()))?;
    if meta.len() > max {
        return Err(format!(
            "{} is larger than {} KiB; it cannot be a configuration or secret file",
            path.display(),
            max >> 10
        ));
    }
    let mode = meta.permissions().mode();
    if mode & 0o002 != 0 {
        return Err(format!(
            "{} is writable by every user (mode {:o}); chmod o-w it",
            path.display(),
            mode & 0o7777
        ));
    }
    let (_, euid) = crate::sys::uids();
    if euid == 0 && meta.uid() != 0 {
        return Err(format!(
            "{} belongs to uid {}, but otnsx runs as root: only root may own the files root trusts (chown root it)",
            path.display(),
            meta.uid()
        ));
    }
    let mut text = String::new();
    file.take(max + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if text.len() as u64 > max {
        return Err(format!(
            "{} grew past {} KiB while read",
            path.display(),
            max >> 10
        ));
    }
    Ok((text, meta))
}

/// Runs a password command (no shell, no standard input, an environment of PATH, HOME and
/// LANG only: not the other services' secrets, nor the help desk's CGI variables) and takes
/// the first line of what it prints. It runs in a process group of its own, which is killed
/// when the command exits (nothing it started lingers) and at `timeout`, when it is stopped
/// whether or not something still holds its output open.
pub(super) fn run_password_command(argv: &[String], timeout: Duration) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let Some((program, args)) = argv.split_first().filter(|(p, _)| !p.is_empty()) else {
        return Err("must name a program, e.g. [\"pass\", \"show\", \"otnsx/nsx\"]".into());
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for var in ["PATH", "HOME", "LANG"] {
        if let Some(value) = std::env::var_os(var) {
            command.env(var, value);
        }
    }
    let started = std::time::Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let group = child.id();
    let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
        crate::sys::kill_process_group(group);
        let _ = child.wait();
        return Err(format!("cannot read the output of {program}"));
    };
    // Read both pipes while waiting, so that a chatty command cannot block on a full pipe.
    let (sender, results) = std::sync::mpsc::channel();
    for (stream, pipe, limit) in [
        (0, Box::new(out) as Box<dyn Read + Send>, 1u64 << 20),
        (1, Box::new(err), 1 << 16),
    ] {
        let sender = sender.clone();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.take(limit).read_to_end(&mut buf);
            let _ = sender.send((stream, buf));
        });
    }
    let late = || {
        format!(
            "{program} did not finish within the deadline ({}s); it was stopped",
            timeout.as_secs()
        )
    };
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < timeout => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                crate::sys::kill_process_group(group);
                let _ = child.wait();
                return Err(late());
            }
            Err(e) => {
                crate::sys::kill_process_group(group);
                return Err(format!("waiting for {program}: {e}"));
            }
        }
    };
    // Whatever the command left running in its group would hold the pipes open.
    crate::sys::kill_process_group(group);
    let mut output: [Option<Vec<u8>>; 2] = [None, None];
    while output.iter().any(Option::is_none) {
        let left = timeout.saturating_sub(started.elapsed());
        match results.recv_timeout(left.max(Duration::from_millis(100))) {
            Ok((stream, buf)) => output[stream] = Some(buf),
            Err(_) => return Err(late()),
        }
    }
    let [stdout, stderr] = output.map(Option::unwrap_or_default);
    if !status.success() {
        // What the command printed on stdout may be the secret itself: none of it is echoed,
        // nor any known secret (`printable` scrubs those), before the line is shortened.
        let mut said = String::from_utf8_lossy(&stderr)
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        // Far more than is shown (4096 characters), and bounded: up to 1 MiB of stdout is
        // looked for in it.
        if let Some((cut, _)) = said.char_indices().nth(4096) {
            said.truncate(cut);
        }
        let printed = String::from_utf8_lossy(&stdout);
        let mut printed: Vec<&str> = printed
            .lines()
            .flat_map(|line| [line, line.trim()])
            .filter(|line| !line.is_empty())
            .collect();
        printed.sort_by_key(|line| std::cmp::Reverse(line.len()));
        printed.dedup();
        // A mark first, so that a shorter line cannot match inside an earlier `(redacted)`.
        const MARK: char = '\u{E000}';
        for line in printed {
            said = said.replace(line, &MARK.to_string());
        }
        let said = said.replace(MARK, crate::secrets::REDACTED);
        let said = crate::secrets::scrub(&said);
        let said: String = said.chars().take(200).collect();
        return Err(format!(
            "{program} failed ({status}): {}",
            crate::output::printable(&said)
        ));
    }
    let text = String::from_utf8(stdout)
        .map_err(|_| format!("{program} printed something that is not UTF-8"))?;
    Ok(first_line(&text))
}

pub(super) fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_commands_stderr_hides_its_stdout_without_garbling() {
        let argv = [
            "sh".to_string(),
            "-c".to_string(),
            "echo ' pw0-from-stdout '; echo re; echo 'sealed: pw0-from-stdout' >&2; exit 2".into(),
        ];
        let err = run_password_command(&argv, Duration::from_secs(10)).unwrap_err();
        assert_eq!(err, "sh failed (exit status: 2): sealed: (redacted)");
    }
}
