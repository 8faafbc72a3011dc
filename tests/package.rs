//! The Debian package (scripts/package): installed with dpkg in place of the development
//! install, it carries everything a server needs, the quick start works from it alone, and
//! removing it removes every file it put there.

use e2e::installs::{build_path, privileged, remove_installed, RestoreCurrentBuild, EXTENSION_DIR, PKGLIBDIR};
use e2e::*;
use std::path::Path;

const PACKAGE: &str = "postgresql-15-integration";

#[test]
fn the_debian_package_installs_runs_and_removes_cleanly() {
    let _restore = RestoreCurrentBuild::new();
    let deb = build_path("INTEG_DEB");
    let deb = deb.display().to_string();
    let field = |name: &str| privileged("dpkg-deb", &["-f", &deb, name]).trim().to_string();
    assert_eq!(field("Package"), PACKAGE);
    let version = field("Version");
    let depends = field("Depends");
    assert!(
        depends.contains("postgresql-15") && depends.contains("postgresql-contrib"),
        "Depends: {depends}"
    );
    let size = std::fs::metadata(&deb).map(|m| m.len()).unwrap_or(0);
    println!("PACKAGE {deb}: {version}, {:.1} MB", size as f64 / 1e6);

    remove_installed();
    assert!(!Path::new(PKGLIBDIR).join("integration.so").exists());
    privileged("dpkg", &["-i", &deb]);
    let files = privileged("dpkg", &["-L", PACKAGE]);
    for f in [
        format!("{PKGLIBDIR}/integration.so"),
        format!("{EXTENSION_DIR}/integration.control"),
        format!("{EXTENSION_DIR}/integration--{version}.sql"),
        format!("{EXTENSION_DIR}/integration--0.1.0--{version}.sql"),
    ] {
        assert!(files.lines().any(|l| l == f), "the package lacks {f}:\n{files}");
        assert!(Path::new(&f).exists(), "{f} not installed");
    }

    // the quick start of "Installing in a server", with nothing but the package installed:
    // preload, key file, CREATE EXTENSION, connect, track, map, and a change syncs
    {
        let env = Env::new("package");
        assert_eq!(
            env.scalar_text("SELECT extversion FROM pg_extension WHERE extname = 'integration'"),
            version
        );
        let ls = env.listings(2);
        env.set_stock(&ls[0].0, 9);
        env.set_stock(&ls[1].0, 4);
        env.wait_for(15, "the packaged build to sync", || {
            env.sim.item_quantity(&ls[0].1) == Some(9) && env.sim.item_quantity(&ls[1].1) == Some(4)
        });
    }

    privileged("dpkg", &["-r", PACKAGE]);
    for f in ["integration.so", "integration.control"] {
        let dir = if f.ends_with(".so") { PKGLIBDIR } else { EXTENSION_DIR };
        assert!(!Path::new(dir).join(f).exists(), "{f} left behind by dpkg -r");
    }
}
