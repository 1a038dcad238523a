//! What the Debian package installs besides the binary: shell completions that match the
//! command line, systemd units that fit the state directory's design.

use std::fs;
use std::path::PathBuf;

use clap::CommandFactory;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn dist() -> PathBuf {
    root().join("dist")
}

/// The `[package.metadata.deb]` table of Cargo.toml.
fn deb_metadata() -> String {
    let manifest = fs::read_to_string(root().join("Cargo.toml")).unwrap();
    manifest
        .split("[package.metadata.deb]")
        .nth(1)
        .expect("cargo-deb metadata")
        .to_string()
}

fn the_shipped_completions_match_the_command_line() {
    use clap_complete::Shell;
    for (shell, file) in [
        (Shell::Bash, "otnsx.bash"),
        (Shell::Zsh, "_otnsx"),
        (Shell::Fish, "otnsx.fish"),
    ] {
        let mut generated = Vec::new();
        clap_complete::generate(
            shell,
            &mut otnsx::cli::Cli::command(),
            "otnsx",
            &mut generated,
        );
        let generated = String::from_utf8(generated).unwrap();
        // SNAPSHOTS=overwrite cargo test rewrites them.
        crate::snapshot(&dist().join("completions").join(file), &generated);
    }
}

fn every_packaged_file_exists_and_the_units_run_the_packaged_binary() {
    let deb = deb_metadata();
    // Every source path of an asset exists (the binary is built by cargo deb itself).
    let mut assets = 0;
    for line in deb.lines().filter(|l| l.trim_start().starts_with("[\"")) {
        let source = line
            .trim_start()
            .trim_start_matches("[\"")
            .split('"')
            .next()
            .unwrap();
        assets += 1;
        if source.starts_with("target/") {
            continue;
        }
        let path = root().join(source);
        assert!(path.exists(), "asset {source} is missing");
    }
    assert!(assets >= 10, "{assets} assets");
    let service = fs::read_to_string(dist().join("systemd/otnsx-reconcile.service")).unwrap();
    assert!(
        service.contains("ExecStart=/usr/bin/otnsx reconcile"),
        "{service}"
    );
    assert!(
        service.contains("ReadWritePaths=/var/lib/otnsx"),
        "{service}"
    );
    // A hung run is killed so that the timer's next one starts; well above the deadline.
    assert!(service.contains("\nTimeoutStartSec=2min\n"), "{service}");
    let postinst = fs::read_to_string(dist().join("debian/postinst")).unwrap();
    assert!(postinst.contains("install -d -m 2770 -o root -g \"$group\" /var/lib/otnsx"));
    // otnsx rotates its journal itself: no logrotate rule (copytruncate lost entries), and
    // the one an earlier package installed is removed on upgrade.
    assert!(!dist().join("logrotate").exists());
    for script in ["preinst", "postinst", "postrm"] {
        let text = fs::read_to_string(dist().join("debian").join(script)).unwrap();
        assert!(
            text.contains(
                "dpkg-maintscript-helper rm_conffile /etc/logrotate.d/otnsx 0.2.0~ -- \"$@\""
            ),
            "{script}: {text}"
        );
    }
}

