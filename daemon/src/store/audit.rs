//! store::audit: the SQL of the audit log — entries, complete-subtree nodes, checkpoints, and
//! the advisory lock that makes one writer per database.

use std::collections::HashMap;

use signet_merkle::{Entry, Hash, NodeId};
use time::OffsetDateTime;
use tokio_postgres::GenericClient;

use super::{Store, StoreError};

/// Advisory lock key held (per transaction) by the audit writer: "signet" followed by 2.
const WRITER_LOCK: i64 = 0x7369_676e_6574_0002;

/// A stored checkpoint.
#[derive(Debug, Clone)]
pub struct StoredCheckpoint {
    /// Tree size.
    pub size: u64,
    /// Root hash.
    pub root: Hash,
    /// The signed note.
    pub note: String,
}

fn to_u64(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative value {v}")))
}

fn to_i64(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt(format!("value {v} out of range")))
}

fn to_hash(bytes: &[u8]) -> Result<Hash, StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("hash of {} bytes", bytes.len())))
}

fn time_micros(t: OffsetDateTime) -> Result<i64, StoreError> {
    i64::try_from(t.unix_timestamp_nanos() / 1000)
        .map_err(|_| StoreError::Corrupt("time out of range".into()))
}

fn from_micros(micros: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn entry_from_row(r: &tokio_postgres::Row) -> Result<Entry, StoreError> {
    let params: Vec<u8> = r.try_get(6)?;
    let output: Option<Vec<u8>> = r.try_get(7)?;
    Ok(Entry {
        seq: to_u64(r.try_get(0)?)?,
        time_micros: time_micros(r.try_get(1)?)?,
        actor_fingerprint: r.try_get(2)?,
        actor_account: r.try_get(3)?,
        action: r.try_get(4)?,
        subject: r.try_get(5)?,
        params_digest: to_hash(&params)?,
        output_digest: output.as_deref().map(to_hash).transpose()?,
        result: r.try_get(8)?,
    })
}

const ENTRY_COLUMNS: &str = "seq, time, actor_fingerprint, actor_account, action, subject, params_digest, output_digest, result";

/// The writer's statements, prepared on its connection before its transaction opens
/// (deadpool caches them per connection, so only a new connection pays a round trip). The
/// transaction itself is opened on the bare client ([`tokio_postgres::Transaction`]), which
/// [`insert_and_commit`] can end with a pipelined COMMIT.
#[derive(Debug)]
pub struct WriterStatements {
    lock: tokio_postgres::Statement,
    refused: tokio_postgres::Statement,
    insert: tokio_postgres::Statement,
}

impl WriterStatements {
    /// Prepares (or takes from the connection's cache) the three statements.
    async fn prepare(conn: &deadpool_postgres::Object) -> Result<Self, StoreError> {
        let (lock, refused, insert) = tokio::try_join!(
            // The lock, then the size read after it (`sql/V7__writer_round_trips.sql`).
            conn.prepare_cached("SELECT audit_lock_writer($1)"),
            conn.prepare_cached(
                "SELECT f.fp, c.status, a.deleted_at IS NOT NULL, c.not_after \
                 FROM unnest($1::text[]) AS f(fp) \
                 LEFT JOIN certificates c ON c.fingerprint = f.fp \
                 LEFT JOIN accounts a ON a.id = c.account_id",
            ),
            // Entries and nodes in one statement.
            conn.prepare_cached(
                "WITH entries AS ( \
                   INSERT INTO audit_entries (seq, time, actor_fingerprint, actor_account, action, subject, params_digest, output_digest, result) \
                   SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bytea[], $8::bytea[], $9::text[])) \
                 INSERT INTO audit_nodes (level, idx, hash) \
                 SELECT * FROM unnest($10::smallint[], $11::bigint[], $12::bytea[])",
            ),
        )?;
        Ok(WriterStatements {
            lock,
            refused,
            insert,
        })
    }
}

/// Opens the writer's transaction on the bare client of `conn`, with its statements.
pub async fn begin_writer(
    conn: &mut deadpool_postgres::Object,
) -> Result<(WriterStatements, tokio_postgres::Transaction<'_>), StoreError> {
    let stmts = WriterStatements::prepare(conn).await?;
    let client: &mut tokio_postgres::Client = conn;
    Ok((stmts, client.transaction().await?))
}

/// Takes the writer lock for the rest of the transaction; returns the current tree size.
pub async fn lock_writer(
    tx: &tokio_postgres::Transaction<'_>,
    stmts: &WriterStatements,
) -> Result<u64, StoreError> {
    let row = tx.query_one(&stmts.lock, &[&WRITER_LOCK]).await?;
    to_u64(row.try_get(0)?)
}

/// The callers among `fingerprints` that may not be served now, each with the reason
/// ([`super::standing_refusal`]): run inside the writer's transaction after [`lock_writer`],
/// so it sees every status change committed before the group's entries can commit (a status
/// change commits under the same lock, with its own entry). One statement for the whole group.
pub async fn refused_callers(
    tx: &tokio_postgres::Transaction<'_>,
    stmts: &WriterStatements,
    fingerprints: &[String],
) -> Result<HashMap<String, String>, StoreError> {
    let now = OffsetDateTime::now_utc();
    let mut refused = HashMap::new();
    for row in tx.query(&stmts.refused, &[&fingerprints]).await? {
        let fingerprint: String = row.try_get(0)?;
        let status: Option<String> = row.try_get(1)?;
        let deleted: Option<bool> = row.try_get(2)?;
        let not_after: Option<OffsetDateTime> = row.try_get(3)?;
        let reason = super::standing_refusal(
            status.as_deref(),
            deleted.unwrap_or(false),
            not_after.unwrap_or(OffsetDateTime::UNIX_EPOCH),
            now,
        );
        if let Some(reason) = reason {
            refused.insert(fingerprint, reason);
        }
    }
    Ok(refused)
}

/// The number of entries (the next sequence number).
pub async fn size(client: &impl GenericClient) -> Result<u64, StoreError> {
    let row = client
        .query_one("SELECT coalesce(max(seq) + 1, 0) FROM audit_entries", &[])
        .await?;
    to_u64(row.try_get(0)?)
}

/// Stored node hashes for `ids`, in one query. Missing ids are absent from the map.
pub async fn nodes(
    client: &impl GenericClient,
    ids: &[NodeId],
) -> Result<HashMap<NodeId, Hash>, StoreError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let levels: Vec<i16> = ids.iter().map(|n| i16::from(n.level)).collect();
    let idxs = ids
        .iter()
        .map(|n| to_i64(n.index))
        .collect::<Result<Vec<_>, _>>()?;
    let rows = client
        .query(
            "SELECT n.level, n.idx, n.hash FROM audit_nodes n \
             JOIN unnest($1::smallint[], $2::bigint[]) AS want(level, idx) \
             ON n.level = want.level AND n.idx = want.idx",
            &[&levels, &idxs],
        )
        .await?;
    rows.iter().map(node_from_row).collect()
}

