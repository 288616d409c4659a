//! `POST /v1/bulk`: create users, virtual keys and budgets, and revoke keys, by the thousand
//! in one call and ONE transaction (`store/provision.rs`).
//!
//! Each item is written as its single endpoint takes it (`POST /v1/users`, `/v1/keys`,
//! `/v1/budgets`) and checked the same way. All or nothing: when any item cannot be applied
//! the answer is a 422 problem document whose `errors` lists every such item (section, index,
//! field, the status it would have had alone, why), and nothing is written; the same body,
//! corrected, is then safe to send again (no key is created twice). Otherwise the answer
//! holds each section's results in request order, the new keys with their secrets: the only
//! time they are shown.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;

use super::budgets::NewBudgetBody;
use super::error::{ApiError, ApiJson};
use super::formats::Id;
use super::keys::NewKeyBody;
use super::openapi::ItemProblem;
use super::tenants::NewUser;
use super::AppState;
use crate::store::provision::{
    ItemError, Provision, ProvisionOutcome, Provisioned, Section, MAX_ITEMS,
};

type ApiResult<T> = Result<T, ApiError>;

/// Body limit of `POST /v1/bulk`: 100,000 keys of about 100 bytes each, with room to spare.
pub const BULK_BODY_LIMIT: usize = 32 * 1024 * 1024;

/// `POST /v1/bulk` body: every section optional, at most 100,000 items in all. Sections
/// apply in this order, so keys and budgets may name users created by the same call.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Bulk {
    /// Users to create, each as `POST /v1/users` takes it.
    #[serde(default)]
    #[schema(max_items = 100_000)]
    users: Vec<NewUser>,
    /// Virtual keys to create, each as `POST /v1/keys` takes it.
    #[serde(default)]
    #[schema(max_items = 100_000)]
    keys: Vec<NewKeyBody>,
    /// Budgets to create, each as `POST /v1/budgets` takes it.
    #[serde(default)]
    #[schema(max_items = 100_000)]
    budgets: Vec<NewBudgetBody>,
    /// Ids of virtual keys to revoke (a revoked key stays revoked since its first time).
    #[serde(default)]
    #[schema(value_type = Vec<Id>, max_items = 100_000)]
    revoke_keys: Vec<String>,
}

/// The request index of each item handed to the store, per section: items refused by the
/// API's own checks are not handed over, so the store's indices are translated back.
#[derive(Default)]
struct Positions {
    users: Vec<usize>,
    keys: Vec<usize>,
    budgets: Vec<usize>,
    revoke_keys: Vec<usize>,
}

impl Positions {
    fn of(&self, section: Section) -> &[usize] {
        match section {
            Section::Users => &self.users,
            Section::Keys => &self.keys,
            Section::Budgets => &self.budgets,
            Section::RevokeKeys => &self.revoke_keys,
        }
    }
}

/// An item refused by its own checks: the single endpoint's error, placed in the body.
fn refused(
    section: Section,
    index: usize,
    e: ApiError,
) -> ApiResult<(Section, usize, ItemProblem)> {
    let item = format!("{}[{index}]", section.as_str());
    let problem = match e {
        ApiError::Invalid { field, detail } => ItemProblem {
            field: format!("{item}.{field}"),
            item,
            status: 422,
            detail,
        },
        // Anything else (the random source failing) is not the item's fault.
        other => return Err(other),
    };
    Ok((section, index, problem))
}

/// A store's item error, at the item's index in the request.
fn placed(e: ItemError, at: &Positions) -> (Section, usize, ItemProblem) {
    let index = at.of(e.section).get(e.index).copied().unwrap_or(e.index);
    let item = format!("{}[{index}]", e.section.as_str());
    let field = match e.field {
        Some(f) => format!("{item}.{f}"),
        None => item.clone(),
    };
    (
        e.section,
        index,
        ItemProblem {
            item,
            field,
            status: e.status,
            detail: e.detail,
        },
    )
}

/// Create users, virtual keys and budgets, and revoke keys, in one transaction: all or
/// nothing.
#[utoipa::path(post, path = "/v1/bulk", request_body = Bulk, responses(
    (status = 200, description = "Everything was applied; each section's results in request \
        order, the new keys with their secrets (shown this once)", body = Provisioned),
    (status = 409, description = "Another writer took an id or a budget between the checks \
        and the writes; nothing was written"),
    (status = 422, description = "Some items cannot be applied, every one listed in `errors`; \
        nothing was written"),
))]
pub async fn apply(
    State(s): State<AppState>,
    ApiJson(body): ApiJson<Bulk>,
) -> ApiResult<Json<Provisioned>> {
    let total = body.users.len() + body.keys.len() + body.budgets.len() + body.revoke_keys.len();
    if total > MAX_ITEMS {
        return Err(ApiError::invalid(
            "body",
            format!("{total} items; at most {MAX_ITEMS} per call"),
        ));
    }
    let mut p = Provision::default();
    let mut at = Positions::default();
    let mut problems = Vec::new();
    for (i, u) in body.users.into_iter().enumerate() {
        match u.check() {
            Ok(u) => {
                p.users.push(u);
                at.users.push(i);
            }
            Err(e) => problems.push(refused(Section::Users, i, e)?),
        }
    }
    for (i, k) in body.keys.into_iter().enumerate() {
        match k.check() {
            Ok(k) => {
                p.keys.push(k);
                at.keys.push(i);
            }
            Err(e) => problems.push(refused(Section::Keys, i, e)?),
        }
    }
    for (i, b) in body.budgets.into_iter().enumerate() {
        match b.check() {
            Ok(b) => {
                p.budgets.push(b);
                at.budgets.push(i);
            }
            Err(e) => problems.push(refused(Section::Budgets, i, e)?),
        }
    }
    for (i, id) in body.revoke_keys.into_iter().enumerate() {
        match super::check_id("", &id) {
            Ok(()) => {
                p.revoke_keys.push(id);
                at.revoke_keys.push(i);
            }
            // An id no key can have: not found, as the store would say.
            Err(_) => problems.push((
                Section::RevokeKeys,
                i,
                ItemProblem {
                    item: format!("revoke_keys[{i}]"),
                    field: format!("revoke_keys[{i}]"),
                    status: 404,
                    detail: format!("key {id:?} not found"),
                },
            )),
        }
    }
    // With items already refused the store only checks the others, so that one answer names
    // every item at fault.
    let outcome = s
        .store
        .provision(&p, s.clock.now(), !problems.is_empty())
        .await?;
    match outcome {
        ProvisionOutcome::Applied(done) => return Ok(Json(done)),
        ProvisionOutcome::Checked => {}
        ProvisionOutcome::Refused(errors) => {
            problems.extend(errors.into_iter().map(|e| placed(e, &at)));
        }
    }
    problems.sort_by_key(|(section, index, _)| (*section, *index));
    Err(ApiError::InvalidItems {
        total,
        errors: problems.into_iter().map(|(_, _, p)| p).collect(),
    })
}
