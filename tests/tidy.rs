//! House rules checked mechanically: every source file says what it owns in a `//!` line,
//! and only the GUI and the CLI (which wires everything) may reach into `crate::gui`.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

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

fn sources() -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
    assert!(files.len() > 5, "found too few source files: {files:?}");
    files.into_iter().map(|p| (p.clone(), std::fs::read_to_string(&p).unwrap())).collect()
}

#[test]
fn every_source_file_opens_with_a_module_doc() {
    for (path, text) in sources() {
        assert!(
            text.starts_with("//!"),
            "{} must start with a `//!` paragraph saying what it owns",
            path.display()
        );
    }
}

#[test]
fn only_gui_and_cli_use_the_gui() {
    for (path, text) in sources() {
        let relative = path.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap().to_string_lossy().into_owned();
        if relative.starts_with("src/gui/") || relative.starts_with("src/cli/") {
            continue;
        }
        assert!(
            !text.contains("crate::gui") && !text.contains("eframe") && !text.contains("egui"),
            "{relative} must not know about the GUI"
        );
    }
}

#[test]
fn no_unwrap_outside_tests_in_the_certificate_checker() {
    for (path, text) in sources() {
        if !path.to_string_lossy().contains("/src/cert/") {
            continue;
        }
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        assert!(
            !code.contains(".unwrap()") && !code.contains(".expect("),
            "{} unwraps outside its tests",
            path.display()
        );
    }
}