/// A row of `level, idx, hash`.
fn node_from_row(r: &tokio_postgres::Row) -> Result<(NodeId, Hash), StoreError> {
    let level: i16 = r.try_get(0)?;
    let id = NodeId {
        level: u8::try_from(level).map_err(|_| StoreError::Corrupt("node level".into()))?,
        index: to_u64(r.try_get(1)?)?,
    };
    let hash: Vec<u8> = r.try_get(2)?;
    Ok((id, to_hash(&hash)?))
}

/// The columns of entries and nodes as arrays, the parameters of one `unnest` insert.
struct Columns<'a> {
    seqs: Vec<i64>,
    times: Vec<OffsetDateTime>,
    fingerprints: Vec<&'a str>,
    accounts: Vec<&'a str>,
    actions: Vec<&'a str>,
    subjects: Vec<&'a str>,
    params: Vec<&'a [u8]>,
    outputs: Vec<Option<&'a [u8]>>,
    results: Vec<&'a str>,
    levels: Vec<i16>,
    idxs: Vec<i64>,
    hashes: Vec<&'a [u8]>,
}

impl<'a> Columns<'a> {
    fn of(entries: &'a [Entry], new_nodes: &'a [(NodeId, Hash)]) -> Result<Self, StoreError> {
        let n = entries.len();
        let mut c = Columns {
            seqs: Vec::with_capacity(n),
            times: Vec::with_capacity(n),
            fingerprints: Vec::with_capacity(n),
            accounts: Vec::with_capacity(n),
            actions: Vec::with_capacity(n),
            subjects: Vec::with_capacity(n),
            params: Vec::with_capacity(n),
            outputs: Vec::with_capacity(n),
            results: Vec::with_capacity(n),
            levels: Vec::with_capacity(new_nodes.len()),
            idxs: Vec::with_capacity(new_nodes.len()),
            hashes: Vec::with_capacity(new_nodes.len()),
        };
        for e in entries {
            c.seqs.push(to_i64(e.seq)?);
            c.times.push(from_micros(e.time_micros)?);
            c.fingerprints.push(e.actor_fingerprint.as_str());
            c.accounts.push(e.actor_account.as_str());
            c.actions.push(e.action.as_str());
            c.subjects.push(e.subject.as_str());
            c.params.push(e.params_digest.as_slice());
            c.outputs
                .push(e.output_digest.as_ref().map(|d| d.as_slice()));
            c.results.push(e.result.as_str());
        }
        for (node, hash) in new_nodes {
            c.levels.push(i16::from(node.level));
            c.idxs.push(to_i64(node.index)?);
            c.hashes.push(hash.as_slice());
        }
        Ok(c)
    }