fn the_license_is_mit_and_the_packages_copyright_carries_its_text() {
    let license = fs::read_to_string(root().join("LICENSE")).unwrap();
    assert!(license.starts_with("MIT License\n"), "{license}");
    assert!(license.contains("Copyright (c) 2026 the otnsx authors\n"));
    let manifest = fs::read_to_string(root().join("Cargo.toml")).unwrap();
    assert!(manifest.contains("\nlicense = \"MIT\"\n"));
    // Debian's machine-readable format: a header, the files' paragraph, the license's text
    // as continuation lines (a blank line as " .").
    let copyright = fs::read_to_string(dist().join("debian/copyright")).unwrap();
    assert!(copyright.starts_with(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
    ));
    assert!(copyright.contains("\nFiles: *\nCopyright: 2026 the otnsx authors\nLicense: MIT\n"));
    let text = copyright
        .split("\n\nLicense: MIT\n")
        .nth(1)
        .expect("a License: MIT paragraph");
    let unfolded: String = text
        .lines()
        .map(|l| {
            let l = l.strip_prefix(' ').expect("a continuation line");
            if l == "." {
                "\n".to_string()
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let permission = license
        .split_once("the otnsx authors\n\n")
        .expect("the copyright line")
        .1;
    assert_eq!(unfolded, permission);
    assert!(
        deb_metadata()
            .contains("[\"dist/debian/copyright\", \"usr/share/doc/otnsx/copyright\", \"644\"]")
    );
}

fn the_debian_changelog_is_in_debians_format_and_names_this_version() {
    let changelog = fs::read_to_string(dist().join("debian/changelog")).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    let first = changelog.lines().next().unwrap();
    assert_eq!(
        first,
        format!("otnsx ({version}-1) unstable; urgency=medium"),
        "the newest entry is this version's"
    );
    // Each entry: a heading, blank, "  * " items, blank, " -- name <address>  RFC 2822 date".
    let mut entries = 0;
    for entry in changelog.split("\n\notnsx (").filter(|e| !e.is_empty()) {
        entries += 1;
        let entry = entry.trim_start_matches("otnsx (");
        let (version, rest) = entry
            .split_once(") unstable; urgency=medium\n\n")
            .expect(entry);
        assert!(
            version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-~+".contains(c)),
            "{version}"
        );
        let (items, trailer) = rest.split_once("\n\n -- ").expect(entry);
        assert!(items.starts_with("  * "), "{items}");
        for line in items.lines() {
            assert!(
                line.starts_with("  * ") || line.starts_with("    "),
                "{line}"
            );
            assert!(line.len() <= 80, "{line}");
        }
        let (who, date) = trailer.trim_end().split_once(">  ").expect(trailer);
        assert_eq!(who, "otnsx maintainers <otnsx-maintainers@lists.otnsx.org");
        assert!(date.ends_with(" +0000") && date.contains(", "), "{date}");
    }
    assert!(entries >= 2, "{entries}");
    let deb = deb_metadata();
    assert!(deb.contains("\nchangelog = \"dist/debian/changelog\"\n"));
    // A real address (lintian's bogus-mail-host refuses @localhost): the project's list.
    assert!(
        deb.contains("\nmaintainer = \"otnsx maintainers <otnsx-maintainers@lists.otnsx.org>\"\n")
    );
}

/// The lines of a shell script between the line `start` and the next line indented as it is
/// that closes it (`fi`, `done`).
fn block<'a>(script: &'a str, start: &str) -> Vec<&'a str> {
    let mut lines = script.lines().skip_while(|l| l.trim() != start);
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("no `{start}` in\n{script}"));
    let indent = first.len() - first.trim_start().len();
    lines
        .take_while(|l| {
            !(l.len() - l.trim_start().len() == indent && ["fi", "done"].contains(&l.trim()))
        })
        .collect()
}

fn etc_otnsx_gets_its_owner_and_modes_on_the_first_install_only() {
    let postinst = fs::read_to_string(dist().join("debian/postinst")).unwrap();
    let first_install = block(&postinst, "if [ -z \"$2\" ]; then");
    for line in [
        "chgrp \"$group\" /etc/otnsx",
        "chmod 0750 /etc/otnsx",
        "chgrp \"$group\" /etc/otnsx/otnsx.toml",
        "chmod 0640 /etc/otnsx/otnsx.toml",
    ] {
        assert!(
            first_install.iter().any(|l| l.trim() == line),
            "{line} on the first install: {first_install:?}"
        );
    }
    // Nowhere else: an upgrade keeps what the admin set.
    let touching = postinst
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            (l.starts_with("chmod") || l.starts_with("chgrp") || l.starts_with("chown"))
                && l.contains("/etc/otnsx")
        })
        .count();
    assert_eq!(touching, 4, "{postinst}");
}

