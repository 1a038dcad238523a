//! The layers stay layers: no source file uses one that uses it back, directly or through
//! others (see docs/architecture.md). `.ci/layers.py` prints the same graph and its cycles.
//!
//! Each file under src/ is a module (`mod.rs` stands for its directory). A file uses another
//! when its code (comments left out) names a path into it: `crate::a::b`, `super::x`,
//! `self::x`, or a child module it declares (`mod x;`, then `x::...`); a path is charged to
//! the longest file module it starts with.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

fn no_source_file_uses_one_that_uses_it_back() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = graph(&src);
    let mut said = String::new();
    for group in cycles(&graph) {
        said.push_str("cycle:\n");
        for m in &group {
            let inner: Vec<String> = graph[m]
                .iter()
                .filter(|t| group.contains(t))
                .map(|t| name(t))
                .collect();
            said.push_str(&format!("  {} -> {}\n", name(m), inner.join(", ")));
        }
    }
    assert!(said.is_empty(), "{said}");
    // The graph was read at all: the files are in it, and the uses of each.
    assert!(graph.contains_key(&module("commands::run")), "{graph:?}");
    assert!(graph[&module("commands")].contains(&module("commands::ticket")));
    assert!(graph[&module("config::check")].contains(&module("config::model")));
    assert!(graph[&module("output")].contains(&module("secrets")));
}

fn the_check_sees_paths_in_every_form() {
    let text = strip_comments(
        "use crate::{a::b, c};\n// crate::d::x\nlet s = \"crate::e::x\";\nsuper::f::g();\nx::y(); $crate::h::i!();\nuse super::{j::{k, l}, m as n};\nlet c = '\"'; crate::o::p;",
    );
    let mut paths = Vec::new();
    paths_in(&text, &mut |p, _| paths.push(p.join("::")));
    for want in [
        "crate::a::b",
        "crate::c",
        "super::f::g",
        "x::y",
        "$crate::h::i",
        "super::j::k",
        "super::j::l",
        "super::m",
        "crate::o::p",
    ] {
        assert!(paths.contains(&want.to_string()), "{want}: {paths:?}");
    }
    assert!(
        !paths.iter().any(|p| p.contains("::d") || p.contains("::e")),
        "{paths:?}"
    );
}

fn name(module: &[String]) -> String {
    if module.is_empty() {
        "crate".to_string()
    } else {
        module.join("::")
    }
}

fn module(name: &str) -> Module {
    name.split("::").map(str::to_string).collect()
}

fn module_of(src: &Path, file: &Path) -> Module {
    let mut parts: Module = file
        .strip_prefix(src)
        .unwrap()
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("main.rs") {
            out.push(path);
        }
    }
}

/// Which file module uses which.
fn graph(src: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut all = Vec::new();
    files(src, &mut all);
    let modules: BTreeSet<Module> = all.iter().map(|f| module_of(src, f)).collect();
    let mut graph = BTreeMap::new();
    for file in &all {
        let here = module_of(src, file);
        let text = strip_comments(&std::fs::read_to_string(file).unwrap());
        let children = children(&text);
        let inline = inline_modules(&text);
        let mut uses = BTreeSet::new();
        paths_in(&text, &mut |path, at| {
            let nested = inline.iter().any(|&(a, b)| a <= at && at < b);
            let (mut base, mut rest) = match path[0].as_str() {
                "crate" | "$crate" => (Vec::new(), &path[1..]),
                "self" => (here.clone(), &path[1..]),
                "super" => {
                    let mut base = here.clone();
                    if !nested {
                        base.pop();
                    }
                    let mut rest = &path[1..];
                    while rest.first().is_some_and(|p| p == "super") {
                        base.pop();
                        rest = &rest[1..];
                    }
                    (base, rest)
                }
                head if children.contains(head) && !nested => {
                    let mut base = here.clone();
                    base.push(head.to_string());
                    (base, &path[1..])
                }
                _ => return,
            };
            while let Some((part, more)) = rest.split_first() {
                let mut longer = base.clone();
                longer.push(part.clone());
                if !modules.contains(&longer) {
                    break;
                }
                base = longer;
                rest = more;
            }
            if base != here && !base.is_empty() && modules.contains(&base) {
                uses.insert(base);
            }
        });
        graph.insert(here, uses);
    }
    graph
}