    /// The twelve parameters, in the order of the insert's `unnest` (and of
    /// `audit_append_plain` after its first four).
    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 12] {
        [
            &self.seqs,
            &self.times,
            &self.fingerprints,
            &self.accounts,
            &self.actions,
            &self.subjects,
            &self.params,
            &self.outputs,
            &self.results,
            &self.levels,
            &self.idxs,
            &self.hashes,
        ]
    }
}

/// Appends entries and the nodes they completed, in one statement.
pub async fn insert(
    tx: &tokio_postgres::Transaction<'_>,
    stmts: &WriterStatements,
    entries: &[Entry],
    new_nodes: &[(NodeId, Hash)],
) -> Result<(), StoreError> {
    let columns = Columns::of(entries, new_nodes)?;
    tx.execute(&stmts.insert, &columns.params()).await?;
    Ok(())
}

/// [`insert`], then COMMIT, sent back to back: one round trip instead of two. The server runs
/// them in order; if the insert fails, the transaction is aborted and the COMMIT only rolls it
/// back, and the insert's error is what comes back.
pub async fn insert_and_commit(
    tx: tokio_postgres::Transaction<'_>,
    stmts: &WriterStatements,
    entries: &[Entry],
    new_nodes: &[(NodeId, Hash)],
) -> Result<(), StoreError> {
    let columns = Columns::of(entries, new_nodes)?;
    let params = columns.params();
    tokio::try_join!(
        tx.execute(&stmts.insert, &params),
        tx.batch_execute("COMMIT")
    )?;
    // The COMMIT went out by hand and succeeded: the transaction is over, and dropping it
    // would send a stray ROLLBACK. A top-level `Transaction` holds only a borrow of the
    // client and two plain fields, so forgetting it leaks nothing. (On an error above it is
    // dropped: its ROLLBACK ends the transaction if the COMMIT was never sent.)
    std::mem::forget(tx);
    Ok(())
}

/// What [`append_plain`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlainAppend {
    /// The entries and nodes are committed.
    Committed,
    /// Nothing was written: the log has this many entries, not the number assumed.
    Moved(u64),
    /// Nothing was written: a caller may not be served now (the general path says why).
    Standing,
}

/// A group of plain entries (no mutation) in one round trip: BEGIN, `audit_append_plain`
/// (`sql/V15__audit_append_in_one_call.sql`: the writer lock, the log's size compared with
/// `size`, every one of `callers` checked under the lock, the insert) and COMMIT, sent back to
/// back. Returns only after the COMMIT is answered, so [`PlainAppend::Committed`] means durable.
pub async fn append_plain(
    conn: &deadpool_postgres::Object,
    size: u64,
    callers: &[String],
    now: OffsetDateTime,
    entries: &[Entry],
    new_nodes: &[(NodeId, Hash)],
) -> Result<PlainAppend, StoreError> {
    let columns = Columns::of(entries, new_nodes)?;
    let stmt = conn
        .prepare_cached(
            "SELECT audit_append_plain($1, $2, $3, $4, $5::bigint[], $6::timestamptz[], \
             $7::text[], $8::text[], $9::text[], $10::text[], $11::bytea[], $12::bytea[], \
             $13::text[], $14::smallint[], $15::bigint[], $16::bytea[])",
        )
        .await?;
    let size_param = to_i64(size)?;
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
        vec![&WRITER_LOCK, &size_param, &callers, &now];
    params.extend(columns.params());
    // tokio-postgres sends the three requests in order without waiting between them; the
    // server runs them in order. If the call fails, the transaction is aborted and the COMMIT
    // only rolls it back; the call's error is what comes back.
    let (_, row, _) = tokio::try_join!(
        conn.batch_execute("BEGIN"),
        conn.query_one(&stmt, &params),
        conn.batch_execute("COMMIT"),
    )?;
    let outcome: String = row.try_get(0)?;
    match outcome.as_str() {
        "ok" => Ok(PlainAppend::Committed),
        "standing" => Ok(PlainAppend::Standing),
        other => match other.strip_prefix("size ").map(str::parse::<u64>) {
            Some(Ok(n)) => Ok(PlainAppend::Moved(n)),
            _ => Err(StoreError::Corrupt(format!(
                "audit_append_plain answered `{other}`"
            ))),
        },
    }
}

/// Records a signed checkpoint.
pub async fn insert_checkpoint(
    client: &impl GenericClient,
    size: u64,
    root: &Hash,
    note: &str,
) -> Result<(), StoreError> {
    client
        .execute(
            "INSERT INTO audit_checkpoints (size, root, note) VALUES ($1, $2, $3) ON CONFLICT (size) DO NOTHING",
            &[&to_i64(size)?, &root.as_slice(), &note],
        )
        .await?;
    Ok(())
}

