//! `GET /v1/snapshot`: the filter's snapshot, from memory. `ETag` is the quoted version; a
//! matching `If-None-Match` gets `304 Not Modified` without a database round trip (unless this
//! process wrote since the last build, in which case it rebuilds first). The `reporters` map
//! holds only the calling reporter's own entry (empty for the data-plane and admin tokens).
//! With `Accept: application/vnd.tollgate.snapshot-delta+json` (the sync service's) the answer
//! is what changed since the version `If-None-Match` names (`crate::snapshot::history`).

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;

use super::auth::Caller;
use super::error::ApiError;
use super::AppState;
use crate::snapshot::{if_none_match, quoted_version};
use tollgate_core::snapshot::sections::DELTA_MEDIA_TYPE;

/// The filter's snapshot; ETag is the version, If-None-Match gives 304; with a reporter
/// secret, or the data-plane token and an `x-tollgate-reporter` header naming a reporter,
/// `reporters` holds that reporter's acknowledged sequence (and no other).
#[utoipa::path(get, path = "/v1/snapshot", responses(
    (status = 200, description = "OK", body = tollgate_core::snapshot::Snapshot),
    (status = 304, description = "Not Modified: If-None-Match matches the current version"),
    (status = 503, description = "No snapshot built yet"),
))]
pub async fn get(
    State(s): State<AppState>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let built = s.snapshots.fresh().await?;
    if built.version == 0 {
        return Err(ApiError::Unavailable("no snapshot built yet".into()));
    }
    let etag = HeaderValue::from_str(&built.etag)
        .map_err(|e| ApiError::Internal(format!("etag header: {e}")))?;
    let inm = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    let matches = inm.is_some_and(|v| if_none_match(v, &built.etag));
    // The filter names its reporter in a header (the id is no secret: posting needs the
    // reporter secret); a reporter secret as the bearer names it too.
    let named = headers
        .get("x-tollgate-reporter")
        .and_then(|v| v.to_str().ok());
    let reporter = match caller.as_ref().map(|c| &c.0) {
        Some(Caller::Reporter(me)) => Some(me.as_str()),
        Some(Caller::DataPlane) => named,
        _ => None,
    };
    // A poll is a sync: the reporter is alive even when it has no usage to post
    // (`fleet_stale` reads this).
    if let Some(me) = reporter {
        s.store.note_sync(me, s.clock.now());
    }
    let delta = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains(DELTA_MEDIA_TYPE));
    let mut resp = if matches {
        s.metrics.snapshot_not_modified();
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        // Each reporter sees its own acknowledgement only; the version (ETag) still names the
        // content, since acknowledgements are read with the spend of that version.
        let (doc, media_type, shape) = if delta {
            let (doc, from) = built.delta(inm.and_then(quoted_version))?;
            let shape = if from.is_some() { "delta" } else { "whole" };
            (doc, DELTA_MEDIA_TYPE, shape)
        } else {
            (built.bytes.clone(), "application/json", "document")
        };
        s.metrics.snapshot_sent(shape, doc.len());
        let mut r = match reporter {
            Some(me) => {
                let (head, tail) = built.for_reporter(&doc, me);
                let len = head.len() + tail.len();
                let chunks = [Ok::<_, std::convert::Infallible>(head), Ok(tail)];
                let mut r = Body::from_stream(futures_util::stream::iter(chunks)).into_response();
                r.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
                r
            }
            _ => doc.into_response(),
        };
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(media_type));
        r
    };
    resp.headers_mut().insert(header::ETAG, etag);
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}
