//! GUARD: data flows one way. Each module of `src/` has a floor; code may use
//! modules on lower floors only (or its own). A new module must be given a floor
//! here, and an import that goes up fails this test with the file and the line.
//!
//! Test code (after a file's first `#[cfg(test)]`, and `tests.rs` / `tests/`
//! files) may build its inputs with any module, and comments are ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The floors, lowest first (docs/ARCHITECTURE.md shows the same picture).
/// A module may use modules on lower floors only, never one on its own floor.
const FLOORS: &[&[&str]] = &[
    // Leaves: plain data and process plumbing, no knowledge of ModelArts or storage.
    &[
        "model",
        "filelock",
        "telemetry",
        "schedule",
        "http",
        "shutdown",
        "systemd",
        "manpages",
    ],
    // Decisions every layer shares.
    &["backoff", "seal"],
    // The bottom layers both sides use; they know nothing of each other.
    &["source", "storage", "index", "progress"],
    // Settings: parses the file into each layer's validated settings. The
    // simulator stands beside it: it only borrows the source's signing.
    &["config", "sim"],
    // The write side (what to fetch, fetching it, a whole pass) and beside it
    // the read side (one selection → rows, grep, export).
    &["plan", "read"],
    &["fetch"],
    &["run"],
    // Rendering and reports.
    &["output"],
    &["status"],
    // The web page: it renders the read side; the daemon serves it.
    &["web"],
    // Top: the service and the commands.
    &["daemon", "demo", "doctor"],
    &["cli"],
];

fn floor_of(module: &str) -> Option<usize> {
    FLOORS.iter().position(|f| f.contains(&module))
}

/// `src/foo.rs` and `src/foo/**` belong to module `foo`.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    Some(first.trim_end_matches(".rs").to_owned())
}

/// The `.rs` files under `dir` but unit tests (`tests.rs` files, `tests/`
/// folders). Also used by `long_functions.rs`.
pub(super) fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "tests") {
                continue;
            }
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(path);
        }
    }
}

/// The top-level modules a line names through `crate::…`, including
/// `use crate::{a::X, b};` groups. Items of the crate root (`crate::VERSION`)
/// are not modules and are left out.
fn crate_paths(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut item_start = true;
            let mut ident = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => item_start = true,
                    c if item_start && (c.is_alphanumeric() || c == '_') => ident.push(c),
                    _ if item_start && !ident.is_empty() => {
                        found.push(std::mem::take(&mut ident));
                        item_start = false;
                    }
                    _ => {}
                }
            }
            if !ident.is_empty() {
                found.push(ident);
            }
        } else {
            let ident: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !ident.is_empty() {
                found.push(ident);
            }
        }
    }
    found.retain(|m| m.starts_with(|c: char| c.is_ascii_lowercase()));
    found
}

#[test]
fn lower_modules_never_import_higher_ones() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut unknown = BTreeMap::new();
    let mut upward = Vec::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(floor) = floor_of(&module) else {
            unknown.insert(module, file.clone());
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("#[cfg(test)]") {
                break;
            }
            if code.starts_with("//") {
                continue;
            }
            for used in crate_paths(code) {
                if used == module {
                    continue;
                }
                match floor_of(&used) {
                    Some(f) if f < floor => {}
                    _ => upward.push(format!(
                        "{}:{}: module `{module}` uses `crate::{used}`",
                        file.strip_prefix(&src).unwrap().display(),
                        n + 1
                    )),
                }
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "modules without a floor in tests/it/layering.rs: {unknown:?}"
    );
    assert!(
        upward.is_empty(),
        "imports that go up or sideways (see docs/ARCHITECTURE.md):\n{}",
        upward.join("\n")
    );
}

/// GUARD: the guard itself sees every form of import.
#[test]
fn crate_paths_reads_every_import_form() {
    assert_eq!(crate_paths("use crate::index::Index;"), ["index"]);
    assert_eq!(
        crate_paths("use crate::{config::Config, model::{JobId, TaskId}, run};"),
        ["config", "model", "run"]
    );
    assert_eq!(
        crate_paths("let x = crate::source::f(crate::storage::g());"),
        ["source", "storage"]
    );
}
