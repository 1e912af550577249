//! House rules checked mechanically: every source file says what it owns in a `//!` line; the
//! dependency arrows of DESIGN.md §1 hold folder by folder (`hub` and `node` share only
//! neutral helpers, the GUI reaches the hub only through `host`, the certificate checker uses
//! only pure helpers, only the CLI's entry point opens the window); and the invariants of
//! ARCHITECTURE.md that text can show (only `hub::db` writes SQL, only `node` writes the
//! node's files, the hub's `api.rs` is the router alone over its resource modules).

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// One source file: its path under the package (`src/hub/api.rs`) and its text.
struct Source {
    relative: String,
    text: String,
}

impl Source {
    /// The part of the crate the file belongs to: its folder under `src/` (`hub`), or the
    /// file's own name for a top-level file (`machine`).
    fn part(&self) -> &str {
        let inside = self.relative.strip_prefix("src/").unwrap();
        match inside.split_once('/') {
            Some((folder, _)) => folder,
            None => inside.trim_end_matches(".rs"),
        }
    }

    /// The code without comments (doc links may name anything).
    fn code(&self) -> String {
        self.text.lines().filter(|line| !line.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
    }

    /// The parts of the crate this file uses: every `crate::NAME`, also inside
    /// `use crate::{a, b::c}`.
    fn uses(&self) -> BTreeSet<String> {
        let code = self.code();
        let mut parts = BTreeSet::new();
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            // `gatehouse::crate::` can't occur; `$crate::` in macros would be external.
            if code[..at].ends_with('$') {
                continue;
            }
            if let Some(group) = rest.strip_prefix('{') {
                let group = &group[..group.find('}').unwrap_or(group.len())];
                for item in group.split(',') {
                    let name: String =
                        item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    if !name.is_empty() {
                        parts.insert(name);
                    }
                }
            } else {
                let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    parts.insert(name);
                }
            }
        }
        parts
    }
}

fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    assert!(files.len() > 5, "found too few source files: {files:?}");
    files
        .into_iter()
        .map(|path| Source {
            relative: path.strip_prefix(root).unwrap().to_string_lossy().into_owned(),
            text: std::fs::read_to_string(&path).unwrap(),
        })
        .collect()
}

#[test]
fn every_source_file_opens_with_a_module_doc() {
    for source in sources() {
        assert!(
            source.text.starts_with("//!"),
            "{} must start with a `//!` paragraph saying what it owns",
            source.relative
        );
    }
}

/// The arrows DESIGN.md §1 forbids, per part: `cli → host → {hub, node}`, `gui → host, node`,
/// `node → transfer, cert`, `hub → cert`; `hub` and `node` share only `protocol` and neutral
/// helpers (`machine`, `encoding`, `paths`, `release`, `prometheus`, `pinned_tls`); nothing but
/// the CLI's entry point opens the GUI.
/// Departures ARCHITECTURE.md names are allowed: `hub → transfer` (the spec check), `node →
/// client` (the node's own HTTP client of the hub).
const FORBIDDEN: &[(&str, &[&str])] = &[
    ("hub", &["node", "host", "gui", "cli", "client"]),
    ("node", &["hub", "host", "gui", "cli"]),
    ("transfer", &["hub", "node", "host", "gui", "cli", "client", "cert"]),
    ("host", &["gui", "cli"]),
    ("gui", &["hub", "client", "cli"]),
    ("client", &["hub", "node", "host", "gui", "cli", "transfer"]),
    ("protocol", &["hub", "node", "host", "gui", "cli", "client", "transfer"]),
    ("machine", &["hub", "node", "host", "gui", "cli", "client", "transfer", "cert", "protocol"]),
    ("release", &["hub", "node", "host", "gui", "cli", "client", "transfer", "cert", "protocol"]),
    ("prometheus", &["hub", "node", "host", "gui", "cli", "client", "transfer", "cert"]),
    ("pinned_tls", &["hub", "node", "host", "gui", "cli", "client", "transfer", "cert", "protocol"]),
];

/// The certificate checker is pure: it may use only these helpers.
const CERT_MAY_USE: &[&str] = &["cert", "encoding"];

