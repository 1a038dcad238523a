//! What the Debian package installs besides the binary: shell completions that match the
//! command line, systemd units that fit the state directory's design.

use std::fs;
use std::path::PathBuf;

use clap::CommandFactory;

fn dist() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dist")
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
    let manifest =
        fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let deb = manifest
        .split("[package.metadata.deb]")
        .nth(1)
        .expect("cargo-deb metadata");
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
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(source);
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

crate::tests! {
    the_shipped_completions_match_the_command_line,
    every_packaged_file_exists_and_the_units_run_the_packaged_binary,
}
