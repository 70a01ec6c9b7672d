//! Puts the git commit and the enabled cargo features into `musicfs
//! --version` (as `MUSICFS_VERSION`).
//!
//! Never fails the build: from a tarball, a Nix store path or a machine
//! without git, the commit is "unknown". `MUSICFS_GIT_COMMIT` in the
//! environment overrides it (a packager who knows the commit).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The crate's optional features, as `cargo build --features` names them.
const FEATURES: &[&str] = &["failpoints"];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=MUSICFS_GIT_COMMIT");
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let commit = match std::env::var("MUSICFS_GIT_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_owned(),
        _ => git_commit(&manifest_dir).unwrap_or_else(|| "unknown".to_owned()),
    };
    let enabled: Vec<&str> = FEATURES
        .iter()
        .copied()
        .filter(|f| {
            let var = format!("CARGO_FEATURE_{}", f.to_ascii_uppercase().replace('-', "_"));
            std::env::var_os(var).is_some()
        })
        .collect();
    let features = if enabled.is_empty() {
        "none".to_owned()
    } else {
        enabled.join(", ")
    };
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    println!("cargo:rustc-env=MUSICFS_VERSION={version} (commit {commit}; features: {features})");
}

/// `git rev-parse --short HEAD` of the repository this crate is in, and
/// asks cargo to run this again when HEAD moves. None when there is no git,
/// no repository, or the repository found is not this source tree's (a
/// tarball unpacked inside some other checkout).
fn git_commit(manifest_dir: &Path) -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(manifest_dir)
            .args(args)
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8(out.stdout).ok()?;
        let text = text.trim();
        (!text.is_empty()).then(|| text.to_owned())
    };
    let top = PathBuf::from(git(&["rev-parse", "--show-toplevel"])?);
    let workspace = manifest_dir.parent()?;
    if top.canonicalize().ok()? != workspace.canonicalize().ok()? {
        return None;
    }
    let commit = git(&["rev-parse", "--short", "HEAD"])?;
    // Run again when HEAD moves: a checkout changes HEAD, a commit changes
    // the branch's ref (loose, or in packed-refs). Only files that exist:
    // cargo reruns every time for a missing one.
    let resolve = |p: String| {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            manifest_dir.join(p)
        }
    };
    let git_dir = git(&["rev-parse", "--git-dir"]).map(resolve);
    let common_dir = git(&["rev-parse", "--git-common-dir"]).map(resolve);
    let branch = git(&["symbolic-ref", "-q", "HEAD"]);
    let mut watch = Vec::new();
    if let Some(dir) = &git_dir {
        watch.push(dir.join("HEAD"));
    }
    if let Some(dir) = &common_dir {
        watch.push(dir.join("packed-refs"));
        if let Some(branch) = &branch {
            watch.push(dir.join(branch));
        }
    }
    for path in watch.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    Some(commit)
}
