//! Test support for RPM tests: packages built by `rpmbuild`, and `rpmkeys` on a private
//! database as the independent verifier.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use super::s;

/// The summary of every test package (tests change a byte of it inside the main header).
pub const SUMMARY: &str = "Signet demo package for signature tests";

/// Builds a noarch package with `rpmbuild` in `dir`; `blob` (if any) is installed as a file.
pub fn rpmbuild(dir: &Path, name: &str, blob: Option<&Path>) -> PathBuf {
    let top = dir.join(format!("top-{name}"));
    std::fs::create_dir_all(top.join("tmp")).unwrap();
    let spec = top.join(format!("{name}.spec"));
    let blob_line = if blob.is_some() {
        "cp %{signet_blob} %{buildroot}/usr/share/%{name}/blob.bin\n"
    } else {
        ""
    };
    std::fs::write(
        &spec,
        format!(
            "Name: {name}\nVersion: 1.0\nRelease: 1\nSummary: {SUMMARY}\nLicense: Apache-2.0\n\
             BuildArch: noarch\n\n%description\nA package built by the signetd tests.\n\n\
             %install\nmkdir -p %{{buildroot}}/usr/share/%{{name}}\n\
             echo hello > %{{buildroot}}/usr/share/%{{name}}/hello.txt\n\
             printf 'second file\\n' > %{{buildroot}}/usr/share/%{{name}}/second.txt\n\
             {blob_line}\n%files\n/usr/share/%{{name}}\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new("rpmbuild");
    cmd.args(["-bb", "--quiet"])
        .arg("--define")
        .arg(format!("_topdir {}", top.display()))
        .arg("--define")
        .arg(format!("_tmppath {}", top.join("tmp").display()))
        .arg("--define")
        .arg(format!("_dbpath {}", top.join("db").display()))
        // Fast: no post-install scripts, gzip -1 (the blob does not compress anyway).
        .args(["--define", "__os_install_post %{nil}"])
        .args(["--define", "_binary_payload w1.gzdio"]);
    if let Some(blob) = blob {
        cmd.arg("--define")
            .arg(format!("signet_blob {}", blob.display()));
    }
    let out = cmd.arg(&spec).output().expect("run rpmbuild");
    assert!(
        out.status.success(),
        "rpmbuild failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rpm = top.join(format!("RPMS/noarch/{name}-1.0-1.noarch.rpm"));
    assert!(rpm.is_file(), "no {}", rpm.display());
    rpm
}

/// `rpmkeys` on a private database; returns success and stdout + stderr.
pub fn rpmkeys(db: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("rpmkeys")
        .arg("--dbpath")
        .arg(db)
        .args(args)
        .output()
        .expect("run rpmkeys");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `rpmkeys --checksig -v`: success, the header signature lines, the whole output.
pub fn checksig(db: &Path, pkg: &Path) -> (bool, Vec<String>, String) {
    let (ok, out) = rpmkeys(db, &["--checksig", "-v", s(pkg)]);
    let lines = out
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("Header V4 ") || l.starts_with("Header V3 "))
        .map(str::to_owned)
        .collect();
    (ok, lines, out)
}
