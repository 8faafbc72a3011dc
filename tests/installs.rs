//! The extension build installed in PostgreSQL 15's directories, swapped by the tests that need
//! another one there: an earlier release (the upgrade test) or the Debian package. The builds'
//! file trees come from scripts/test (`INTEG_CURRENT_BUILD`, `INTEG_PREV_BUILD`, `INTEG_DEB`).

use std::path::{Path, PathBuf};
use std::process::Command;

pub const PKGLIBDIR: &str = "/usr/lib/postgresql/15/lib";
pub const EXTENSION_DIR: &str = "/usr/share/postgresql/15/extension";

/// A path scripts/test hands over in `var`.
pub fn build_path(var: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(p) if Path::new(&p).exists() => PathBuf::from(p),
        _ => panic!("{var} must name a build made by scripts/package or scripts/build-release: run scripts/test"),
    }
}

/// Runs a command as root (directly, or through sudo); panics with its output if it fails.
pub fn privileged(program: &str, args: &[&str]) -> String {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let mut c = if root {
        Command::new(program)
    } else {
        let mut c = Command::new("sudo");
        c.arg(program);
        c
    };
    let out = c.args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes every file of the extension from PostgreSQL's directories.
pub fn remove_installed() {
    let mut files = vec![format!("{PKGLIBDIR}/integration.so")];
    if let Ok(dir) = std::fs::read_dir(EXTENSION_DIR) {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "integration.control" || (name.starts_with("integration--") && name.ends_with(".sql")) {
                files.push(e.path().display().to_string());
            }
        }
    }
    let mut args = vec!["-f"];
    args.extend(files.iter().map(String::as_str));
    privileged("rm", &args);
}

/// Installs a build's file tree (`usr/...`, as `cargo pgrx package` lays it out). `install`
/// writes each file anew rather than over the old one, so a server still running with the
/// old library mapped is not disturbed.
pub fn install_tree(root: &Path) {
    let mut stack = vec![root.to_path_buf()];
    let mut n = 0;
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read build tree").flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let dest = Path::new("/").join(path.strip_prefix(root).expect("inside the tree"));
            privileged(
                "install",
                &[
                    "-D",
                    "-m",
                    "0644",
                    &path.display().to_string(),
                    &dest.display().to_string(),
                ],
            );
            n += 1;
        }
    }
    assert!(n >= 3, "{} holds no build", root.display());
}

/// While alive, another build may be installed; when dropped (also when a test fails), this
/// tree's build is installed again, alone, for the tests after it.
pub struct RestoreCurrentBuild {
    current: PathBuf,
}

impl RestoreCurrentBuild {
    pub fn new() -> Self {
        RestoreCurrentBuild {
            current: build_path("INTEG_CURRENT_BUILD"),
        }
    }
}

impl Default for RestoreCurrentBuild {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for RestoreCurrentBuild {
    fn drop(&mut self) {
        let package_installed = Command::new("dpkg")
            .args(["-s", "postgresql-15-integration"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if package_installed {
            privileged("dpkg", &["-r", "postgresql-15-integration"]);
        }
        remove_installed();
        install_tree(&self.current);
    }
}
