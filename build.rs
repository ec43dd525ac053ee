//! Stamps what `kiln --version` prints besides the version: the git commit and the target.
//!
//! The commit comes from `KILN_GIT_COMMIT` (a container build has no .git), else from git, else
//! from the `.cargo_vcs_info.json` that `cargo package` writes (an install of the published crate), else
//! `unknown`. Nothing here changes what kiln does; it only names the build.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=KILN_GIT_COMMIT");
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=KILN_TARGET={target}");
    let commit = std::env::var("KILN_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty() && c != "unknown")
        .or_else(commit_from_git)
        .or_else(commit_from_vcs_info)
        .unwrap_or_else(|| "unknown".into());
    let short: String = commit.trim().chars().take(12).collect();
    println!("cargo:rustc-env=KILN_GIT_COMMIT={short}");
}

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    Some(String::from_utf8(output.stdout).ok()?.trim().to_owned())
}

fn commit_from_git() -> Option<String> {
    let commit = git(&["rev-parse", "HEAD"])?;
    // Build again when HEAD moves: HEAD itself, the branch it points at, and packed refs.
    for path in ["HEAD", "packed-refs"] {
        if let Some(file) = git(&["rev-parse", "--git-path", path]) {
            if Path::new(&file).exists() {
                println!("cargo:rerun-if-changed={file}");
            }
        }
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(file) = git(&["rev-parse", "--git-path", &branch]) {
            if Path::new(&file).exists() {
                println!("cargo:rerun-if-changed={file}");
            }
        }
    }
    Some(commit)
}

fn commit_from_vcs_info() -> Option<String> {
    let text = std::fs::read_to_string(".cargo_vcs_info.json").ok()?;
    let at = text.find("\"sha1\"")?;
    let rest = &text[at + "\"sha1\"".len()..];
    let start = rest.find('"')? + 1;
    let end = start + rest[start..].find('"')?;
    Some(rest[start..end].to_owned())
}
