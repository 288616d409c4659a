//! The OpenAPI 3.1 document served at `/openapi.json`, written by hand next to the route
//! table. `tests/api.rs` checks that every route of the router is documented here with its
//! security, and that nothing else is.

use serde_json::{json, Map, Value};

use super::Access;

/// The OpenAPI path of an axum path template (`{*model}` → `{model}`).
pub fn openapi_path(axum_path: &str) -> String {
    axum_path.replace("{*", "{")
}

fn schema(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// One operation.
struct Op {
    method: &'static str,
    path: &'static str,
    access: Access,
    summary: &'static str,
    body: Option<&'static str>,
    ok: (u16, Option<&'static str>),
    errors: &'static [u16],
    params: &'static [(&'static str, &'static str, &'static str)],
}

fn operation(op: &Op) -> Value {
    let mut o = Map::new();
    o.insert("summary".into(), op.summary.into());
    o.insert(
        "operationId".into(),
        format!(
            "{}{}",
            op.method.to_lowercase(),
            op.path.replace(['/', '{', '}', '*', '.'], "_")
        )
        .into(),
    );
    o.insert(
        "security".into(),
        match op.access {
            Access::Public => json!([]),
            Access::DataPlane => json!([{"dataplane": []}, {"reporter": []}, {"admin": []}]),
            // The data-plane token only with the reporter's secret in the body
            // (`UsageBatch.reporter_secret`), how the filter posts.
            Access::Reporter => json!([{"reporter": []}, {"dataplane": []}, {"admin": []}]),
            Access::Admin => json!([{"admin": []}]),
        },
    );
    let mut params: Vec<Value> = Vec::new();
    let path = openapi_path(op.path);
    for seg in path.split('/') {
        if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            params.push(json!({
                "name": name, "in": "path", "required": true, "schema": {"type": "string"},
                "description": if name == "model" {
                    "Model name; may contain `/` (e.g. `gemini/gemini-2.5-pro`)"
                } else { "Id" }
            }));
        }
    }
    for (name, ty, desc) in op.params {
        params.push(json!({"name": name, "in": "query", "required": false,
                           "schema": {"type": ty}, "description": desc}));
    }
    if !params.is_empty() {
        o.insert("parameters".into(), params.into());
    }
    if let Some(body) = op.body {
        o.insert(
            "requestBody".into(),
            json!({"required": true, "content": {"application/json": {"schema": schema(body)}}}),
        );
    }
    let mut responses = Map::new();
    let (code, ok_schema) = op.ok;
    responses.insert(
        code.to_string(),
        match ok_schema {
            Some(s) => {
                json!({"description": "OK", "content": {"application/json": {"schema": schema(s)}}})
            }
            None => json!({"description": "OK"}),
        },
    );
    let mut errors: Vec<u16> = op.errors.to_vec();
    if op.access != Access::Public {
        errors.extend([401, 403]);
    }
    if op.body.is_some() {
        errors.extend([400, 413, 415, 422]);
    }
    errors.push(500);
    errors.sort_unstable();
    errors.dedup();
    for e in errors {
        responses.insert(
            e.to_string(),
            if e == 304 {
                json!({"description": "Not Modified: If-None-Match matches the current version"})
            } else {
                json!({"description": "Problem", "content": {"application/problem+json": {"schema": schema("Problem")}}})
            },
        );
    }
    o.insert("responses".into(), responses.into());
    o.into()
}

