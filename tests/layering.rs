//! Dependencies point one way (docs/DESIGN.md, "The shape of the agent"):
//! a module never imports one above it. Read from the sources, so a new
//! `use crate::call` in `sip` fails here, not in a review.

mod common;
use common::repo;

/// What the pure policy modules (routing, the receptionist) must not name:
/// every module with I/O, and the config they are handed compiled.
const PURE: &[&str] = &[
    "call",
    "calls",
    "sip",
    "media",
    "transcribe",
    "recording",
    "store",
    "config",
    "agent",
];

/// Each module and the modules above it, which it must not name.
const RULES: &[(&str, &[&str])] = &[
    (
        "sip",
        &["call", "calls", "transcribe", "recording", "agent"],
    ),
    (
        "media",
        &["call", "calls", "transcribe", "sip", "recording", "agent"],
    ),
    ("transcribe", &["call", "calls", "sip", "agent"]),
    (
        "recording",
        &["call", "calls", "sip", "transcribe", "agent"],
    ),
    (
        "store",
        &[
            "call",
            "calls",
            "sip",
            "media",
            "transcribe",
            "recording",
            "agent",
        ],
    ),
    // Pure: the plan and time in, a decision out.
    ("routing", PURE),
    // The conversation: pure too; it asks routing, nothing else.
    ("receptionist", PURE),
    // The upstream payloads: pure, built from facts handed in.
    ("sync", PURE),
    ("call", &["calls", "agent"]),
    ("calls", &["agent"]),
];

fn sources(module: &str) -> Vec<std::path::PathBuf> {
    let src = repo().join("agent/src");
    let dir = src.join(module);
    // The module's directory, sub-modules included.
    let mut out = Vec::new();
    let mut dirs = vec![dir];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                out.push(p);
            }
        }
    }
    let file = src.join(format!("{module}.rs"));
    if file.is_file() {
        out.push(file);
    }
    out.retain(|p| p.extension().is_some_and(|e| e == "rs"));
    assert!(!out.is_empty(), "no sources for module {module}");
    out
}

/// The lines of `text` (a file of `module`) that name a module in `above`;
/// comments are not code.
fn offending(text: &str, module: &str, above: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        for up in above {
            let named = [
                format!("crate::{up}::"),
                format!("crate::{up};"),
                format!("crate::{up}}}"),
            ];
            if named.iter().any(|p| code.contains(p.as_str())) {
                out.push(format!("line {}: {module} names {up}", n + 1));
            }
        }
    }
    out
}

#[test]
fn no_module_imports_one_above_it() {
    let mut wrong = Vec::new();
    for (module, above) in RULES {
        for path in sources(module) {
            let text = std::fs::read_to_string(&path).unwrap();
            for w in offending(&text, module, above) {
                wrong.push(format!("{}: {w}", path.display()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layering:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_check_sees_the_imports_it_forbids() {
    let text = "use crate::store::Store;\nuse crate::call::machine::Call;\n// crate::calls::Calls in a comment\nlet c = crate::calls::Calls::new();\n";
    assert_eq!(
        offending(text, "sip", &["call", "calls"]),
        vec!["line 2: sip names call", "line 4: sip names calls"]
    );
}
