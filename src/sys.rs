//! The few operating-system facts std does not give: who the process runs as, opening a file
//! without following a symbolic link, ending a child's whole process group, and a signal
//! state of otnsx's own whatever the caller left.
//!
//! The crate forbids `unsafe` everywhere but here, where each call is a plain system call
//! with integer arguments (or a signal set on the stack) and no memory kept by the kernel.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The real and the effective user id of this process.
#[allow(unsafe_code)]
pub fn uids() -> (u32, u32) {
    // SAFETY: getuid(2) and geteuid(2) take no arguments and cannot fail.
    unsafe { (libc::getuid(), libc::geteuid()) }
}

/// One malloc arena for the whole process: the few threads a run makes for requests at once
/// would otherwise each get an arena of their own, and the run's resident set grows by a few
/// MiB for nothing. (glibc's `mallopt`; a no-op where it fails.)
#[allow(unsafe_code)]
pub fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// The signals whose disposition otnsx resets to the default at start, whatever the caller
/// left: an ignored SIGCHLD makes the kernel reap children itself, so that waiting for a
/// `password_command` fails with ECHILD ("No child processes"); an ignored or blocked SIGTERM
/// or SIGINT would let otnsx outlive the help desk's `timeout` until its SIGKILL.
const RESET_SIGNALS: [libc::c_int; 8] = [
    libc::SIGCHLD,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGALRM,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Does not trust the signal state otnsx inherited (a help desk's daemon ignores SIGCHLD, a
/// caller may block signals): [`RESET_SIGNALS`] get their default disposition and no signal
/// stays blocked. SIGPIPE stays ignored, as Rust's runtime sets it before `main` (and set here
/// again, for a caller of `main_with` that is not a Rust `main`): otnsx relies on a write to a
/// closed pipe failing with EPIPE (see `outln!`) rather than killing the process. Called once,
/// first thing, before any thread starts.
#[allow(unsafe_code)]
pub fn reset_signals() {
    for signal in RESET_SIGNALS {
        // SAFETY: signal(2) with SIG_DFL installs no handler of ours; the previous disposition
        // it returns is not used.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
        }
    }
    // SAFETY: as above, with SIG_IGN.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    // SAFETY: the set is a local value initialised by sigemptyset before it is read;
    // pthread_sigmask only reads it (the old mask is not asked for).
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
}

/// Sends SIGKILL to every process in the process group `group` (a child started with
/// `process_group(0)`, whose group id is its pid). A group already gone is not an error.
#[allow(unsafe_code)]
pub fn kill_process_group(group: u32) {
    let Ok(group) = libc::pid_t::try_from(group) else {
        return;
    };
    if group <= 1 {
        return; // never the caller's own group or every process
    }
    // SAFETY: kill(2) with a negative pid signals that process group; no memory is shared.
    unsafe {
        libc::kill(-group, libc::SIGKILL);
    }
}

/// `options` with `O_NOFOLLOW` (and `O_CLOEXEC`, as std sets): the open fails with ELOOP when
/// the last component of the path is a symbolic link.
pub fn no_follow(options: &mut OpenOptions) -> &mut OpenOptions {
    options.custom_flags(libc::O_NOFOLLOW)
}

/// Opens `path` with `options`, refusing a symbolic link with an error that says so.
pub fn open_no_follow(options: &mut OpenOptions, path: &Path) -> std::io::Result<File> {
    no_follow(options).open(path).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            std::io::Error::other(format!(
                "{} is a symbolic link; otnsx does not follow links in its state directory (remove it)",
                path.display()
            ))
        } else {
            e
        }
    })
}

/// The mode of every file otnsx creates in its state directory: read and written by the owner
/// and the directory's group (the help desk's users share it), by nobody else.
pub const SHARED_FILE: u32 = 0o660;

/// The mode of a state directory otnsx creates: the group's, and setgid so that every file
/// made in it belongs to that group whoever made it.
pub const SHARED_DIR: u32 = 0o2770;

/// Opens a state file with `options` (created with [`SHARED_FILE`]), refusing a link; a file
/// this user owns gets the group bits the umask took away (a web server's umask is often 022,
/// which would lock the help desk's other users out of a file the web server created).
pub fn open_shared(options: &mut OpenOptions, path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let file = open_no_follow(options.mode(SHARED_FILE), path)?;
    if let Ok(meta) = file.metadata()
        && meta.uid() == uids().1
        && meta.mode() & SHARED_FILE != SHARED_FILE
    {
        let mode = (meta.mode() & 0o7777) | SHARED_FILE;
        let _ = file.set_permissions(std::fs::Permissions::from_mode(mode));
    }
    Ok(file)
}

/// Opens a regular file for reading without blocking on a FIFO or a device: `O_NONBLOCK` for
/// the open, then the opened file must be a regular file.
pub fn open_regular(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_refused() {
        let dir = std::env::temp_dir().join(format!("otnsx-sys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let target = dir.join("target");
        std::fs::write(&target, "x").expect("write");
        let link = dir.join("link");
        std::os::unix::fs::symlink(&target, &link).expect("link");
        let err = open_no_follow(OpenOptions::new().read(true), &link).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(open_no_follow(OpenOptions::new().read(true), &target).is_ok());
        assert!(open_regular(Path::new("/dev/null")).is_err());
        assert!(open_regular(&target).is_ok());
        std::fs::remove_dir_all(&dir).ok();
    }
}