const OPS: &[Op] = &[
    Op {
        method: "GET",
        path: "/healthz",
        access: Access::Public,
        summary: "The process answers",
        body: None,
        ok: (200, None),
        errors: &[],
        params: &[],
    },
    Op {
        method: "GET",
        path: "/readyz",
        access: Access::Public,
        summary: "The database answers",
        body: None,
        ok: (200, None),
        errors: &[503],
        params: &[],
    },
    Op {
        method: "GET",
        path: "/metrics",
        access: Access::Public,
        summary: "Prometheus metrics (text format)",
        body: None,
        ok: (200, None),
        errors: &[],
        params: &[],
    },
    Op {
        method: "GET",
        path: "/openapi.json",
        access: Access::Public,
        summary: "This document",
        body: None,
        ok: (200, None),
        errors: &[],
        params: &[],
    },
    Op {
        method: "GET",
        path: "/v1/snapshot",
        access: Access::DataPlane,
        summary: "The filter's snapshot; ETag is the version, If-None-Match gives 304; with a reporter secret, or the data-plane token and an `x-tollgate-reporter` header naming a reporter, `reporters` holds that reporter's acknowledged sequence (and no other)",
        body: None,
        ok: (200, Some("Snapshot")),
        errors: &[304, 503],
        params: &[],
    },
    Op {
        method: "POST",
        path: "/v1/usage",
        access: Access::Reporter,
        summary: "Store a batch of up to 10,000 usage events of the authenticated reporter (idempotent by event id; an id stored with different content is a conflict, refused and counted)",
        body: Some("UsageBatch"),
        ok: (200, Some("UsageAck")),
        errors: &[],
        params: &[],
    },
    Op {
        method: "POST",
        path: "/v1/reporters",
        access: Access::DataPlane,
        summary: "Enroll a reporter (one Envoy's sync service): mints its id and secret, shown once",
        body: Some("EnrollRequest"),
        ok: (201, Some("Enrolled")),
        errors: &[],
        params: &[],
    },
    Op {
        method: "GET",
        path: "/v1/usage/events",
        access: Access::Admin,
        summary: "Ledger rows, newest first",
        body: None,
        ok: (200, Some("LedgerEvents")),
        errors: &[422],
        params: &[
            ("from", "string", "Unix seconds, RFC 3339 or YYYY-MM-DD (inclusive)"),
            ("to", "string", "Unix seconds, RFC 3339 or YYYY-MM-DD (exclusive)"),
            ("reporter", "string", "Only this reporter's events"),
            ("limit", "string", "At most this many rows, 1 to 10000 (default 1000)"),
        ],
    },
    Op {
        method: "GET",
        path: "/v1/orgs",
        access: Access::Admin,
        summary: "List organisations",
        body: None,
        ok: (200, None),
        errors: &[],
        params: &[],
    },
    Op {
        method: "POST",
        path: "/v1/orgs",
        access: Access::Admin,
        summary: "Create an organisation",
        body: Some("NewOrg"),
        ok: (201, Some("Org")),
        errors: &[409],
        params: &[],
    },
    Op {
        method: "GET",
        path: "/v1/orgs/{id}",
        access: Access::Admin,
        summary: "Get an organisation",
        body: None,
        ok: (200, Some("Org")),
        errors: &[404],
        params: &[],
    },
    Op {
        method: "PATCH",
        path: "/v1/orgs/{id}",
        access: Access::Admin,
        summary: "Rename an organisation",
        body: Some("OrgPatch"),
        ok: (200, Some("Org")),
        errors: &[404],
        params: &[],
    },
    Op {
        method: "DELETE",
        path: "/v1/orgs/{id}",
        access: Access::Admin,
        summary: "Delete an organisation nothing references",
        body: None,
        ok: (204, None),
        errors: &[404, 409],
        params: &[],
    },
    Op {
        method: "GET",
        path: "/v1/projects",
        access: Access::Admin,
        summary: "List projects",
        body: None,
        ok: (200, None),
        errors: &[422],
        params: &[("org_id", "string", "Only this organisation's")],
    },
    Op {
        method: "POST",
        path: "/v1/projects",
        access: Access::Admin,
        summary: "Create a project",
        body: Some("NewProject"),
        ok: (201, Some("Project")),
        errors: &[409],
        params: &[],
    },
    Op {
        method: "GET",
        path: "/v1/projects/{id}",
        access: Access::Admin,
        summary: "Get a project",
        body: None,
        ok: (200, Some("Project")),
        errors: &[404],
        params: &[],
    },
    Op {
        method: "DELETE",
        path: "/v1/projects/{id}",
        access: Access::Admin,
        summary: "Delete a project no key references",
        body: None,
        ok: (204, None),
        errors: &[404, 409],
        params: &[],
    },
    Op {
        method: "GET",
        path: "/v1/users",
        access: Access::Admin,
        summary: "List users",
        body: None,
        ok: (200, None),
        errors: &[422],
        params: &[("org_id", "string", "Only this organisation's")],
    },
    Op {
        method: "POST",
        path: "/v1/users",
        access: Access::Admin,
        summary: "Create a user",
        body: Some("NewUser"),
        ok: (201, Some("User")),
        errors: &[409],
        params: &[],
    },
    Op {
        method: "GET",
        path: "/v1/users/{id}",
        access: Access::Admin,
        summary: "Get a user",
        body: None,
        ok: (200, Some("User")),
        errors: &[404],
        params: &[],
    },
    Op {
        method: "DELETE",
        path: "/v1/users/{id}",
        access: Access::Admin,
        summary: "Delete a user no key references",
        body: None,
        ok: (204, None),
        errors: &[404, 409],
        params: &[],
    },
    Op {
        method: "GET",
        path: "/v1/keys",
        access: Access::Admin,
        summary: "List virtual keys (by prefix; never the secret)",
        body: None,
        ok: (200, None),
        errors: &[422],
        params: &[
            ("org_id", "string", "Only this organisation's"),
            ("include_revoked", "boolean", "Also revoked keys"),
        ],
    },
    Op {
        method: "POST",
        path: "/v1/keys",
        access: Access::Admin,
        summary: "Create a virtual key; the secret is in this answer only",
        body: Some("NewKey"),
        ok: (201, Some("CreatedKey")),
        errors: &[],
        params: &[],
    },
    Op {
        method: "GET",
        path: "/v1/keys/{id}",
        access: Access::Admin,
        summary: "Get a virtual key",
        body: None,
        ok: (200, Some("Key")),
        errors: &[404],
        params: &[],
    },
    Op {
        method: "POST",
        path: "/v1/keys/{id}/revoke",
        access: Access::Admin,
        summary: "Revoke a virtual key (it leaves the next snapshot)",
        body: None,
        ok: (200, Some("Key")),
        errors: &[404],
        params: &[],
    },
    Op {
        method: "GET",
        path: "/v1/budgets",
        access: Access::Admin,
        summary: "List budgets with their current window and spend",
        body: None,
        ok: (200, None),
        errors: &[422],
        params: &[
            ("scope", "string", "org, project, user or key"),
            ("scope_id", "string", "Id of the scope"),
        ],
    },
    Op {
        method: "POST",
        path: "/v1/budgets",
        access: Access::Admin,
        summary: "Create a budget (back-filled from the ledger for the current window)",
        body: Some("NewBudget"),
        ok: (201, Some("Budget")),
        errors: &[409],
        params: &[],
    },
    Op {
        method: "GET",
        path: "/v1/budgets/{id}",
        access: Access::Admin,
        summary: "Get a budget",
        body: None,
        ok: (200, Some("Budget")),
        errors: &[404],
        params: &[],
    },
    Op {
        method: "PATCH",
        path: "/v1/budgets/{id}",
        access: Access::Admin,
        summary: "Change a budget",
        body: Some("BudgetPatch"),
        ok: (200, Some("Budget")),
        errors: &[404, 409],
        params: &[],
    },
    Op {
        method: "DELETE",
        path: "/v1/budgets/{id}",
        access: Access::Admin,
        summary: "Delete a budget",
        body: None,
        ok: (204, None),
        errors: &[404],
        params: &[],
    },
    Op {
        method: "GET",
        path: "/v1/prices",
        access: Access::Admin,
        summary: "Prices in effect (per 1M tokens)",
        body: None,
        ok: (200, None),
        errors: &[422],
        params: &[(
            "at",
            "string",
            "Instant (Unix seconds, RFC 3339 or date); default now",
        )],
    },
    Op {
        method: "POST",
        path: "/v1/prices",
        access: Access::Admin,
        summary: "Price a model that has no price",
        body: Some("PriceInput"),
        ok: (201, Some("Price")),
        errors: &[409],
        params: &[],
    },
    Op {
        method: "POST",
        path: "/v1/prices/import",
        access: Access::Admin,
        summary: "Import a LiteLLM price map (body: the map); reports what it skipped",
        body: Some("LiteLlmMap"),
        ok: (200, Some("ImportReport")),
        errors: &[],
        params: &[
            ("format", "string", "litellm"),
            ("effective_from", "string", "From when; default now"),
        ],
    },
    Op {
        method: "GET",
        path: "/v1/prices/{*model}",
        access: Access::Admin,
        summary: "A model's current price and revision history",
        body: None,
        ok: (200, None),
        errors: &[404],
        params: &[],
    },
    Op {
        method: "PUT",
        path: "/v1/prices/{*model}",
        access: Access::Admin,
        summary: "Add a price revision",
        body: Some("PriceInput"),
        ok: (200, Some("Price")),
        errors: &[],
        params: &[],
    },
    Op {
        method: "DELETE",
        path: "/v1/prices/{*model}",
        access: Access::Admin,
        summary: "Remove a model's price from a date on (history is kept)",
        body: None,
        ok: (204, None),
        errors: &[404, 422],
        params: &[("effective_from", "string", "From when; default now")],
    },
    Op {
        method: "GET",
        path: "/v1/spend",
        access: Access::Admin,
        summary: "Spend from the ledger; CSV with Accept: text/csv",
        body: None,
        ok: (200, Some("SpendReport")),
        errors: &[422],
        params: &[
            ("scope", "string", "org, project, user or key"),
            ("scope_id", "string", "Id of the scope"),
            ("model", "string", "Only this model"),
            ("from", "string", "Start (Unix seconds, RFC 3339 or date)"),
            ("to", "string", "End, exclusive"),
            (
                "group_by",
                "string",
                "Comma-separated: day, model, org, project, user, key, scope",
            ),
            ("tz", "string", "IANA zone days are counted in; default UTC"),
        ],
    },
    Op {
        method: "POST",
        path: "/v1/cost/quote",
        access: Access::Admin,
        summary: "Cost of a usage at the prices in effect",
        body: Some("QuoteRequest"),
        ok: (200, Some("Quote")),
        errors: &[],
        params: &[],
    },
];

