//! api::rpm: RPM package signing — `POST /v1/sign-rpm?ring=…|key_id=…` and the albs-sign-file
//! `POST /sign-rpm?keyid=…` — answered as the signed package (`application/x-rpm`, with a
//! Content-Disposition file name that is a basename).
//!
//! The package arrives as the body or as a multipart `file` part. Its head (lead, signature
//! header, main header) is parsed as it streams in (`formats::rpm::HeadParser`); the payload
//! after it goes to an unlinked temporary file (in `TMPDIR`), never into memory, and is
//! streamed back unchanged after the new head. The head signature is made in the token under
//! the key's lease and checked before release; prior signatures are replaced. One audit entry
//! names the package, the input's and the header's SHA-256 and the new head.

use std::io::{Seek as _, Write as _};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use sha2::Digest as _;

use super::upload::{self, Event};
use super::{ApiError, Caller, with_receipt};
use crate::app::App;
use crate::formats::rpm::{Feed, HeadParser, RpmError, RpmHead, SignedHead};
use crate::signing::{self, Resolved};

fn rpm_api(e: RpmError) -> ApiError {
    match e {
        RpmError::Token(h) => ApiError::from(h),
        RpmError::TooLarge { limit } => {
            ApiError::too_large(format!("an RPM head is limited to {limit} bytes"))
        }
        RpmError::OpenPgp(o) => {
            tracing::error!(error = %o, "an RPM header signature failed its check; withheld");
            ApiError::internal()
        }
        RpmError::Encoding(_) => {
            tracing::error!(error = %e, "an RPM head could not be rebuilt");
            ApiError::internal()
        }
        other => ApiError::bad_request(format!("not a valid RPM package: {other}")),
    }
}

/// The upload split as it streams: the head parsed in memory, the payload spooled to disk.
struct Spool {
    parser: Option<HeadParser>,
    payload: std::fs::File,
    payload_len: u64,
    sha256: sha2::Sha256,
    bytes: u64,
    name: Option<String>,
}

impl Spool {
    fn take(&mut self, mut data: &[u8]) -> Result<(), ApiError> {
        self.bytes = self.bytes.saturating_add(data.len() as u64);
        self.sha256.update(data);
        if let Some(parser) = &mut self.parser
            && !parser.is_complete()
        {
            match parser.feed(data).map_err(rpm_api)? {
                Feed::NeedMore(_) => return Ok(()),
                Feed::Complete { used } => data = data.get(used..).unwrap_or_default(),
            }
        }
        if !data.is_empty() {
            self.payload.write_all(data).map_err(|e| {
                tracing::error!(error = %e, "cannot spool an RPM payload");
                ApiError::unavailable("the package cannot be spooled; retry later")
            })?;
            self.payload_len += data.len() as u64;
        }
        Ok(())
    }
}

/// What signing a package gives: the new head and the payload to send after it.
pub(super) struct SignedPackage {
    pub head: SignedHead,
    payload: std::fs::File,
    pub payload_len: u64,
    pub input_sha256: [u8; 32],
    pub input_bytes: u64,
    pub name: Option<String>,
    pub key_id: uuid::Uuid,
}

/// Reads the package, signs its head with one key of `target`, and keeps the payload.
pub(super) async fn sign_package(
    app: &App,
    target: &Resolved,
    headers: &HeaderMap,
    body: Body,
) -> Result<SignedPackage, ApiError> {
    let shape = upload::shape(headers)?;
    let limit = app.signing.config().max_upload_bytes;
    upload::check_declared(headers, &shape, limit, "a package")
        .map_err(|e| super::formats::count(app, e))?;
    let payload = tempfile::tempfile().map_err(|e| {
        tracing::error!(error = %e, "cannot create a temporary file for an RPM payload");
        ApiError::unavailable("the package cannot be spooled; retry later")
    })?;
    let mut spool = Spool {
        parser: Some(HeadParser::new()),
        payload,
        payload_len: 0,
        sha256: sha2::Sha256::new(),
        bytes: 0,
        name: None,
    };
    let streamed = upload::stream(body, &shape, "file", 1, limit, "a package", |ev| match ev {
        Event::Start(f) => {
            spool.name = f.name;
            Ok(())
        }
        Event::Data(d) => spool.take(d),
        Event::Field(..) => Ok(()),
    })
    .await
    .map_err(|e| super::formats::count(app, e))?;
    if streamed.files == 0 {
        return Err(ApiError::bad_request("the form has no `file` part"));
    }
    let head: RpmHead = spool
        .parser
        .take()
        .ok_or_else(ApiError::internal)?
        .into_head()
        .map_err(rpm_api)?;
    let held = app.signing.hold(target).await?;
    let key_id = held.id();
    let packet = app.signing.openpgp_key(key_id).await?;
    let pending = head
        .signer(&packet, signing::openpgp::signing_time(&packet))
        .map_err(rpm_api)?;
    let request = pending.request();
    let mut signatures = app
        .signing
        .sign_held(held, vec![(request.scheme(), request.input_buf())])
        .await?;
    let signature = signatures.pop().ok_or_else(ApiError::internal)?;
    let head = pending.complete(&signature).map_err(rpm_api)?;
    Ok(SignedPackage {
        head,
        payload: spool.payload,
        payload_len: spool.payload_len,
        input_sha256: spool.sha256.finalize().into(),
        input_bytes: spool.bytes,
        name: spool.name,
        key_id,
    })
}

/// The audit entry of a signed package (`action`, under the caller).
pub(super) async fn audit_package(
    app: &App,
    caller: &Caller,
    action: &str,
    target: &Resolved,
    signed: &SignedPackage,
    extra: serde_json::Value,
) -> Result<crate::audit::Receipt, ApiError> {
    let params = serde_json::json!({
        "target": target.subject(),
        "key_id": signed.key_id,
        "openpgp_fingerprint": signed.head.fingerprint(),
        "format": "rpm",
        "name": signed.name,
        "nevra": signed.head.nevra(),
        "bytes": signed.input_bytes,
        "sha256_before": hex::encode(signed.input_sha256),
        "header_sha256": hex::encode(signed.head.header_sha256()),
        "signature_tag": signed.head.signature_tag(),
        "payload_bytes": signed.payload_len,
        "request": extra,
    });
    let record = caller.record(
        action,
        target.subject(),
        &params,
        Some(signed.head.to_bytes()),
        "ok",
    );
    Ok(app.audit.append(record).await?)
}

/// The signed package as the answer: the new head, then the payload from its spool file.
pub(super) fn answer(
    signed: SignedPackage,
    receipt: &crate::audit::Receipt,
) -> Result<Response, ApiError> {
    let SignedPackage {
        head,
        mut payload,
        payload_len,
        name,
        key_id,
        ..
    } = signed;
    payload.rewind().map_err(|e| {
        tracing::error!(error = %e, "cannot rewind an RPM payload");
        ApiError::internal()
    })?;
    let fingerprint = head.fingerprint().to_owned();
    let head = axum::body::Bytes::from(head.into_bytes());
    let length = head.len() as u64 + payload_len;
    let file = tokio::fs::File::from_std(payload);
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(head) })
        .chain(tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024));
    let filename = upload::basename(name.as_deref(), "package.rpm");
    let mut response = (
        [(header::CONTENT_TYPE, "application/x-rpm")],
        Body::from_stream(stream),
    )
        .into_response();
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if let Ok(v) = HeaderValue::from_str(&key_id.to_string()) {
        h.insert("signetd-key-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(&fingerprint) {
        h.insert("openpgp-fingerprint", v);
    }
    Ok(with_receipt(response, receipt))
}