fn checkpoint_from_row(r: &tokio_postgres::Row) -> Result<StoredCheckpoint, StoreError> {
    let root: Vec<u8> = r.try_get(1)?;
    Ok(StoredCheckpoint {
        size: to_u64(r.try_get(0)?)?,
        root: to_hash(&root)?,
        note: r.try_get(2)?,
    })
}

impl Store {
    /// The number of audit entries.
    pub async fn audit_size(&self) -> Result<u64, StoreError> {
        let conn = self.pool.get().await?;
        size(&**conn).await
    }

    /// Stored node hashes.
    pub async fn audit_nodes(&self, ids: &[NodeId]) -> Result<HashMap<NodeId, Hash>, StoreError> {
        let conn = self.pool.get().await?;
        nodes(&**conn, ids).await
    }

    /// Entries with `from <= seq < from + limit`, in order.
    pub async fn audit_entries(&self, from: u64, limit: u64) -> Result<Vec<Entry>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = conn
            .query(
                &format!(
                    "SELECT {ENTRY_COLUMNS} FROM audit_entries WHERE seq >= $1 ORDER BY seq LIMIT $2"
                ),
                &[&to_i64(from)?, &to_i64(limit)?],
            )
            .await?;
        rows.iter().map(entry_from_row).collect()
    }

    /// The newest checkpoint.
    pub async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        let conn = self.pool.get().await?;
        let row = conn
            .query_opt(
                "SELECT size, root, note FROM audit_checkpoints ORDER BY size DESC LIMIT 1",
                &[],
            )
            .await?;
        row.as_ref().map(checkpoint_from_row).transpose()
    }

    /// Every checkpoint, oldest first.
    pub async fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = conn
            .query(
                "SELECT size, root, note FROM audit_checkpoints ORDER BY size",
                &[],
            )
            .await?;
        rows.iter().map(checkpoint_from_row).collect()
    }

    /// Stored nodes completed by the entries `from <= seq < to` (node `(L, I)` is completed
    /// by entry `(I + 1)·2^L − 1`), in one query on the primary key, one index range per
    /// level. `verify_log` compares them with the nodes it recomputes from those entries.
    pub async fn audit_nodes_completed(
        &self,
        from: u64,
        to: u64,
    ) -> Result<HashMap<NodeId, Hash>, StoreError> {
        let conn = self.pool.get().await?;
        // Per level L: the indexes I with from <= (I+1)·2^L − 1 < to, that is
        // ceil((from+1)/2^L) − 1 <= I < ceil((to+1)/2^L) − 1.
        let mut levels = Vec::new();
        let mut lows = Vec::new();
        let mut highs = Vec::new();
        for level in 0..64u8 {
            let span = 1u128 << level;
            let bound = |n: u64| -> Result<i64, StoreError> {
                let n = (u128::from(n) + 1).div_ceil(span) - 1;
                to_i64(u64::try_from(n).map_err(|_| StoreError::Corrupt("node bound".into()))?)
            };
            let (lo, hi) = (bound(from)?, bound(to)?);
            if lo < hi {
                levels.push(i16::from(level));
                lows.push(lo);
                highs.push(hi);
            }
        }
        let rows = conn
            .query(
                "SELECT n.level, n.idx, n.hash FROM audit_nodes n \
                 JOIN unnest($1::smallint[], $2::bigint[], $3::bigint[]) AS want(level, lo, hi) \
                 ON n.level = want.level AND n.idx >= want.lo AND n.idx < want.hi",
                &[&levels, &lows, &highs],
            )
            .await?;
        rows.iter().map(node_from_row).collect()
    }

    /// The first stored node (by level, then index) that no tree of `size` entries has: at
    /// level `L`, an index at or past `size / 2^L`. A log that ends at `size` entries has none.
    pub async fn audit_node_beyond(&self, size: u64) -> Result<Option<NodeId>, StoreError> {
        let conn = self.pool.get().await?;
        let levels: Vec<i16> = (0..64).collect();
        let lows = (0..64u32)
            .map(|l| to_i64(size >> l))
            .collect::<Result<Vec<_>, _>>()?;
        let row = conn
            .query_opt(
                "SELECT n.level, n.idx, n.hash FROM audit_nodes n \
                 JOIN unnest($1::smallint[], $2::bigint[]) AS want(level, lo) \
                 ON n.level = want.level AND n.idx >= want.lo \
                 ORDER BY n.level, n.idx LIMIT 1",
                &[&levels, &lows],
            )
            .await?;
        row.as_ref()
            .map(|r| node_from_row(r).map(|(id, _)| id))
            .transpose()
    }

    /// A connection for the audit writer.
    pub(crate) async fn writer_connection(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.pool.get().await?)
    }
}