#[test]
fn the_dependency_arrows_of_the_design_hold() {
    let mut wrong = Vec::new();
    for source in sources() {
        let part = source.part().to_owned();
        let uses = source.uses();
        if let Some((_, forbidden)) = FORBIDDEN.iter().find(|(p, _)| *p == part) {
            for used in uses.iter().filter(|u| forbidden.contains(&u.as_str())) {
                wrong.push(format!("{} ({part}) uses crate::{used}", source.relative));
            }
        }
        if part == "cert" {
            for used in uses.iter().filter(|u| !CERT_MAY_USE.contains(&u.as_str())) {
                wrong.push(format!(
                    "{} (cert) uses crate::{used}; the checker uses only pure helpers",
                    source.relative
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "arrows DESIGN.md §1 forbids:\n{}", wrong.join("\n"));
}

#[test]
fn only_the_gui_and_the_cli_entry_point_know_the_gui() {
    for source in sources() {
        if source.part() == "gui" {
            continue;
        }
        let code = source.code();
        if source.relative != "src/cli/mod.rs" {
            assert!(!source.uses().contains("gui"), "{} must not use crate::gui", source.relative);
        }
        assert!(
            !code.contains("eframe") && !code.contains("egui"),
            "{} must not know about the GUI's toolkit",
            source.relative
        );
    }
}

/// The hub's API is split by resource: `src/hub/api.rs` is the router alone (handlers live in
/// `src/hub/api/<resource>.rs`), and the rest of the hub reaches the API only through
/// `api::router`, so nothing the API's handlers use depends back on them (the status page is
/// one of the API's resources, not a sibling the router and the handlers both know).
#[test]
fn the_hub_api_is_a_router_over_resource_modules() {
    let sources = sources();
    let api = sources.iter().find(|s| s.relative == "src/hub/api.rs").unwrap();
    let code = api.code();
    let functions: Vec<&str> = code.lines().map(str::trim).filter(|l| l.contains("fn ")).collect();
    assert_eq!(
        functions,
        ["pub fn router(state: HubState) -> Router {"],
        "src/hub/api.rs holds only the router; put handlers in src/hub/api/<resource>.rs"
    );
    for source in &sources {
        if source.part() != "hub" || source.relative.starts_with("src/hub/api") {
            continue;
        }
        let code = source.code();
        for (at, _) in code.match_indices("api::") {
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            assert!(
                code[at..].starts_with("api::router("),
                "{} uses hub::api beyond api::router; what several parts of the hub need belongs outside the API",
                source.relative
            );
        }
    }
}

#[test]
fn only_hub_db_writes_sql() {
    for source in sources() {
        if source.relative == "src/hub/db.rs" {
            continue;
        }
        assert!(
            !source.code().contains("sqlx::"),
            "{} reaches into sqlx; SQL belongs in hub::db",
            source.relative
        );
    }
}

#[test]
fn only_the_node_writes_the_nodes_files() {
    for source in sources() {
        if source.part() == "node" {
            continue;
        }
        let code = source.code();
        for writer in [".save_settings(", ".save_secrets(", ".restore_machine_id(", ".forget_registration("] {
            assert!(
                !code.contains(writer),
                "{} calls {writer}…); changes to a node's files are node operations (src/node/ops.rs)",
                source.relative
            );
        }
    }
}

#[test]
fn no_unwrap_outside_tests_in_the_certificate_checker() {
    for source in sources() {
        if source.part() != "cert" {
            continue;
        }
        let code = source.text.split("#[cfg(test)]").next().unwrap_or_default();
        assert!(
            !code.contains(".unwrap()") && !code.contains(".expect("),
            "{} unwraps outside its tests",
            source.relative
        );
    }
}

#[test]
fn the_arrow_check_sees_grouped_and_plain_uses() {
    let source = Source {
        relative: "src/hub/x.rs".to_owned(),
        text: "//! x\n// crate::gui in a comment\nuse crate::{node::Store, protocol};\nfn f() { crate::machine::host_name(); }\n".to_owned(),
    };
    assert_eq!(source.part(), "hub");
    let uses: Vec<String> = source.uses().into_iter().collect();
    assert_eq!(uses, ["machine", "node", "protocol"]);
}
