//! GUARD: no file in `src/` is over 800 lines, and no function in `src/` is longer than 80 lines (signature and body)
//! unless its comment says why, in the words `Longer than 80 lines for a
//! reason:` followed by the reason. A reason is for code that reads worse split,
//! such as one flat table of match arms; anything else is split into named steps.
//! A reason on a function that is no longer long fails too, so reasons stay true.
//!
//! Unit tests are exempt: `tests.rs` files, `tests/` folders and the item after a
//! `#[cfg(test)]`. The code is rustfmt-formatted, so a line-based scan is exact
//! enough: a function starts at a line that begins with `fn` (after its
//! visibility and qualifiers) and ends at the first later line that is `}` at the
//! same indentation.

use super::layering::rust_files;
use std::path::Path;

/// The longest a function may be without a written reason.
const MAX_LINES: usize = 80;

/// The longest a source file may be (unit tests live in a `tests.rs` beside it).
const MAX_FILE_LINES: usize = 800;

/// The words that start a reason, in the comment above the function.
const REASON: &str = "Longer than 80 lines for a reason:";

/// One function the scan found.
#[derive(Debug, PartialEq)]
struct Function {
    /// 1-based line of the `fn` line.
    line: usize,
    name: String,
    /// Lines from the `fn` line to its closing `}`, both included.
    len: usize,
    /// Whether the comment above it gives a reason (`REASON` and some words after it).
    reasoned: bool,
}

fn indent(line: &str) -> &str {
    &line[..line.len() - line.trim_start().len()]
}

/// The function's name when `line` starts one (`pub(crate) async fn name<…>(`).
fn fn_name(line: &str) -> Option<&str> {
    let mut rest = line.trim_start();
    if let Some(r) = rest.strip_prefix("pub") {
        rest = match r.strip_prefix('(') {
            Some(r) => r.split_once(')')?.1,
            None => r,
        }
        .trim_start();
    }
    for qualifier in ["const ", "async ", "unsafe ", "extern \"C\" "] {
        if let Some(r) = rest.strip_prefix(qualifier) {
            rest = r.trim_start();
        }
    }
    let rest = rest.strip_prefix("fn ")?;
    let name = &rest[..rest.find(['<', '('])?];
    Some(name.trim())
}

/// The index of the line closing the item that starts at `start` and opens a
/// block, or `None` when the item has no block (`mod tests;`, a trait method
/// without a body) or fits on one line.
fn block_end(lines: &[&str], start: usize) -> Option<usize> {
    let own = indent(lines[start]);
    let mut i = start;
    // The signature may span lines; it ends at `{` (a body) or `;` (none).
    loop {
        let code = lines.get(i)?.trim_end();
        if code.ends_with(';') || code.ends_with('}') && i == start {
            return None;
        }
        if code.ends_with('{') {
            break;
        }
        i += 1;
    }
    let close = format!("{own}}}");
    (i + 1..lines.len()).find(|&j| lines[j].trim_end() == close)
}

/// Whether the comment block right above line `start` gives a reason.
fn reasoned(lines: &[&str], start: usize) -> bool {
    let mut comment = Vec::new();
    for line in lines[..start].iter().rev() {
        let code = line.trim();
        if let Some(text) = code.strip_prefix("//") {
            comment.push(text.trim_start_matches(['/', '!']).trim());
        } else if !code.starts_with("#[") {
            break;
        }
    }
    comment.reverse();
    let comment = comment.join(" ");
    comment
        .find(REASON)
        .is_some_and(|at| comment[at + REASON.len()..].trim().len() > 10)
}

/// Every function of a file outside its test code.
fn functions(text: &str) -> Vec<Function> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let code = lines[i].trim();
        if code.starts_with("#[cfg(test)]") {
            // Skip the item the attribute is on (after any further attributes).
            let mut item = i + 1;
            while lines.get(item).is_some_and(|l| l.trim().starts_with("#[")) {
                item += 1;
            }
            i = match item < lines.len() {
                true => block_end(&lines, item).unwrap_or(item) + 1,
                false => item,
            };
            continue;
        }
        if let Some(name) = fn_name(lines[i]) {
            let end = block_end(&lines, i).unwrap_or(i);
            found.push(Function {
                line: i + 1,
                name: name.to_owned(),
                len: end - i + 1,
                reasoned: reasoned(&lines, i),
            });
        }
        i += 1;
    }
    found
}

#[test]
fn no_function_is_long_without_a_reason() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut long = Vec::new();
    let mut stale = Vec::new();
    let mut scanned = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let rel = file.strip_prefix(&src).unwrap().display();
        for f in functions(&text) {
            scanned += 1;
            let at = format!("src/{rel}:{}: `{}` is {} lines", f.line, f.name, f.len);
            match (f.len > MAX_LINES, f.reasoned) {
                (true, false) => long.push(at),
                (false, true) => stale.push(at),
                _ => {}
            }
        }
    }
    // The scan must have seen the crate, or it proves nothing.
    assert!(scanned > 500, "only {scanned} functions found in src/");
    assert!(
        long.is_empty(),
        "functions over {MAX_LINES} lines without `{REASON} …` in their comment \
         (split them into named steps, or say why not):\n{}",
        long.join("\n")
    );
    assert!(
        stale.is_empty(),
        "`{REASON}` on functions that are no longer long (remove it):\n{}",
        stale.join("\n")
    );
}

/// GUARD: the guard itself measures functions, sees reasons and skips test code.
/// GUARD: no file in `src/` is over 800 lines (unit tests, in `tests.rs`
/// files, excepted): a longer one holds more than one thing.
#[test]
fn no_source_file_is_over_800_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 50, "only {} files found in src/", files.len());
    let long: Vec<String> = files
        .iter()
        .filter_map(|file| {
            let lines = std::fs::read_to_string(file).unwrap().lines().count();
            (lines > MAX_FILE_LINES).then(|| {
                let rel = file.strip_prefix(&src).unwrap().display();
                format!("src/{rel}: {lines} lines")
            })
        })
        .collect();
    assert!(
        long.is_empty(),
        "over {MAX_FILE_LINES} lines (split the file, or move its unit tests to a `tests.rs` beside it):\n{}",
        long.join("\n")
    );
}

#[test]
fn the_scan_measures_functions_and_reads_reasons() {
    let body = |n: usize| "    let _ = 1;\n".repeat(n);
    let text = format!(
        "/// Plain.\npub(crate) async fn short<T>(\n    t: T,\n) -> u8 {{\n{}}}\n\n\
         /// Longer than 80 lines for a reason: one arm per kind, read as a table.\n\
         #[allow(dead_code)]\nfn table() {{\n{}}}\n\n\
         fn one_line() -> u8 {{ 1 }}\n\
         trait T {{\n    fn declared(&self);\n    fn with_body(&self) {{\n{}    }}\n}}\n\
         #[cfg(test)]\nmod tests {{\n    fn in_test() {{\n{}    }}\n}}\n",
        body(2),
        body(90),
        body(3),
        body(100),
    );
    let found = functions(&text);
    let summary: Vec<_> = found
        .iter()
        .map(|f| (f.name.as_str(), f.len, f.reasoned))
        .collect();
    assert_eq!(
        summary,
        [
            ("short", 6, false),
            ("table", 92, true),
            ("one_line", 1, false),
            ("declared", 1, false),
            ("with_body", 5, false),
        ]
    );
    assert_eq!(found[1].line, 11);
    assert!(!reasoned(
        &["// Longer than 80 lines for a reason:", "fn f() {"],
        1
    ));
}
