//! The documentation keeps up with the command line.

use std::path::PathBuf;

use clap::CommandFactory;

fn read(name: &str) -> String {
    std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(name)).unwrap()
}

fn the_man_page_names_every_subcommand_and_long_option() {
    let man = read("man/otnsx.1").replace("\\-", "-");
    let cli = otnsx::cli::Cli::command();
    let mut missing = Vec::new();
    for cmd in std::iter::once(&cli).chain(cli.get_subcommands()) {
        if !man.contains(&format!(".B {}", cmd.get_name())) && cmd.get_name() != "otnsx" {
            missing.push(cmd.get_name().to_string());
        }
        for long in cmd.get_arguments().filter_map(|a| a.get_long()) {
            if long != "help" && long != "version" && !man.contains(&format!("--{long}")) {
                missing.push(format!("--{long}"));
            }
        }
    }
    for section in ["EXIT STATUS", "FILES", "ENVIRONMENT"] {
        if !man.contains(section) {
            missing.push(section.to_string());
        }
    }
    for code in ["0", "1", "2", "65", "69", "75", "77", "78"] {
        if !man.contains(&format!(".B {code}\n")) {
            missing.push(format!("exit status {code}"));
        }
    }
    assert!(missing.is_empty(), "man/otnsx.1 lacks {missing:?}");
}

fn ci_runs_the_test_command_the_readme_gives() {
    let readme = read("README.md");
    let ci = read(".ci/run");
    let command = "cargo test --locked";
    assert!(
        readme.contains(command),
        "README.md does not give `{command}`"
    );
    assert!(
        ci.lines().any(|l| l.trim() == command),
        ".ci/run does not run `{command}`"
    );
    assert!(readme.contains("cargo run --example sandbox"));
}

fn the_help_pages_are_pinned() {
    let mut pages = String::new();
    for args in [&["--help"][..], &["grant", "--help"], &["revoke", "--help"]] {
        let run = crate::run_binary(args, &[]);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        pages.push_str(&format!("$ otnsx {}\n{}\n", args.join(" "), run.stdout));
    }
    crate::golden("help.txt", &pages);
}

/// Every relative link of the README and the `docs/` pages leads to a file of the project, and
/// every `#anchor` into a page to one of its headings (as GitHub makes anchors of them).
fn the_readme_and_docs_link_to_what_is_there() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pages = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        pages.push(entry.unwrap().path());
    }
    let anchor = |heading: &str| -> String {
        heading
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect()
    };
    let mut broken = Vec::new();
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        let dir = page.parent().unwrap();
        for (i, _) in text.match_indices("](") {
            let rest = &text[i + 2..];
            let Some(end) = rest.find(')') else { continue };
            let target = &rest[..end];
            if target.starts_with("http") || target.is_empty() {
                continue;
            }
            let (file, fragment) = target.split_once('#').unwrap_or((target, ""));
            let path = if file.is_empty() {
                page.clone()
            } else {
                dir.join(file)
            };
            if !path.exists() {
                broken.push(format!("{}: {target}", page.display()));
                continue;
            }
            if !fragment.is_empty() {
                let headings = std::fs::read_to_string(&path).unwrap_or_default();
                let found = headings
                    .lines()
                    .filter_map(|l| l.strip_prefix('#'))
                    .map(|l| l.trim_start_matches('#'))
                    .any(|h| anchor(h) == fragment);
                if !found {
                    broken.push(format!("{}: {target} (no such heading)", page.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links: {broken:#?}");
}

crate::tests! {
    the_man_page_names_every_subcommand_and_long_option,
    ci_runs_the_test_command_the_readme_gives,
    the_help_pages_are_pinned,
    the_readme_and_docs_link_to_what_is_there,
}
