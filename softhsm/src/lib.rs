//! Owns throwaway SoftHSM2 token directories (configuration, tokens, key pairs) for tests and `signetd dev`.
//!
//! Everything goes through child processes (`softhsm2-util` from the Debian
//! package `softhsm2`, `pkcs11-tool` from `opensc`) rather than through a
//! PKCS#11 binding. SoftHSM2 reads `SOFTHSM2_CONF` once, at `C_Initialize`,
//! so a process that loaded the module can only ever see one token
//! directory; a child process per operation lets one test process prepare
//! any number of directories. For the same reason this crate never touches
//! its own process environment: `SOFTHSM2_CONF` is set on children only
//! (see [`SoftHsm::command`]).
//!
//! Keys are generated on the token as sensitive and not extractable, and
//! [`SoftHsm::list_private_keys`] reads back what the token says about them,
//! which makes it an independent check of invariant 1 ("keys stay in the
//! token") for the daemon's tests.

mod error;
mod key;

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub use error::Error;
pub use key::{KeyKind, ParseKeyKindError, PrivateKeyInfo};

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The environment variable SoftHSM2 reads its configuration path from.
pub const CONF_ENV: &str = "SOFTHSM2_CONF";

/// The environment variable that overrides where [`find_module`] looks.
pub const MODULE_ENV: &str = "SIGNETD_SOFTHSM_MODULE";

/// The configuration template; `@TOKENDIR@` is replaced by the absolute
/// token directory.
const CONF_TEMPLATE: &str = include_str!("../softhsm2.conf.in");

/// Where distributions install the module, most common first.
const MODULE_CANDIDATES: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
];

/// The longest token label PKCS#11 can hold (`CK_TOKEN_INFO.label`).
const MAX_TOKEN_LABEL: usize = 32;

/// A command-line tool and the Debian package that ships it.
#[derive(Debug)]
struct Tool {
    name: &'static str,
    package: &'static str,
}

const SOFTHSM2_UTIL: Tool = Tool {
    name: "softhsm2-util",
    package: "softhsm2",
};

const PKCS11_TOOL: Tool = Tool {
    name: "pkcs11-tool",
    package: "opensc",
};

/// Finds the SoftHSM2 PKCS#11 module (`libsofthsm2.so`).
///
/// `SIGNETD_SOFTHSM_MODULE`, when set, is the only place looked at (a wrong
/// override is an error, not a silent fallback); otherwise the usual
/// distribution paths are tried in order.
pub fn find_module() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(MODULE_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::ModuleNotFound {
                searched: format!("{MODULE_ENV}={}", path.display()),
            })
        };
    }
    MODULE_CANDIDATES
        .iter()
        .map(Path::new)
        .find(|path| path.is_file())
        .map(Path::to_path_buf)
        .ok_or_else(|| Error::ModuleNotFound {
            searched: MODULE_CANDIDATES.join(", "),
        })
}

/// A SoftHSM2 token directory with its own configuration file.
///
/// Layout: `DIR/softhsm2.conf` and `DIR/tokens/`. Nothing is kept open; all
/// state is on disk, so a `SoftHsm` can be re-created over the same
/// directory at any time.
#[derive(Debug, Clone)]
pub struct SoftHsm {
    dir: PathBuf,
    token_dir: PathBuf,
    conf_path: PathBuf,
    module_path: PathBuf,
}

impl SoftHsm {
    /// Creates `dir/tokens` and `dir/softhsm2.conf`, or reuses them.
    ///
    /// Idempotent: existing tokens are kept. The configuration file is
    /// rewritten only when it differs from what this directory needs (for
    /// example after the directory was moved).
    pub fn create(dir: &Path) -> Result<Self> {
        let module_path = find_module()?;
        let token_dir = dir.join("tokens");
        fs::create_dir_all(&token_dir)
            .map_err(|e| Error::io(format!("creating {}", token_dir.display()), e))?;
        // The configuration must hold an absolute path: the children that
        // read it may run in another working directory.
        let dir = fs::canonicalize(dir)
            .map_err(|e| Error::io(format!("resolving {}", dir.display()), e))?;
        let token_dir = dir.join("tokens");
        let conf_path = dir.join("softhsm2.conf");
        write_if_changed(&conf_path, &render_conf(&token_dir)?)?;
        Ok(SoftHsm {
            dir,
            token_dir,
            conf_path,
            module_path,
        })
    }

    /// The directory given to [`SoftHsm::create`], made absolute.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration file; point `SOFTHSM2_CONF` at it.
    pub fn conf_path(&self) -> &Path {
        &self.conf_path
    }

    /// The PKCS#11 module to load.
    pub fn module_path(&self) -> &Path {
        &self.module_path
    }

    /// Where SoftHSM2 keeps this directory's tokens.
    pub fn token_dir(&self) -> &Path {
        &self.token_dir
    }