/// The code without comments; string and char literals emptied, so that `"//"` is not a
/// comment and `"crate::x"` not a path.
fn strip_comments(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if rest.starts_with(b"/*") {
            let mut depth = 0;
            loop {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
                if i >= b.len() {
                    break;
                }
            }
        } else if let Some(hashes) = raw_string(rest) {
            // r#"..."# (or br#"..."#): up to the quote and as many hashes.
            let start = i + rest.iter().position(|&c| c == b'"').unwrap() + 1;
            let mut end = start;
            while end < b.len()
                && !(b[end] == b'"'
                    && b[end + 1..].len() >= hashes
                    && b[end + 1..end + 1 + hashes].iter().all(|&c| c == b'#'))
            {
                end += 1;
            }
            out.extend_from_slice(b"\"\"");
            i = end + 1 + hashes;
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            out.extend_from_slice(b"\"\"");
            i += 1;
        } else if let Some(len) = char_literal(rest) {
            out.extend_from_slice(b"' '");
            i += len;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// With `text` at `r"`, `r#"`, `br"`...: the number of hashes.
fn raw_string(text: &[u8]) -> Option<usize> {
    let text = text.strip_prefix(b"b").unwrap_or(text);
    let text = text.strip_prefix(b"r")?;
    let hashes = text.iter().take_while(|&&c| c == b'#').count();
    (text.get(hashes) == Some(&b'"')).then_some(hashes)
}

/// With `text` at a char literal (`'x'`, `'\n'`, `'\u{1b}'`, not a lifetime): its length.
fn char_literal(text: &[u8]) -> Option<usize> {
    if text.first() != Some(&b'\'') {
        return None;
    }
    if text.get(1) == Some(&b'\\') {
        let close = text[2..].iter().position(|&c| c == b'\'')?;
        return Some(close + 3);
    }
    let c = std::str::from_utf8(&text[1..text.len().min(6)])
        .or_else(|e| std::str::from_utf8(&text[1..1 + e.valid_up_to()]))
        .ok()?
        .chars()
        .next()?;
    let len = c.len_utf8();
    (text.get(1 + len) == Some(&b'\'')).then_some(len + 2)
}

/// The child modules a file declares (`mod x;`).
fn children(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let line = match line.strip_prefix("pub") {
                Some(rest) if rest.starts_with('(') => rest[rest.find(')')? + 1..].trim_start(),
                Some(rest) => rest.trim_start(),
                None => line,
            };
            let name = line.strip_prefix("mod ")?.trim().strip_suffix(';')?;
            Some(name.trim().to_string())
        })
        .collect()
}

/// The byte ranges of inline modules (`mod tests { ... }`), where `super` is the file itself.
fn inline_modules(text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find("mod ") {
        let at = from + at;
        from = at + 4;
        if at > 0 && is_ident(b[at - 1]) {
            continue;
        }
        let name_end = from + text[from..].bytes().take_while(|&c| is_ident(c)).count();
        let after = text[name_end..].trim_start();
        if name_end == from || !after.starts_with('{') {
            continue;
        }
        let open = text.len() - after.len() + 1;
        let mut depth = 1;
        let mut end = open;
        while end < b.len() && depth > 0 {
            match b[end] {
                b'{' => depth += 1,
                b'}' => depth -= 1,
                _ => {}
            }
            end += 1;
        }
        out.push((open, end));
    }
    out
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Calls `found` with every path of two or more segments (`a::b`, each of `a::{b, c::d}`) and
/// where it starts.
fn paths_in(text: &str, found: &mut dyn FnMut(&[String], usize)) {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let starts = (is_ident(b[i]) || b[i] == b'$')
            && (i == 0 || !(is_ident(b[i - 1]) || b[i - 1] == b':' || b[i - 1] == b'$'))
            && !b[i].is_ascii_digit();
        if !starts {
            i += 1;
            continue;
        }
        let at = i;
        let (path, end) = segments(b, i);
        i = end;
        if b[i..].starts_with(b"::{") {
            i = tree(b, i + 3, &path, &mut |p| found(p, at));
        } else if path.len() > 1 {
            found(&path, at);
        }
    }
}

/// The `a::b::c` at `i` (a trailing `::` left), and where it ends.
fn segments(b: &[u8], mut i: usize) -> (Vec<String>, usize) {
    let mut path = Vec::new();
    loop {
        let start = i;
        if b.get(i) == Some(&b'$') {
            i += 1;
        }
        while i < b.len() && is_ident(b[i]) {
            i += 1;
        }
        path.push(String::from_utf8_lossy(&b[start..i]).into_owned());
        if b[i..].starts_with(b"::") && b.get(i + 2).is_some_and(|&c| is_ident(c)) {
            i += 2;
        } else {
            return (path, i);
        }
    }
}

/// The items of a `{...}` use tree from `i` (after the brace) under `prefix`; where it ends.
fn tree(b: &[u8], mut i: usize, prefix: &[String], found: &mut dyn FnMut(&[String])) -> usize {
    while i < b.len() {
        match b[i] {
            b'}' => return i + 1,
            c if is_ident(c) => {
                let (path, end) = segments(b, i);
                let mut full = prefix.to_vec();
                full.extend(path.into_iter().filter(|p| p != "self"));
                i = end;
                if b[i..].starts_with(b"::{") {
                    i = tree(b, i + 3, &full, found);
                } else {
                    found(&full);
                    // `as name`: skip the alias.
                    let rest = std::str::from_utf8(&b[i..]).unwrap_or("");
                    if let Some(alias) = rest.trim_start().strip_prefix("as ") {
                        let alias = alias.trim_start();
                        let len = alias.bytes().take_while(|&c| is_ident(c)).count();
                        i = b.len() - alias.len() + len;
                    }
                }
            }
            _ => i += 1,
        }
    }
    i
}

/// The strongly connected groups of more than one module, each sorted, by name.
fn cycles(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    let reach = |from: &Module| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(m) = todo.pop() {
            for next in graph.get(&m).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&Module, BTreeSet<Module>> =
        graph.keys().map(|m| (m, reach(m))).collect();
    let mut groups: Vec<Vec<Module>> = Vec::new();
    for m in graph.keys() {
        if !reaches[m].contains(m) || groups.iter().any(|g| g.contains(m)) {
            continue;
        }
        let group: Vec<Module> = graph
            .keys()
            .filter(|n| reaches[m].contains(*n) && reaches[*n].contains(m))
            .cloned()
            .collect();
        groups.push(group);
    }
    groups.sort_by_key(|g| name(&g[0]));
    groups
}

crate::tests! {
    no_source_file_uses_one_that_uses_it_back,
    the_check_sees_paths_in_every_form,
}
