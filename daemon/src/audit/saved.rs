//! audit::saved: the newest signed checkpoint kept outside the database, in
//! `audit.checkpoint_dir`, written as the writer makes it. Whoever can rewrite the database
//! can drop its tail, nodes and checkpoint rows together; they cannot take back a checkpoint
//! that already left it. The daemon refuses to start on a log that this checkpoint does not
//! fit, and `signetd audit verify --checkpoint FILE` checks a log against one.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use signet_merkle::{Checkpoint, SignedNote};

/// The file's name in `audit.checkpoint_dir`.
pub const FILE_NAME: &str = "checkpoint";

/// The path of the saved checkpoint in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// A checkpoint read from a file, its signature checked.
#[derive(Debug, Clone)]
pub struct Saved {
    /// Where it was read.
    pub file: PathBuf,
    /// The signed note, as stored.
    pub note: String,
    /// What it commits to.
    pub checkpoint: Checkpoint,
}

/// Reads and checks the signed note at `file` (the note text, or the JSON of
/// `GET /v1/audit/checkpoint`). `Ok(None)` when the file does not exist.
pub fn read(
    file: &Path,
    origin: &str,
    key: &ed25519_dalek::VerifyingKey,
) -> Result<Option<Saved>, String> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", file.display())),
    };
    let note = match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(v) => v["note"]
            .as_str()
            .ok_or_else(|| format!("{}: checkpoint JSON without `note`", file.display()))?
            .to_owned(),
        Err(_) => text,
    };
    let checkpoint = SignedNote::parse(&note)
        .and_then(|n| n.verify(origin, key))
        .map_err(|e| {
            format!(
                "{}: not a checkpoint of log `{origin}` signed by its key: {e}",
                file.display()
            )
        })?;
    Ok(Some(Saved {
        file: file.to_owned(),
        note,
        checkpoint,
    }))
}

/// Writes `note` (a checkpoint of `size` entries) to `dir` unless the file there already holds
/// one at least as large: a new file, flushed, then renamed over the old one, so a crash
/// leaves the old checkpoint or the new one, never a torn file.
pub fn write_if_newer(dir: &Path, note: &str, size: u64) -> std::io::Result<bool> {
    let target = path(dir);
    if let Ok(text) = std::fs::read_to_string(&target)
        && let Ok(old) = SignedNote::parse(&text)
        && let Ok(old) = Checkpoint::parse_body(old.body())
        && old.size() >= size
    {
        return Ok(false);
    }
    let tmp = dir.join(format!(".{FILE_NAME}.{}.tmp", std::process::id()));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(note.as_bytes())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, &target)?;
    // The rename is durable once the directory is.
    std::fs::File::open(dir)?.sync_all()?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ed25519_dalek::Signer as _;

    fn note(key: &ed25519_dalek::SigningKey, size: u64) -> String {
        let cp = Checkpoint::new("test/log", size, [size as u8; 32]).unwrap();
        let body = cp.body();
        let sig = key.sign(body.as_bytes()).to_bytes().to_vec();
        let line = signet_merkle::NoteSignature::new(
            "test/log",
            signet_merkle::key_id("test/log", &key.verifying_key().to_bytes()),
            sig,
        )
        .unwrap();
        SignedNote::new(body, vec![line]).unwrap().encode()
    }

    #[test]
    fn keeps_the_largest_and_checks_the_signature() {
        let dir = tempfile::tempdir().unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let vk = key.verifying_key();
        assert!(read(&path(dir.path()), "test/log", &vk).unwrap().is_none());
        assert!(write_if_newer(dir.path(), &note(&key, 20), 20).unwrap());
        assert!(!write_if_newer(dir.path(), &note(&key, 10), 10).unwrap());
        assert!(write_if_newer(dir.path(), &note(&key, 40), 40).unwrap());
        let saved = read(&path(dir.path()), "test/log", &vk).unwrap().unwrap();
        assert_eq!(saved.checkpoint.size(), 40);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        let other = ed25519_dalek::SigningKey::from_bytes(&[8; 32]).verifying_key();
        let e = read(&path(dir.path()), "test/log", &other).unwrap_err();
        assert!(e.contains("not a checkpoint of log `test/log`"), "{e}");
        let e = read(&path(dir.path()), "other/log", &vk).unwrap_err();
        assert!(e.contains("other/log"), "{e}");
    }
}
