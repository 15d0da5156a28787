//! The example configuration shipped for systemd is a valid configuration.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

#[test]
fn systemd_example_configuration_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/signetd.toml");
    let config = signetd::config::Config::load(Some(&path))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(config.hsm.tokens.len(), 3);
    assert!(
        config
            .hsm
            .tokens
            .values()
            .all(|t| t.pin_credential.is_some())
    );
    assert!(config.database.admin_url.is_some());
}

#[test]
fn systemd_unit_passes_pins_as_credentials_only() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/signetd.service"),
    )
    .unwrap();
    assert!(unit.contains("Type=notify"));
    for token in ["ca", "audit", "signing"] {
        assert!(
            unit.contains(&format!("LoadCredentialEncrypted={token}-pin:")),
            "{token}"
        );
    }
    assert!(
        !unit.to_ascii_lowercase().contains("pin="),
        "no PIN in the unit's environment"
    );
}