/// The documented operations as `(METHOD, axum path, access)`, for the route-table test.
pub fn documented() -> Vec<(&'static str, &'static str, Access)> {
    OPS.iter().map(|o| (o.method, o.path, o.access)).collect()
}

fn money() -> Value {
    json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?$", "description": "USD as a decimal string"})
}

/// An optional request field that may also be `null`, which the API reads as absent.
fn nullable(v: &Value) -> Value {
    json!({"anyOf": [v, {"type": "null"}]})
}

fn schemas() -> Value {
    let id = json!({"type": "string", "pattern": "^[A-Za-z0-9._@:-]{1,128}$"});
    // The patterns say what the handlers check (`check_name`, the scope_id and e-mail checks): no control
    // characters (Unicode Cc, as Rust's `char::is_control`).
    let name = json!({"type": "string", "minLength": 1, "maxLength": 200,
                      "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]*$"});
    let scope_id = json!({"type": "string", "minLength": 1, "maxLength": 256,
                          "pattern": "^[^;=\\x00-\\x1f\\x7f-\\x9f]*$"});
    let email = json!({"type": "string", "maxLength": 254, "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]*@[^\\x00-\\x1f\\x7f-\\x9f]*$"});
    let ts = json!({"type": "integer", "description": "Unix seconds"});
    let scope = json!({"type": "string", "enum": ["org", "project", "user", "key"]});
    let period = json!({"type": "string", "enum": ["daily", "weekly", "monthly", "total"]});
    let mode = json!({"type": "string", "enum": ["enforce", "shadow"]});
    let rate = json!({"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$",
                      "description": "USD per 1M tokens (decimal string); refused when off by 10^6"});
    let opt_id = nullable(&id);
    let opt_str = nullable(&json!({"type": "string"}));
    let opt_rate = nullable(&rate);
    let tier_rates = json!({"type": "object", "additionalProperties": false,
        "properties": {"input_per_million": opt_rate, "output_per_million": opt_rate,
            "cache_read_per_million": opt_rate, "cache_write_5m_per_million": opt_rate}});
    let fee =
        json!({"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$", "description": "USD per call"});
    json!({
        "Problem": {"type": "object", "required": ["type", "title", "status", "detail"], "properties": {
            "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
            "detail": {"type": "string"}, "field": {"type": "string", "description": "The field at fault"}}},
        "NewOrg": {"type": "object", "required": ["name"], "additionalProperties": false,
            "properties": {"id": opt_id, "name": name}},
        "OrgPatch": {"type": "object", "required": ["name"], "additionalProperties": false,
            "properties": {"name": name}},
        "Org": {"type": "object", "properties": {"id": id, "name": name, "created_at": ts}},
        "NewProject": {"type": "object", "required": ["org_id", "name"], "additionalProperties": false,
            "properties": {"id": opt_id, "org_id": id, "name": name}},
        "Project": {"type": "object", "properties": {"id": id, "org_id": id, "name": name, "created_at": ts}},
        "NewUser": {"type": "object", "required": ["org_id", "name"], "additionalProperties": false,
            "properties": {"id": opt_id, "org_id": id, "name": name, "email": nullable(&email)}},
        "User": {"type": "object", "properties": {"id": id, "org_id": id, "name": name, "email": {"type": ["string", "null"]}, "created_at": ts}},
        "NewKey": {"type": "object", "required": ["name", "org_id"], "additionalProperties": false,
            "properties": {"name": name, "org_id": id, "project_id": opt_id, "user_id": opt_id}},
        "Key": {"type": "object", "properties": {"id": {"type": "string"}, "prefix": {"type": "string"},
            "name": name, "org_id": id, "project_id": {"type": ["string", "null"]}, "user_id": {"type": ["string", "null"]},
            "created_at": ts, "revoked_at": {"type": ["integer", "null"]}}},
        "CreatedKey": {"allOf": [schema("Key"), {"type": "object", "properties": {"secret": {"type": "string", "description": "tg-…; shown once"}}}]},
        "NewBudget": {"type": "object", "required": ["scope", "scope_id", "period", "limit_usd"], "additionalProperties": false,
            "properties": {"allow_unregistered": {"type": "boolean", "description": "create it although no such org/project/user/key is registered (a principal named by a trusted header)"}, "scope": scope, "scope_id": scope_id, "period": period,
                "timezone": {"type": "string", "description": "IANA zone, default UTC"},
                "limit_usd": money(), "soft_limit_usd": nullable(&money()), "mode": mode}},
        "BudgetPatch": {"type": "object", "additionalProperties": false,
            "properties": {"period": period, "timezone": {"type": "string"}, "limit_usd": money(),
                "soft_limit_usd": {"oneOf": [money(), {"type": "null"}]}, "mode": mode}},
        "Budget": {"type": "object", "properties": {"id": {"type": "string"}, "scope": scope, "scope_id": {"type": "string"},
            "period": period, "timezone": {"type": "string"}, "limit_usd": money(), "soft_limit_usd": money(),
            "mode": mode, "created_at": ts, "updated_at": ts, "window_start": ts, "window_end": ts, "spent_usd": money()}},
        "PriceInput": {"type": "object", "required": ["input_per_million", "output_per_million"], "additionalProperties": false,
            "properties": {"model": opt_str, "provider": opt_str,
                "kind": {"type": "string", "enum": ["chat", "completion", "responses", "embedding"]},
                "input_per_million": rate, "output_per_million": rate, "cache_read_per_million": opt_rate,
                "cache_write_5m_per_million": opt_rate, "cache_write_1h_per_million": opt_rate, "reasoning_per_million": opt_rate,
                "tiers": {"type": "array", "items": {"type": "object", "required": ["above_prompt_tokens", "input_per_million"],
                    "additionalProperties": false,
                    "properties": {"above_prompt_tokens": {"type": "integer", "minimum": 0}, "inclusive": {"type": "boolean"},
                        "input_per_million": rate, "output_per_million": opt_rate, "cache_read_per_million": opt_rate,
                        "cache_write_5m_per_million": opt_rate, "cache_write_1h_per_million": opt_rate}}},
                "max_output_tokens": nullable(&json!({"type": "integer", "minimum": 0})), "effective_from": nullable(&ts),
                "input_audio_per_million": opt_rate, "output_audio_per_million": opt_rate,
                "service_tiers": {"type": "object", "additionalProperties": false,
                    "description": "rates of the tiers that bill differently; each given rate replaces the standard one",
                    "properties": {"priority": tier_rates, "flex": tier_rates}},
                "web_search_per_call": nullable(&json!({"type": "object", "required": ["low", "medium", "high"],
                    "additionalProperties": false, "description": "USD per web search by context size, at most 1",
                    "properties": {"low": fee, "medium": fee, "high": fee}}))}},
        "Price": {"type": "object", "properties": {"model": {"type": "string"}, "revision": {"type": "integer"},
            "effective_from": ts, "source": {"type": "string"}, "created_at": ts, "deleted": {"type": "boolean"},
            "provider": {"type": "string"}, "kind": {"type": "string"}, "rates": {"type": "object"},
            "tiers": {"type": "array"}, "ranges": {"type": "array"}, "max_output_tokens": {"type": "integer"},
            "service_tiers": {"type": "object"}, "web_search_per_call": {"type": "object"}}},
        "LiteLlmMap": {"type": "object", "description": "LiteLLM's model_prices_and_context_window.json"},
        "ImportReport": {"type": "object", "properties": {"imported": {"type": "integer"}, "unchanged": {"type": "integer"},
            "skipped": {"type": "array", "items": {"type": "object", "properties": {"model": {"type": "string"}, "reason": {"type": "string"}}}}}},
        "UsageBatch": {"type": "object", "required": ["events"], "description": "tollgate_core::event::UsageBatch",
            "properties": {"events": {"type": "array", "maxItems": 10000, "items": {"type": "object"}},
                "reporter_secret": {"type": ["string", "null"], "description": "The posting reporter's secret (tgr-…), when the bearer is the data-plane token: the filter sends it in the body because Envoy logs headers"}}},
        "UsageAck": {"type": "object", "properties": {"accepted": {"type": "integer"}, "duplicate": {"type": "integer"},
            "conflict": {"type": "integer", "description": "events refused: id stored with different content"}}},
        "EnrollRequest": {"type": "object", "additionalProperties": false,
            "properties": {"node": nullable(&json!({"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9._:-]+$"}))}},
        "Enrolled": {"type": "object", "required": ["reporter", "secret"],
            "properties": {"reporter": {"type": "string"}, "secret": {"type": "string", "description": "tgr-…, shown once"}}},
        "LedgerEvents": {"type": "array", "items": {"type": "object", "properties": {
            "id": {"type": "string"}, "reporter": {"type": "string"}, "seq": {"type": "integer"}, "ts": ts,
            "org_id": {"type": "string"}, "project_id": nullable(&json!({"type": "string"})),
            "user_id": nullable(&json!({"type": "string"})), "key_id": nullable(&json!({"type": "string"})),
            "model": {"type": "string"}, "requested_model": nullable(&json!({"type": "string"})),
            "api": {"type": "string"}, "charge": {"type": "string"}, "uncharged": nullable(&json!({"type": "string"})),
            "status": {"type": "integer"}, "price_version": {"type": "integer"}, "input_tokens": {"type": "integer"},
            "output_tokens": {"type": "integer"}, "cost_usd": money(),
            "cost_check": nullable(&json!({"type": "string", "enum": ["match", "mismatch", "unchecked"]})),
            "received_at": ts}}},
        "Snapshot": {"type": "object", "description": "tollgate_core::snapshot::Snapshot",
            "properties": {"version": {"type": "integer"}, "generated_at": ts, "prices": {"type": "object"},
                "budgets": {"type": "array"}, "keys": {"type": "array"}, "reporters": {"type": "object"}}},
        "SpendReport": {"type": "object", "properties": {"rows": {"type": "array", "items": {"type": "object", "properties": {
            "group": {"type": "object"}, "requests": {"type": "integer"}, "input_tokens": {"type": "integer"},
            "output_tokens": {"type": "integer"}, "cost_usd": money()}}}, "requests": {"type": "integer"}, "total_usd": money()}},
        "QuoteRequest": {"type": "object", "required": ["model", "usage"], "additionalProperties": false,
            "properties": {"model": {"type": "string"}, "provider": opt_str,
                "usage": {"type": "object", "description": "Tollgate's usage or a provider's usage object"}}},
        "Quote": {"type": "object", "properties": {"model": {"type": "string"}, "priced_as": {"type": "string"},
            "price_version": {"type": "integer"}, "usage": {"type": "object"}, "cost": {"type": "object"}, "total_usd": money()}}
    })
}

/// The whole document.
pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for op in OPS {
        let entry = paths
            .entry(openapi_path(op.path))
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(obj) = entry.as_object_mut() {
            obj.insert(op.method.to_lowercase(), operation(op));
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Tollgate control plane",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Budgets, prices, virtual keys and the usage ledger; the snapshot the Envoy filter enforces from. Money is USD as decimal strings. Errors are RFC 9457 problem documents."
        },
        "components": {
            "securitySchemes": {
                "admin": {"type": "http", "scheme": "bearer", "description": "TOLLGATE_ADMIN_TOKEN"},
                "dataplane": {"type": "http", "scheme": "bearer", "description": "TOLLGATE_DATAPLANE_TOKEN"},
                "reporter": {"type": "http", "scheme": "bearer", "description": "A reporter secret (tgr-…) from POST /v1/reporters"}
            },
            "schemas": schemas()
        },
        "paths": paths
    })
}
