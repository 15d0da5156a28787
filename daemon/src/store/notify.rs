//! store::notify: changes announced to every daemon sharing the database through PostgreSQL
//! `LISTEN/NOTIFY` on the channel `signetd`. A change sends its notice inside its own
//! transaction (`pg_notify`), so it is delivered exactly when, and only if, the change
//! commits. Each daemon keeps one connection outside the pool listening ([`listen_to`], also
//! used for the jobs' own channel); a notice is a hint to
//! act now, never the only way a change is seen (the periodic checks remain, and a daemon
//! whose listener is down catches up through them).

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Transaction};
use uuid::Uuid;

use super::StoreError;
use crate::config;

/// The channel every notice goes to.
pub const CHANNEL: &str = "signetd";

/// A change other daemons should act on at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A ring key was retired: stop lending it.
    KeyRetired(Uuid),
    /// A certificate's status changed (held, released, revoked).
    CertificateStatus(String),
    /// An account was deleted.
    AccountDeleted(String),
    /// A key's or a ring's signature budget or window changed.
    LimitsChanged,
    /// A ring key used its signature budget up (sent by `keys_spend` in
    /// `sql/V14__job_budgets.sql`, for an online spend or a batch job's reservation): stop
    /// lending it until it may sign again.
    KeySpent(Uuid),
}

impl Notice {
    fn payload(&self) -> String {
        match self {
            Notice::KeyRetired(id) => format!("key.retired {id}"),
            Notice::CertificateStatus(serial) => format!("cert.status {serial}"),
            Notice::AccountDeleted(name) => format!("account.deleted {name}"),
            Notice::LimitsChanged => "limits.changed".to_owned(),
            Notice::KeySpent(id) => format!("key.spent {id}"),
        }
    }

    /// Reads a payload; `None` for one this version does not know (a newer daemon's).
    pub fn parse(payload: &str) -> Option<Notice> {
        let (kind, arg) = payload.split_once(' ').unwrap_or((payload, ""));
        match kind {
            "key.retired" => Uuid::parse_str(arg).ok().map(Notice::KeyRetired),
            "cert.status" if !arg.is_empty() => Some(Notice::CertificateStatus(arg.to_owned())),
            "account.deleted" if !arg.is_empty() => Some(Notice::AccountDeleted(arg.to_owned())),
            "limits.changed" if arg.is_empty() => Some(Notice::LimitsChanged),
            "key.spent" => Uuid::parse_str(arg).ok().map(Notice::KeySpent),
            _ => None,
        }
    }
}

/// Sends `notice` when `tx` commits.
pub async fn send(tx: &Transaction<'_>, notice: &Notice) -> Result<(), StoreError> {
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &notice.payload()])
        .await?;
    Ok(())
}

/// Opens a connection of its own (not from the pool, whose connections drop notifications)
/// that `LISTEN`s on `channel`.
pub async fn listen_to(cfg: &config::Database, channel: &str) -> Result<Listener, StoreError> {
    let timeout = Duration::from_secs(cfg.timeout_secs.max(1));
    let pg = super::pg_config(&cfg.url, timeout)?;
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(super::client_tls(cfg)?);
    let (client, mut connection) = pg.connect(tls).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n.payload().to_owned()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "notification connection ended");
                    break;
                }
            }
        }
    });
    client.batch_execute(&format!("LISTEN {channel}")).await?;
    Ok(Listener {
        rx,
        _client: client,
        task,
    })
}

/// A `LISTEN` connection. Dropping it closes the connection.
#[derive(Debug)]
pub struct Listener {
    rx: mpsc::UnboundedReceiver<String>,
    _client: tokio_postgres::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Listener {
    /// The next notification's payload; `None` when the connection is gone.
    pub async fn recv(&mut self) -> Option<String> {
        self.rx.recv().await
    }

    /// The next notice this version knows; `None` when the connection is gone.
    pub async fn next_notice(&mut self) -> Option<Notice> {
        loop {
            let payload = self.recv().await?;
            match Notice::parse(&payload) {
                Some(n) => return Some(n),
                None => tracing::debug!(%payload, "ignoring an unknown notice"),
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_round_trip_and_unknown_ones_are_ignored() {
        let id = Uuid::new_v4();
        for n in [
            Notice::KeyRetired(id),
            Notice::CertificateStatus("00ab".into()),
            Notice::AccountDeleted("alice".into()),
            Notice::LimitsChanged,
            Notice::KeySpent(id),
        ] {
            assert_eq!(Notice::parse(&n.payload()), Some(n));
        }
        // The database sends this one itself (`keys_spend`): the same text.
        assert_eq!(
            Notice::parse(&format!("key.spent {}", id.hyphenated())),
            Some(Notice::KeySpent(id))
        );
        assert_eq!(Notice::parse("key.spent"), None);
        assert_eq!(Notice::parse("budget.exhausted x"), None);
        assert_eq!(Notice::parse("key.retired not-a-uuid"), None);
    }
}