    /// A command for `program` with `SOFTHSM2_CONF` pointing at this
    /// directory, for example to start the daemon against these tokens.
    /// This process's own environment is left alone.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new(program);
        command.env(CONF_ENV, &self.conf_path);
        command
    }

    /// Initialises a new token on the first free slot.
    ///
    /// The PINs are passed to `softhsm2-util` on its command line, where
    /// other local users can read them (`/proc/PID/cmdline`). That is
    /// acceptable only because these are throwaway development and test
    /// tokens; never use this for a token that guards anything real.
    ///
    /// Fails with [`Error::TokenExists`] if a token with this label exists:
    /// tokens are found by label.
    pub fn init_token(&self, label: &str, so_pin: &str, user_pin: &str) -> Result<()> {
        check_token_label(label)?;
        check_pin("SO PIN", so_pin)?;
        check_pin("user PIN", user_pin)?;
        if self.has_token(label)? {
            return Err(Error::TokenExists {
                label: label.to_owned(),
                dir: self.token_dir.clone(),
            });
        }
        let mut command = self.command(SOFTHSM2_UTIL.name);
        command.args([
            "--init-token",
            "--free",
            "--label",
            label,
            "--so-pin",
            so_pin,
            "--pin",
            user_pin,
        ]);
        run(
            command,
            &SOFTHSM2_UTIL,
            format!("initialise token {label:?}"),
            &[so_pin, user_pin],
        )?;
        Ok(())
    }

    /// Whether an initialised token with this label exists.
    pub fn has_token(&self, label: &str) -> Result<bool> {
        check_token_label(label)?;
        Ok(self.token_labels()?.iter().any(|l| l == label))
    }

    /// The labels of the initialised tokens, from `softhsm2-util --show-slots`.
    pub fn token_labels(&self) -> Result<Vec<String>> {
        let mut command = self.command(SOFTHSM2_UTIL.name);
        command.arg("--show-slots");
        let output = run(command, &SOFTHSM2_UTIL, "list slots".to_owned(), &[])?;
        Ok(output
            .lines()
            .filter_map(|line| line.trim_start().strip_prefix("Label:"))
            .map(str::trim)
            // The free slot has an empty label.
            .filter(|label| !label.is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// Generates a key pair on the token, the private half sensitive,
    /// never extractable and usable for signing.
    ///
    /// The user PIN goes on `pkcs11-tool`'s command line; see
    /// [`SoftHsm::init_token`] for why that is tolerable here only.
    ///
    /// Fails with [`Error::KeyExists`] if the token already holds a private
    /// key with this label: keys are found by label.
    pub fn generate_key(
        &self,
        token_label: &str,
        user_pin: &str,
        key_label: &str,
        key_id: &[u8],
        kind: KeyKind,
    ) -> Result<()> {
        check_token_label(token_label)?;
        check_pin("user PIN", user_pin)?;
        check_key_label(key_label)?;
        if key_id.is_empty() || key_id.len() > 255 {
            return Err(Error::InvalidArgument {
                what: "key id",
                reason: "must be 1 to 255 bytes long".to_owned(),
            });
        }
        if self
            .list_private_keys(token_label, user_pin)?
            .iter()
            .any(|key| key.label == key_label)
        {
            return Err(Error::KeyExists {
                token: token_label.to_owned(),
                label: key_label.to_owned(),
            });
        }
        let mut command = self.pkcs11_tool(token_label, user_pin);
        command.args([
            "--keypairgen",
            "--key-type",
            kind.pkcs11_tool_key_type(),
            "--label",
            key_label,
            "--id",
            &to_hex(key_id),
            "--sensitive",
            "--usage-sign",
        ]);
        run(
            command,
            &PKCS11_TOOL,
            format!("generate {kind} key {key_label:?} on token {token_label:?}"),
            &[user_pin],
        )?;
        Ok(())
    }

    /// Lists the private keys on a token, with the access flags the token
    /// reports for each: the independent check that keys are sensitive and
    /// never extractable (see [`PrivateKeyInfo::is_locked_in_token`]).
    pub fn list_private_keys(
        &self,
        token_label: &str,
        user_pin: &str,
    ) -> Result<Vec<PrivateKeyInfo>> {
        check_token_label(token_label)?;
        check_pin("user PIN", user_pin)?;
        let mut command = self.pkcs11_tool(token_label, user_pin);
        command.args(["--list-objects", "--type", "privkey"]);
        let output = run(
            command,
            &PKCS11_TOOL,
            format!("list private keys on token {token_label:?}"),
            &[user_pin],
        )?;
        Ok(key::parse_private_keys(&output))
    }

    /// `pkcs11-tool` logged in to one token of this directory.
    fn pkcs11_tool(&self, token_label: &str, user_pin: &str) -> Command {
        let mut command = self.command(PKCS11_TOOL.name);
        command.arg("--module").arg(&self.module_path).args([
            "--token-label",
            token_label,
            "--login",
            "--pin",
            user_pin,
        ]);
        command
    }
}

/// Runs a tool to completion and returns its stdout.
///
/// Failures carry the tool's own diagnostics with every secret replaced,
/// and never the command line.
fn run(mut command: Command, tool: &Tool, action: String, secrets: &[&str]) -> Result<String> {
    // No tool may sit waiting for a PIN on a terminal.
    command.stdin(Stdio::null());
    let output = command.output().map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            Error::ToolMissing {
                tool: tool.name,
                package: tool.package,
            }
        } else {
            Error::io(format!("running `{}` to {action}", tool.name), e)
        }
    })?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let detail = [stderr.trim(), stdout.trim()]
        .into_iter()
        .find(|text| !text.is_empty())
        .unwrap_or("no output");
    Err(Error::ToolFailed {
        tool: tool.name,
        action,
        status: output.status,
        detail: scrub(detail, secrets),
    })
}