fn removing_the_package_stops_and_disables_the_timer() {
    let prerm = fs::read_to_string(dist().join("debian/prerm")).unwrap();
    assert!(prerm.starts_with("#!/bin/sh\n"));
    let remove = block(&prerm, "if [ \"$1\" = \"remove\" ]; then");
    let stop = block(&prerm, "if [ -d /run/systemd/system ]; then");
    assert!(
        stop.iter().any(|l| l
            .trim_start()
            .starts_with("deb-systemd-invoke stop otnsx-reconcile.timer otnsx-reconcile.service")),
        "{prerm}"
    );
    assert!(
        remove.iter().any(|l| l
            .trim_start()
            .starts_with("systemctl disable otnsx-reconcile.timer")),
        "{prerm}"
    );
    assert!(
        remove.len() > stop.len(),
        "the stop is part of the remove: {prerm}"
    );
    let postrm = fs::read_to_string(dist().join("debian/postrm")).unwrap();
    let purge = block(&postrm, "if [ \"$1\" = \"purge\" ]; then");
    for line in [
        "rm -rf /var/lib/otnsx",
        "rm -f /etc/systemd/system/timers.target.wants/otnsx-reconcile.timer",
    ] {
        assert!(purge.iter().any(|l| l.trim() == line), "{line}: {postrm}");
    }
    assert!(postrm.contains("systemctl daemon-reload"));
    // cargo-deb takes the scripts from this folder, prerm among them.
    assert!(deb_metadata().contains("\nmaintainer-scripts = \"dist/debian/\"\n"));
    for script in ["preinst", "postinst", "prerm", "postrm"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dist().join("debian").join(script))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "{script} is executable");
    }
}

fn the_reconcile_service_runs_in_a_sandbox() {
    let service = fs::read_to_string(dist().join("systemd/otnsx-reconcile.service")).unwrap();
    let directives: Vec<&str> = service
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .collect();
    // systemd-analyze security rates these 1.5 ("OK"); .ci/run measures it where it can.
    for directive in [
        "User=www-data",
        "UMask=0007",
        "TimeoutStartSec=2min",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "ReadWritePaths=/var/lib/otnsx",
        "ProtectProc=invisible",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "RestrictNamespaces=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "MemoryDenyWriteExecute=yes",
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service",
    ] {
        assert!(directives.contains(&directive), "{directive} in\n{service}");
    }
    // otnsx talks to its services and reads the hostname for syslog; the web server shares
    // the user, so its IPC must not be removed after each run.
    for absent in [
        "PrivateNetwork=",
        "IPAddressDeny=",
        "ProcSubset=",
        "RemoveIPC=",
        "PrivateUsers=",
    ] {
        assert!(
            !directives.iter().any(|d| d.starts_with(absent)),
            "{absent} in\n{service}"
        );
    }
    // The syslog socket is one of the families allowed; its default path survives
    // PrivateDevices (systemd links /dev/log into the private /dev).
    let syslog_default = fs::read_to_string(root().join("src/config/check.rs")).unwrap();
    assert!(syslog_default.contains("PathBuf::from(\"/dev/log\")"));
}

fn the_example_and_the_lintian_overrides_are_installed() {
    let deb = deb_metadata();
    for asset in [
        // The configuration, and the example beside the other documentation (the admin's
        // edited /etc/otnsx/otnsx.toml no longer shows the shipped one).
        "[\"otnsx.toml.example\", \"etc/otnsx/otnsx.toml\", \"640\"]",
        "[\"otnsx.toml.example\", \"usr/share/doc/otnsx/otnsx.toml.example\", \"644\"]",
        "[\"dist/debian/otnsx.lintian-overrides\", \"usr/share/lintian/overrides/otnsx\", \"644\"]",
    ] {
        assert!(deb.contains(asset), "{asset}");
    }
    // Every override says why: a comment right before each group of tags.
    let overrides = fs::read_to_string(dist().join("debian/otnsx.lintian-overrides")).unwrap();
    let mut explained = false;
    let mut tags = 0;
    for line in overrides.lines() {
        if line.starts_with('#') {
            explained = true;
        } else if line.is_empty() {
            explained = false;
        } else {
            assert!(line.starts_with("otnsx: "), "{line}");
            assert!(explained, "no reason given for {line}");
            tags += 1;
        }
    }
    assert!(tags >= 1);
}

crate::tests! {
    the_shipped_completions_match_the_command_line,
    every_packaged_file_exists_and_the_units_run_the_packaged_binary,
    the_license_is_mit_and_the_packages_copyright_carries_its_text,
    the_debian_changelog_is_in_debians_format_and_names_this_version,
    etc_otnsx_gets_its_owner_and_modes_on_the_first_install_only,
    removing_the_package_stops_and_disables_the_timer,
    the_reconcile_service_runs_in_a_sandbox,
    the_example_and_the_lintian_overrides_are_installed,
}