/// Replaces every occurrence of every secret in `text`.
fn scrub(text: &str, secrets: &[&str]) -> String {
    secrets
        .iter()
        .filter(|secret| !secret.is_empty())
        .fold(text.to_owned(), |text, secret| {
            text.replace(secret, "<redacted>")
        })
}

fn render_conf(token_dir: &Path) -> Result<String> {
    let invalid = |reason| Error::InvalidPath {
        path: token_dir.to_path_buf(),
        reason,
    };
    let text = token_dir
        .to_str()
        .ok_or_else(|| invalid("the path is not valid UTF-8"))?;
    if text.chars().any(char::is_control) {
        return Err(invalid("the path contains control characters"));
    }
    if text.contains('#') {
        // SoftHSM2's configuration parser ends the value at a '#'.
        return Err(invalid(
            "the path contains '#', which SoftHSM2 reads as a comment",
        ));
    }
    if text.trim() != text {
        return Err(invalid(
            "the path starts or ends with whitespace, which SoftHSM2 would trim",
        ));
    }
    Ok(CONF_TEMPLATE.replace("@TOKENDIR@", text))
}

/// Writes `contents` to `path` unless it already holds exactly that, via a
/// rename so that a concurrent reader never sees half a file.
fn write_if_changed(path: &Path, contents: &str) -> Result<()> {
    match fs::read_to_string(path) {
        Ok(existing) if existing == contents => return Ok(()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    }
    let tmp = path.with_extension("conf.tmp");
    fs::write(&tmp, contents).map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io(format!("renaming to {}", path.display()), e))
}

fn check_token_label(label: &str) -> Result<()> {
    let reason = if label.is_empty() {
        "must not be empty".to_owned()
    } else if label.len() > MAX_TOKEN_LABEL {
        format!("{label:?} is longer than {MAX_TOKEN_LABEL} bytes")
    } else if label.chars().any(char::is_control) || label.trim() != label {
        format!("{label:?} has control characters or surrounding whitespace")
    } else {
        return Ok(());
    };
    Err(Error::InvalidArgument {
        what: "token label",
        reason,
    })
}

fn check_key_label(label: &str) -> Result<()> {
    let reason = if label.is_empty() {
        "must not be empty".to_owned()
    } else if label.len() > 255 {
        "is longer than 255 bytes".to_owned()
    } else if label.chars().any(char::is_control) || label.trim() != label {
        format!("{label:?} has control characters or surrounding whitespace")
    } else {
        return Ok(());
    };
    Err(Error::InvalidArgument {
        what: "key label",
        reason,
    })
}

/// SoftHSM2 accepts PINs of 4 to 255 bytes. The message never shows the PIN.
fn check_pin(what: &'static str, pin: &str) -> Result<()> {
    if !(4..=255).contains(&pin.len()) {
        return Err(Error::InvalidArgument {
            what,
            reason: "must be 4 to 255 bytes long".to_owned(),
        });
    }
    if pin.contains('\0') {
        return Err(Error::InvalidArgument {
            what,
            reason: "must not contain NUL".to_owned(),
        });
    }
    Ok(())
}

fn to_hex(bytes: &[u8]) -> String {
    let mut hex = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_removes_every_secret() {
        let text = scrub("pin 123456 wrong; so 987654", &["123456", "987654", ""]);
        assert_eq!(text, "pin <redacted> wrong; so <redacted>");
    }

    #[test]
    fn conf_names_the_token_dir() -> Result<()> {
        let conf = render_conf(Path::new("/x/y/tokens"))?;
        assert!(conf.contains("directories.tokendir = /x/y/tokens\n"));
        assert!(conf.contains("objectstore.backend = file\n"));
        assert!(!conf.contains('@'));
        assert!(render_conf(Path::new("/x/\ny")).is_err());
        assert!(render_conf(Path::new("/x/#y")).is_err());
        assert!(render_conf(Path::new("/x/with space")).is_ok());
        Ok(())
    }

    #[test]
    fn pin_errors_do_not_show_the_pin() {
        let Err(err) = check_pin("user PIN", "123") else {
            panic!("a 3-byte PIN must be refused");
        };
        assert!(!err.to_string().contains("123"), "{err}");
    }

    #[test]
    fn hex() {
        assert_eq!(to_hex(&[0x00, 0xab, 0x10]), "00ab10");
    }
}
