//! The HTTP API for the utility's systems (bearer tokens) and the routes' OpenAPI document.
//!
//! Every route but the OpenAPI document wants a configured bearer token whose scope covers the
//! route ([`required_scope`]): `read` every GET but the audit, `recharge` also recharges and
//! vouchers, `admin` everything. Each write that commits is recorded in the audit with the
//! token's name, in the write's own transaction.
//!
//! Handlers only parse, call one `Central` operation in one transaction, and map the result:
//! refused input is a 4xx with a JSON `{"error": "..."}` that says what to fix, and nothing is
//! written. The OpenAPI document is `docs/openapi.json`, served as is; a test keeps it and
//! [`ROUTES`] in step.
use super::accounts::{self, Account, AccountView, Meter, RechargeRequest};
use super::audit::{self, AuditEntry};
use super::config::{ApiToken, Scope};
use super::decisions::{self, Decision};
use super::energy_audit::{self, AuditDay, DayRange, VillageLoss};
use super::events;
use super::holds::{self, BreakerHold, PolicyHold, Publish};
use super::technicians::{self, Technician, TechnicianAction, TechnicianChange};
use super::vouchers::{self, IssueRequest};
use super::{Central, CentralError};
use axum::extract::rejection::JsonRejection;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Extension;
use axum::{Json, Router};
use chrono::{DateTime, Duration, Utc};
use gramgrid_core::tariff::TariffVersion;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The OpenAPI document, as kept in docs/.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// Largest request body an API route takes (the biggest real one, a policy with years of
/// holidays, is a few kilobytes); a larger one is answered 413 with this limit.
pub const MAX_API_BODY_BYTES: usize = 256 * 1024;

/// Every API route (method, path), as documented in [`OPENAPI`].
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/api/v1/openapi.json"),
    ("get", "/api/v1/accounts"),
    ("post", "/api/v1/accounts"),
    ("put", "/api/v1/accounts/{id}"),
    ("get", "/api/v1/accounts/{id}/balance"),
    ("get", "/api/v1/meters"),
    ("post", "/api/v1/meters"),
    ("put", "/api/v1/meters/{serial}"),
    ("post", "/api/v1/recharges"),
    ("post", "/api/v1/adjustments"),
    ("post", "/api/v1/emergency-credits"),
    ("post", "/api/v1/vouchers"),
    ("post", "/api/v1/vouchers/redeem"),
    ("post", "/api/v1/vouchers/{id}/cancel"),
    ("get", "/api/v1/voucher-keys"),
    ("post", "/api/v1/voucher-keys/rotate"),
    ("post", "/api/v1/voucher-keys/{id}/revoke"),
    ("post", "/api/v1/tariffs"),
    ("put", "/api/v1/policy"),
    ("get", "/api/v1/flags"),
    ("get", "/api/v1/readings.csv"),
    ("get", "/api/v1/accounts/{id}/statement"),
    ("get", "/api/v1/accounts/{id}/bill"),
    ("get", "/api/v1/accounts/{id}/bill.html"),
    ("get", "/api/v1/audit"),
    ("get", "/api/v1/accounts/{id}/decisions"),
    ("get", "/api/v1/accounts/{id}/messages"),
    ("put", "/api/v1/accounts/{id}/protection"),
    ("put", "/api/v1/accounts/{id}/sanctioned-load"),
    ("delete", "/api/v1/accounts/{id}/sanctioned-load"),
    ("delete", "/api/v1/accounts/{id}/protection"),
    ("post", "/api/v1/accounts/{id}/arrears"),
    ("get", "/api/v1/gateways/{id}/holds"),
    ("post", "/api/v1/gateways/{id}/holds/{hold}/release"),
    ("get", "/api/v1/policy/holds"),
    ("post", "/api/v1/policy/holds/{id}/release"),
    ("get", "/api/v1/technicians"),
    ("put", "/api/v1/technicians/{name}"),
    ("get", "/api/v1/technician-actions"),
    ("get", "/api/v1/meters/{serial}/events"),
    ("get", "/api/v1/outages"),
    ("get", "/api/v1/energy-audits"),
    ("get", "/api/v1/energy-audits/villages"),
    ("post", "/api/v1/accounts/{id}/consumer-link"),
];

/// The routes (besides every GET) a `recharge` token may call; every other write needs `admin`.
const RECHARGE_ROUTES: &[&str] = &[
    "/api/v1/recharges",
    "/api/v1/vouchers",
    "/api/v1/vouchers/redeem",
    "/api/v1/vouchers/{id}/cancel",
];

/// The GET routes only an `admin` token may call: the audit names the tokens and what they did.
const ADMIN_READ_ROUTES: &[&str] = &["/api/v1/audit"];

/// The scope a route (its path template, as in [`ROUTES`]) needs: `read` for every GET but the
/// audit, `recharge` for recharges and vouchers, `admin` for the audit and every other write (and
/// for anything unknown).
pub fn required_scope(method: &Method, route: &str) -> Scope {
    if ADMIN_READ_ROUTES.contains(&route) {
        Scope::Admin
    } else if method == Method::GET || method == Method::HEAD {
        Scope::Read
    } else if RECHARGE_ROUTES.contains(&route) {
        Scope::Recharge
    } else {
        Scope::Admin
    }
}

/// A central error as an HTTP answer.
#[derive(Debug)]
pub struct ApiError(pub CentralError);

impl From<CentralError> for ApiError {
    fn from(error: CentralError) -> ApiError {
        ApiError(error)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> ApiError {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError(CentralError::TooLarge(format!(
                "the request body is larger than the {MAX_API_BODY_BYTES} bytes an API request may have"
            )));
        }
        ApiError(CentralError::Invalid(format!(
            "the request body is not what this endpoint takes ({}); see /api/v1/openapi.json",
            rejection.body_text()
        )))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        use super::db::DbError;
        let status = match &self.0 {
            CentralError::Invalid(_) => StatusCode::BAD_REQUEST,
            CentralError::NotFound(_) => StatusCode::NOT_FOUND,
            CentralError::Conflict(_) | CentralError::Db(DbError::Unique(_)) => {
                StatusCode::CONFLICT
            }
            CentralError::Forbidden(_) => StatusCode::FORBIDDEN,
            CentralError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            CentralError::Voucher(_) | CentralError::Rating(_) => StatusCode::UNPROCESSABLE_ENTITY,
            CentralError::Db(_) | CentralError::Corrupt(_) | CentralError::Secrets(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let message = if status.is_server_error() {
            let id = match &self.0 {
                CentralError::Db(DbError::Panicked { id }) => id.clone(),
                _ => uuid::Uuid::new_v4().simple().to_string(),
            };
            tracing::error!(error_id = %id, error = %self.0, "request failed");
            format!("the central server could not complete this request (error id {id}); it was not applied, retry later")
        } else {
            self.0.to_string()
        };
        (status, Json(serde_json::json!({ "error": message }))).into_response()
    }
}

type Shared = State<Arc<Central>>;
type ApiResult<T> = Result<T, ApiError>;

/// The API router (the sync endpoint is routed by the server, behind client certificates).
pub fn router(central: Arc<Central>) -> Router {
    let api = Router::new()
        .route("/api/v1/accounts", get(list_accounts).post(create_account))
        .route("/api/v1/accounts/{id}", put(update_account))
        .route("/api/v1/accounts/{id}/balance", get(balance))
        .route("/api/v1/meters", get(list_meters).post(create_meter))
        .route("/api/v1/meters/{serial}", put(update_meter))
        .route("/api/v1/recharges", post(recharge))
        .route("/api/v1/adjustments", post(adjustment))
        .route("/api/v1/emergency-credits", post(emergency_credit))
        .route("/api/v1/vouchers", post(issue_voucher))
        .route("/api/v1/vouchers/redeem", post(redeem_voucher))
        .route("/api/v1/vouchers/{id}/cancel", post(cancel_voucher))
        .route("/api/v1/voucher-keys", get(voucher_keys))
        .route("/api/v1/voucher-keys/rotate", post(rotate_keys))
        .route("/api/v1/voucher-keys/{id}/revoke", post(revoke_key))
        .route("/api/v1/tariffs", post(publish_tariff))
        .route("/api/v1/policy", put(publish_policy))
        .route("/api/v1/flags", get(flags))
        .route("/api/v1/readings.csv", get(readings_csv))
        .route("/api/v1/accounts/{id}/statement", get(statement))
        .route("/api/v1/accounts/{id}/bill", get(bill))
        .route("/api/v1/accounts/{id}/bill.html", get(bill_html))
        .route("/api/v1/audit", get(audit_log))
        .route("/api/v1/accounts/{id}/decisions", get(account_decisions))
        .route("/api/v1/accounts/{id}/messages", get(account_messages))
        .route(
            "/api/v1/accounts/{id}/sanctioned-load",
            put(set_sanctioned_load).delete(forget_sanctioned_load),
        )
        .route(
            "/api/v1/accounts/{id}/protection",
            put(protect_account).delete(unprotect_account),
        )
        .route("/api/v1/accounts/{id}/arrears", post(arrears))
        .route("/api/v1/gateways/{id}/holds", get(gateway_holds))
        .route(
            "/api/v1/gateways/{id}/holds/{hold}/release",
            post(release_gateway_hold),
        )
        .route("/api/v1/policy/holds", get(policy_holds))
        .route(
            "/api/v1/policy/holds/{id}/release",
            post(release_policy_hold),
        )
        .route("/api/v1/technicians", get(list_technicians))
        .route("/api/v1/technicians/{name}", put(set_technician))
        .route("/api/v1/technician-actions", get(technician_actions))
        .route("/api/v1/meters/{serial}/events", get(meter_events))
        .route("/api/v1/outages", get(outages))
        .route("/api/v1/energy-audits", get(energy_audits))
        .route("/api/v1/energy-audits/villages", get(energy_audit_villages))
        .route("/api/v1/accounts/{id}/consumer-link", post(consumer_link))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&central),
            require_token,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_API_BODY_BYTES));
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .merge(api)
        .with_state(central)
}

/// The token a request was accepted with, and the request the audit records for a write.
#[derive(Debug, Clone)]
struct Caller {
    token: String,
    method: String,
    path: String,
}

/// Accepts a request only with `Authorization: Bearer T` for a configured token T (compared in
/// constant time; tokens are never logged) whose scope covers the route: 401 without a known
/// token, 403 when its scope is too narrow. The accepted request carries its [`Caller`].
async fn require_token(State(central): Shared, mut request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let Some(token) = find_token(&central.config().api_tokens, presented) else {
        return unauthorized();
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str());
    let needed = required_scope(request.method(), route.unwrap_or(""));
    if !token.scope.allows(needed) {
        return forbidden(token, needed);
    }
    let caller = Caller {
        token: token.name.clone(),
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// The configured token equal to `presented`; every token is compared, each in constant time.
fn find_token<'a>(tokens: &'a [ApiToken], presented: &str) -> Option<&'a ApiToken> {
    let mut found = None;
    for token in tokens {
        if bool::from(token.token.as_bytes().ct_eq(presented.as_bytes())) {
            found = Some(token);
        }
    }
    found.filter(|_| !presented.is_empty())
}

fn unauthorized() -> Response {
    let body = Json(serde_json::json!({
        "error": "missing or unknown bearer token: send Authorization: Bearer TOKEN with a token from the central config's api_tokens"
    }));
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        body,
    )
        .into_response()
}

fn forbidden(token: &ApiToken, needed: Scope) -> Response {
    let body = Json(serde_json::json!({
        "error": format!(
            "this route needs a token of scope '{needed}', but token '{}' has scope '{}': use a token with that scope (api_tokens in the central config)",
            token.name, token.scope
        ),
        "needed_scope": needed,
        "token_scope": token.scope,
    }));
    (StatusCode::FORBIDDEN, body).into_response()
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

async fn run<T: Send + 'static>(
    central: &Central,
    f: impl FnOnce(&mut dyn super::db::Tx) -> super::Result<T> + Send + 'static,
) -> ApiResult<T> {
    Ok(central.db().transaction(f).await?)
}

/// As [`run`], for a write: the audit row naming the caller's token goes in the same transaction.
async fn write<T: Send + 'static>(
    central: &Central,
    caller: Caller,
    f: impl FnOnce(&mut dyn super::db::Tx) -> super::Result<T> + Send + 'static,
) -> ApiResult<T> {
    let now = central.now();
    run(central, move |tx| {
        let done = f(tx)?;
        audit::record(tx, &caller.token, &caller.method, &caller.path, now)?;
        Ok(done)
    })
    .await
}

type Who = Extension<Caller>;

async fn list_accounts(State(central): Shared) -> ApiResult<Json<Vec<AccountView>>> {
    Ok(Json(run(&central, accounts::list_accounts).await?))
}

async fn create_account(
    State(central): Shared,
    Extension(caller): Who,
    body: Result<Json<Account>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Account>)> {
    let Json(account) = body?;
    let stored = write(&central, caller, move |tx| {
        accounts::put_account(tx, &account, false)?;
        accounts::account(tx, &account.id)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(stored)))
}

/// Fields of an account that can change.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountUpdate {
    consumer_name: String,
    category: gramgrid_core::tariff::Category,
    #[serde(default)]
    phone: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
    /// Unchanged when absent.
    #[serde(default)]
    language: Option<gramgrid_core::message::Language>,
}

async fn update_account(
    State(central): Shared,
    Extension(caller): Who,
    Path(id): Path<String>,
    body: Result<Json<AccountUpdate>, JsonRejection>,
) -> ApiResult<Json<Account>> {
    let Json(update) = body?;
    let now = central.now();
    Ok(Json(
        write(&central, caller, move |tx| {
            let current = accounts::account(tx, &id)?;
            let previous = current.gateway.clone();
            let account = Account {
                consumer_name: update.consumer_name,
                category: update.category,
                phone: update.phone,
                gateway: update.gateway,
                language: update.language.unwrap_or(current.language),
                ..current
            };
            accounts::put_account(tx, &account, true)?;
            if let Some(previous) = previous.filter(|p| account.gateway.as_ref() != Some(p)) {
                accounts::note_move(tx, &id, &previous, now)?;
            }
            accounts::account(tx, &id)
        })
        .await?,
    ))
}

async fn balance(
    State(central): Shared,
    Path(id): Path<String>,
) -> ApiResult<Json<accounts::Balance>> {
    let stale_after = Duration::from_std(central.config().stale_after).unwrap_or(Duration::MAX);
    let now = central.now();
    let book = central.tariff_book();
    Ok(Json(
        run(&central, move |tx| {
            accounts::balance(tx, &id, now, stale_after, &book)
        })
        .await?,
    ))
}

async fn list_meters(State(central): Shared) -> ApiResult<Json<Vec<Meter>>> {
    Ok(Json(run(&central, accounts::list_meters).await?))
}

async fn create_meter(
    State(central): Shared,
    Extension(caller): Who,
    body: Result<Json<Meter>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Meter>)> {
    let Json(meter) = body?;
    let echo = meter.clone();
    write(&central, caller, move |tx| {
        accounts::put_meter(tx, &meter, false)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(echo)))
}

async fn update_meter(
    State(central): Shared,
    Extension(caller): Who,
    Path(serial): Path<String>,
    body: Result<Json<Meter>, JsonRejection>,
) -> ApiResult<Json<Meter>> {
    let Json(meter) = body?;
    if meter.serial != serial {
        return Err(CentralError::Invalid(format!(
            "the body's serial '{}' is not the path's '{serial}'",
            meter.serial
        ))
        .into());
    }
    let echo = meter.clone();
    write(&central, caller, move |tx| {
        accounts::put_meter(tx, &meter, true)
    })
    .await?;
    Ok(Json(echo))
}

/// 201 for a new money event, 200 for a repeat of an idempotency key.
fn receipt(receipt: accounts::RechargeReceipt) -> Response {
    let status = if receipt.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (status, Json(receipt)).into_response()
}

async fn recharge(
    State(central): Shared,
    Extension(caller): Who,
    body: Result<Json<RechargeRequest>, JsonRejection>,
) -> ApiResult<Response> {
    let Json(request) = body?;
    let now = central.now();
    Ok(receipt(
        write(&central, caller, move |tx| {
            accounts::recharge(tx, &request, now)
        })
        .await?,
    ))
}

async fn adjustment(
    State(central): Shared,
    Extension(caller): Who,
    body: Result<Json<accounts::AdjustmentRequest>, JsonRejection>,
) -> ApiResult<Response> {
    let Json(request) = body?;
    let now = central.now();
    Ok(receipt(
        write(&central, caller, move |tx| {
            accounts::adjust(tx, &request, now)
        })
        .await?,
    ))
}

async fn emergency_credit(
    State(central): Shared,
    Extension(caller): Who,
    body: Result<Json<accounts::EmergencyCreditRequest>, JsonRejection>,
) -> ApiResult<Response> {
    let Json(request) = body?;
    let now = central.now();
    Ok(receipt(
        write(&central, caller, move |tx| {
            accounts::emergency_credit(tx, &request, now)
        })
        .await?,
    ))
}

async fn issue_voucher(
    State(central): Shared,
    Extension(caller): Who,
    body: Result<Json<IssueRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<vouchers::IssuedVoucher>)> {
    let Json(request) = body?;
    let now = central.now();
    let issued = write(&central, caller, move |tx| {
        vouchers::issue(tx, &request, now)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(issued)))
}

/// A voucher code typed in at a counter.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedeemRequest {
    code: String,
}

async fn redeem_voucher(
    State(central): Shared,
    Extension(caller): Who,
    body: Result<Json<RedeemRequest>, JsonRejection>,
) -> ApiResult<Json<gramgrid_core::ledger::LedgerEvent>> {
    let Json(request) = body?;
    let now = central.now();
    Ok(Json(
        write(&central, caller, move |tx| {
            vouchers::redeem_at_central(tx, &request.code, now)
        })
        .await?,
    ))
}

async fn cancel_voucher(
    State(central): Shared,
    Extension(caller): Who,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    write(&central, caller, move |tx| vouchers::cancel(tx, &id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn voucher_keys(
    State(central): Shared,
) -> ApiResult<Json<Vec<gramgrid_proto::voucher::PublishedKey>>> {
    Ok(Json(run(&central, super::downlink::published_keys).await?))
}

#[derive(Debug, Serialize)]
struct Rotated {
    key_id: u16,
}

async fn rotate_keys(State(central): Shared, Extension(caller): Who) -> ApiResult<Json<Rotated>> {
    let now = central.now();
    let key_id = write(&central, caller, move |tx| vouchers::rotate(tx, now)).await?;
    Ok(Json(Rotated { key_id }))
}

async fn revoke_key(
    State(central): Shared,
    Extension(caller): Who,
    Path(id): Path<String>,
) -> ApiResult<Json<vouchers::Revoked>> {
    let key_id: u16 = id.parse().map_err(|_| {
        CentralError::Invalid(format!(
            "voucher key id '{id}' is not a number from 1 to 65535 (see GET /api/v1/voucher-keys)"
        ))
    })?;
    let now = central.now();
    Ok(Json(
        write(&central, caller, move |tx| {
            vouchers::revoke_key(tx, key_id, now)
        })
        .await?,
    ))
}

/// `?since=&limit=` (RFC 3339 time, default: the beginning; 1 to 1000 rows, default 100).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    since: Option<chrono::DateTime<Utc>>,
    limit: Option<i64>,
}

async fn audit_log(
    State(central): Shared,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<AuditEntry>>> {
    let Query(query) = query.map_err(|e| {
        CentralError::Invalid(format!(
            "{}; use ?since=2026-11-01T00:00:00Z&limit=100",
            e.body_text()
        ))
    })?;
    let since = query.since.unwrap_or(chrono::DateTime::UNIX_EPOCH);
    let limit = query.limit.unwrap_or(100);
    Ok(Json(
        run(&central, move |tx| audit::list(tx, since, limit)).await?,
    ))
}

async fn publish_tariff(
    State(central): Shared,
    Extension(caller): Who,
    body: Result<Json<TariffVersion>, JsonRejection>,
) -> ApiResult<StatusCode> {
    let Json(version) = body?;
    let now = central.now();
    let book = write(&central, caller, move |tx| {
        accounts::publish_tariff(tx, &version, now)
    })
    .await?;
    central.set_tariff_book(book);
    Ok(StatusCode::CREATED)
}

async fn flags(State(central): Shared) -> ApiResult<Json<Vec<crate::flags::Flag>>> {
    Ok(Json(
        run(&central, |tx| {
            crate::flags::list(tx, crate::flags::Which::All)
        })
        .await?,
    ))
}

/// A policy version to publish.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyRequest {
    version: u64,
    policy: gramgrid_core::policy::PolicyConfig,
}

/// 201 when published; 409 with the hold (`hold_id`, each gateway's count and limit) when
/// central's breaker held it. The hold is stored (and audited) either way.
async fn publish_policy(
    State(central): Shared,
    Extension(caller): Who,
    body: Result<Json<PolicyRequest>, JsonRejection>,
) -> ApiResult<Response> {
    let Json(request) = body?;
    let now = central.now();
    let by = caller.token.clone();
    let published = write(&central, caller, move |tx| {
        holds::publish_policy(tx, request.version, &request.policy, &by, now)
    })
    .await?;
    Ok(match published {
        Publish::Published => StatusCode::CREATED.into_response(),
        Publish::Held(hold) => {
            let body = serde_json::json!({
                "error": hold.explain(),
                "hold_id": hold.id,
                "version": hold.version,
                "gateways": hold.gateways,
            });
            (StatusCode::CONFLICT, Json(body)).into_response()
        }
    })
}

async fn policy_holds(State(central): Shared) -> ApiResult<Json<Vec<PolicyHold>>> {
    Ok(Json(run(&central, holds::policy_holds).await?))
}

/// A reason given for a protection or a release.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reason {
    reason: String,
}

async fn release_policy_hold(
    State(central): Shared,
    Extension(caller): Who,
    Path(id): Path<String>,
    body: Result<Json<Reason>, JsonRejection>,
) -> ApiResult<Json<PolicyHold>> {
    let Json(body) = body?;
    let now = central.now();
    let by = caller.token.clone();
    Ok(Json(
        write(&central, caller, move |tx| {
            holds::release_policy_hold(tx, &id, &by, &body.reason, now)
        })
        .await?,
    ))
}

async fn gateway_holds(
    State(central): Shared,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<BreakerHold>>> {
    Ok(Json(
        run(&central, move |tx| holds::breaker_holds(tx, Some(&id))).await?,
    ))
}

async fn release_gateway_hold(
    State(central): Shared,
    Extension(caller): Who,
    Path((gateway, hold)): Path<(String, String)>,
    body: Result<Json<Reason>, JsonRejection>,
) -> ApiResult<Json<BreakerHold>> {
    let Json(body) = body?;
    let now = central.now();
    let by = caller.token.clone();
    Ok(Json(
        write(&central, caller, move |tx| {
            holds::release_breaker_hold(tx, &gateway, &hold, &by, &body.reason, now)
        })
        .await?,
    ))
}

async fn protect_account(
    State(central): Shared,
    Extension(caller): Who,
    Path(id): Path<String>,
    body: Result<Json<Reason>, JsonRejection>,
) -> ApiResult<Json<AccountView>> {
    let Json(body) = body?;
    Ok(Json(
        write(&central, caller, move |tx| {
            accounts::set_protection(tx, &id, Some(&body.reason))
        })
        .await?,
    ))
}

/// A sanctioned load as the office enters it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SanctionedLoad {
    watts: i64,
}

async fn set_sanctioned_load(
    State(central): Shared,
    Extension(caller): Who,
    Path(id): Path<String>,
    body: Result<Json<SanctionedLoad>, JsonRejection>,
) -> ApiResult<Json<AccountView>> {
    let Json(body) = body?;
    Ok(Json(
        write(&central, caller, move |tx| {
            accounts::set_sanctioned_load(tx, &id, Some(body.watts))
        })
        .await?,
    ))
}

async fn forget_sanctioned_load(
    State(central): Shared,
    Extension(caller): Who,
    Path(id): Path<String>,
) -> ApiResult<Json<AccountView>> {
    Ok(Json(
        write(&central, caller, move |tx| {
            accounts::set_sanctioned_load(tx, &id, None)
        })
        .await?,
    ))
}

async fn unprotect_account(
    State(central): Shared,
    Extension(caller): Who,
    Path(id): Path<String>,
) -> ApiResult<Json<AccountView>> {
    Ok(Json(
        write(&central, caller, move |tx| {
            accounts::set_protection(tx, &id, None)
        })
        .await?,
    ))
}

async fn arrears(
    State(central): Shared,
    Extension(caller): Who,
    Path(id): Path<String>,
    body: Result<Json<accounts::ArrearsRequest>, JsonRejection>,
) -> ApiResult<Response> {
    let Json(request) = body?;
    let now = central.now();
    Ok(receipt(
        write(&central, caller, move |tx| {
            accounts::record_arrears(tx, &id, &request, now)
        })
        .await?,
    ))
}

/// `?at=&limit=` (RFC 3339 time: the decision in force then; default: the latest `limit`, 1 to
/// 1000, default 100).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionsQuery {
    at: Option<chrono::DateTime<Utc>>,
    limit: Option<i64>,
}

async fn account_decisions(
    State(central): Shared,
    Path(id): Path<String>,
    query: Result<Query<DecisionsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<Decision>>> {
    let Query(query) = query.map_err(|e| {
        CentralError::Invalid(format!(
            "{}; use ?at=2026-11-30T11:00:00Z or ?limit=100",
            e.body_text()
        ))
    })?;
    let limit = query.limit.unwrap_or(DEFAULT_DECISIONS_LIMIT);
    Ok(Json(
        run(&central, move |tx| {
            decisions::of_account(tx, &id, query.at, limit)
        })
        .await?,
    ))
}

/// `?limit=` (1 to 1000, default 100).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitQuery {
    limit: Option<i64>,
}

async fn account_messages(
    State(central): Shared,
    Path(id): Path<String>,
    query: Result<Query<LimitQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<super::notify::MessageRecord>>> {
    let Query(query) =
        query.map_err(|e| CentralError::Invalid(format!("{}; use ?limit=100", e.body_text())))?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(CentralError::Invalid(format!("limit={limit}: give 1 to 1000")).into());
    }
    Ok(Json(
        run(&central, move |tx| {
            super::notify::account_messages(tx, &id, limit)
        })
        .await?,
    ))
}

/// Decisions one listing returns when the request does not say.
const DEFAULT_DECISIONS_LIMIT: i64 = 100;

/// `?meter=&from=&to=&limit=&cursor=` (RFC 3339 times, default: everything; 1 to
/// [`MAX_EXPORT_LIMIT`](super::export::MAX_EXPORT_LIMIT) rows per page; the previous page's
/// `X-Next-Cursor`). `limit` is read as text so that a bad one is answered with the range.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportQuery {
    meter: Option<String>,
    from: Option<chrono::DateTime<Utc>>,
    to: Option<chrono::DateTime<Utc>>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// The response header that carries the next page's cursor.
const NEXT_CURSOR_HEADER: &str = "x-next-cursor";

async fn readings_csv(
    State(central): Shared,
    query: Result<Query<ExportQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    use super::export::{ExportCursor, ReadingsExport, DEFAULT_EXPORT_LIMIT, MAX_EXPORT_LIMIT};
    let Query(query) = query.map_err(|e| {
        CentralError::Invalid(format!(
            "{}; use ?meter=SERIAL&from=2026-11-01T00:00:00Z&to=...&limit=10000&cursor=...",
            e.body_text()
        ))
    })?;
    let limit = match query.limit.as_deref() {
        None => DEFAULT_EXPORT_LIMIT,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_EXPORT_LIMIT).contains(n))
            .ok_or_else(|| {
                CentralError::Invalid(format!(
                    "limit '{}' is not a number of rows from 1 to {MAX_EXPORT_LIMIT} (default {DEFAULT_EXPORT_LIMIT})",
                    text.chars().take(40).collect::<String>()
                ))
            })?,
    };
    let after = query
        .cursor
        .as_deref()
        .map(ExportCursor::decode)
        .transpose()?;
    let request = ReadingsExport {
        meter: query.meter.clone().filter(|m| !m.is_empty()),
        from: query.from.unwrap_or(chrono::DateTime::UNIX_EPOCH),
        to: query.to.unwrap_or(chrono::DateTime::<Utc>::MAX_UTC),
        after,
        limit,
    };
    let page = run(&central, move |tx| {
        super::export::readings_csv(tx, &request)
    })
    .await?;
    let mut response = (
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
        page.csv,
    )
        .into_response();
    if let Some(next) = page.next {
        let token = next.encode();
        // The same query with the next cursor (relative to this request's URI, RFC 8288).
        let mut params = Vec::new();
        if let Some(meter) = &query.meter {
            params.push(format!("meter={}", percent_encode(meter)));
        }
        for (name, time) in [("from", query.from), ("to", query.to)] {
            if let Some(time) = time {
                let text = time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
                params.push(format!("{name}={}", percent_encode(&text)));
            }
        }
        if query.limit.is_some() {
            params.push(format!("limit={limit}"));
        }
        params.push(format!("cursor={token}"));
        let link = format!("</api/v1/readings.csv?{}>; rel=\"next\"", params.join("&"));
        // Both are built from URL-safe characters only, so they are always valid header values;
        // were one not, the page must fail rather than look like the last one.
        let value = |text: &str| {
            header::HeaderValue::from_str(text).map_err(|_| {
                CentralError::Corrupt(format!("a next-page header is not a header value: {text}"))
            })
        };
        let headers = response.headers_mut();
        headers.insert(header::LINK, value(&link)?);
        headers.insert(NEXT_CURSOR_HEADER, value(&token)?);
    }
    Ok(response)
}

/// `text` with every byte but RFC 3986's unreserved characters percent-encoded (for a query value).
pub(crate) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `?month=YYYY-MM`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MonthQuery {
    month: String,
}

/// The month of a `?month=YYYY-MM` query (`usage` says what the route takes), or why not.
fn month_of<Q>(
    query: Result<Query<Q>, axum::extract::rejection::QueryRejection>,
    usage: &str,
    month: impl FnOnce(&Q) -> &str,
) -> Result<(Q, gramgrid_core::civil::Month), CentralError> {
    let Query(query) =
        query.map_err(|e| CentralError::Invalid(format!("{}; use {usage}", e.body_text())))?;
    let text = month(&query);
    let parsed = gramgrid_core::civil::Month::parse(text)
        .ok_or_else(|| CentralError::Invalid(format!("month '{text}' is not YYYY-MM")))?;
    Ok((query, parsed))
}

async fn statement(
    State(central): Shared,
    Path(id): Path<String>,
    query: Result<Query<MonthQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<super::export::Statement>> {
    let (_, month) = month_of(query, "?month=YYYY-MM", |q| &q.month)?;
    Ok(Json(
        run(&central, move |tx| super::export::statement(tx, &id, month)).await?,
    ))
}

async fn bill(
    State(central): Shared,
    Path(id): Path<String>,
    query: Result<Query<MonthQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<super::bill::MonthBill>> {
    let (_, month) = month_of(query, "?month=YYYY-MM", |q| &q.month)?;
    Ok(Json(
        run(&central, move |tx| super::bill::month_bill(tx, &id, month)).await?,
    ))
}

/// `?month=YYYY-MM&lang=en|hi` (English when absent).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BillPageQuery {
    month: String,
    #[serde(default)]
    lang: Option<String>,
}

async fn bill_html(
    State(central): Shared,
    Path(id): Path<String>,
    query: Result<Query<BillPageQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<maud::Markup> {
    let (query, month) = month_of(query, "?month=YYYY-MM&lang=en|hi", |q| &q.month)?;
    let code = query.lang.as_deref().unwrap_or("en");
    let lang = gramgrid_core::message::Language::parse(code)
        .ok_or_else(|| CentralError::Invalid(format!("lang '{code}' is not one of en, hi")))?;
    let bill = run(&central, move |tx| super::bill::month_bill(tx, &id, month)).await?;
    Ok(super::bill::html::render(&bill, lang))
}

async fn list_technicians(State(central): Shared) -> ApiResult<Json<Vec<Technician>>> {
    Ok(Json(run(&central, technicians::list_technicians).await?))
}

/// A technician account as `PUT /api/v1/technicians/{name}` takes it. The password is never
/// echoed, logged or printed (`Debug` leaves it out).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TechnicianBody {
    full_name: String,
    role: String,
    /// Absent: keep the current password (a new technician needs one).
    #[serde(default)]
    password: Option<String>,
    /// Absent: active.
    #[serde(default)]
    active: Option<bool>,
}

async fn set_technician(
    State(central): Shared,
    Extension(caller): Who,
    Path(name): Path<String>,
    body: Result<Json<TechnicianBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Technician>)> {
    let Json(body) = body?;
    let change = TechnicianChange {
        full_name: body.full_name,
        role: body.role,
        password: body.password,
        active: Some(body.active.unwrap_or(true)),
    };
    let now = central.now();
    let saved = write(&central, caller, move |tx| {
        technicians::set_technician(tx, &name, &change, now)
    })
    .await?;
    let status = if saved.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(saved.technician)))
}

/// `?gateway=&technician=&limit=` (only that gateway's, only that technician's; 1 to 1000 rows,
/// default 100, newest first).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TechnicianActionsQuery {
    gateway: Option<String>,
    technician: Option<String>,
    limit: Option<i64>,
}

async fn technician_actions(
    State(central): Shared,
    query: Result<Query<TechnicianActionsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<TechnicianAction>>> {
    let Query(query) = query.map_err(|e| {
        CentralError::Invalid(format!(
            "{}; use ?gateway=village-a&technician=asha.verma&limit=100",
            e.body_text()
        ))
    })?;
    let limit = query.limit.unwrap_or(100);
    Ok(Json(
        run(&central, move |tx| {
            technicians::technician_actions(
                tx,
                query.gateway.as_deref(),
                query.technician.as_deref(),
                limit,
            )
        })
        .await?,
    ))
}

/// `GET /api/v1/meters/{serial}/events?limit=`: at most `limit` (default 100), newest first.
async fn meter_events(
    State(central): Shared,
    Path(serial): Path<String>,
    query: Result<Query<LimitQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<events::MeterEventRow>>> {
    let Query(query) =
        query.map_err(|e| CentralError::Invalid(format!("{}; use ?limit=100", e.body_text())))?;
    let limit = query.limit.unwrap_or(100);
    Ok(Json(
        run(&central, move |tx| events::meter_events(tx, &serial, limit)).await?,
    ))
}

/// `GET /api/v1/outages?gateway=&since=&limit=`: outages that started at or after `since`
/// (RFC 3339; default 30 days ago), newest first.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutagesQuery {
    gateway: Option<String>,
    since: Option<DateTime<Utc>>,
    limit: Option<i64>,
}

async fn outages(
    State(central): Shared,
    query: Result<Query<OutagesQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<events::OutageRow>>> {
    let Query(query) = query.map_err(|e| {
        CentralError::Invalid(format!(
            "{}; use ?gateway=village-a&since=2026-11-01T00:00:00Z&limit=100",
            e.body_text()
        ))
    })?;
    let since = query
        .since
        .unwrap_or_else(|| central.now() - Duration::days(30));
    let limit = query.limit.unwrap_or(100);
    Ok(Json(
        run(&central, move |tx| {
            events::outages(tx, query.gateway.as_deref(), since, limit)
        })
        .await?,
    ))
}

/// `GET /api/v1/energy-audits?gateway=&from=&to=&limit=`: the audited days from `from` to `to`
/// (local days, YYYY-MM-DD; default the last 30 days), newest first.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnergyAuditsQuery {
    gateway: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<i64>,
}

async fn energy_audits(
    State(central): Shared,
    query: Result<Query<EnergyAuditsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<AuditDay>>> {
    let Query(query) = query.map_err(|e| {
        CentralError::Invalid(format!(
            "{}; use ?gateway=village-a&from=2026-11-01&to=2026-11-30&limit=100",
            e.body_text()
        ))
    })?;
    let range = audit_range(&central, query.from.as_deref(), query.to.as_deref())?;
    let limit = query.limit.unwrap_or(energy_audit::DEFAULT_AUDITS_LIMIT);
    Ok(Json(
        run(&central, move |tx| {
            energy_audit::audits(tx, query.gateway.as_deref(), range, limit)
        })
        .await?,
    ))
}

/// `GET /api/v1/energy-audits/villages?from=&to=`: each gateway's losses over the range, the
/// largest share first.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DaysQuery {
    from: Option<String>,
    to: Option<String>,
}

async fn energy_audit_villages(
    State(central): Shared,
    query: Result<Query<DaysQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<VillageLoss>>> {
    let Query(query) = query.map_err(|e| {
        CentralError::Invalid(format!(
            "{}; use ?from=2026-11-01&to=2026-11-30",
            e.body_text()
        ))
    })?;
    let range = audit_range(&central, query.from.as_deref(), query.to.as_deref())?;
    Ok(Json(
        run(&central, move |tx| energy_audit::villages(tx, range)).await?,
    ))
}

/// `POST /api/v1/accounts/{id}/consumer-link`: a new link to the household's page, sent by SMS
/// to the account's phone; answers the link too (201).
async fn consumer_link(
    State(central): Shared,
    Extension(caller): Who,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<super::consumer::ConsumerLink>)> {
    let now = central.now();
    let link = super::consumer::make_link(&central, &id, now, None)?;
    let sent = write(&central, caller, move |tx| {
        super::consumer::send_link(tx, link, now)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(sent)))
}

/// The days a request asks for, today being central's local day.
fn audit_range(central: &Central, from: Option<&str>, to: Option<&str>) -> ApiResult<DayRange> {
    let today = gramgrid_core::civil::local_date(central.now());
    Ok(DayRange::parse(from, to, today)?)
}

#[cfg(test)]
mod guardrail_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::DbError;

    #[tokio::test]
    async fn a_server_error_answers_500_with_the_error_id_the_log_has() {
        let error = CentralError::Db(DbError::Panicked { id: "0f3c".into() });
        let response = ApiError(error).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let body = String::from_utf8_lossy(&body);
        assert!(
            body.contains("error id 0f3c") && body.contains("not applied"),
            "{body}"
        );
    }

    fn method(name: &str) -> Method {
        Method::from_bytes(name.to_uppercase().as_bytes()).unwrap()
    }

    #[test]
    fn each_route_needs_the_scope_its_kind_of_work_needs() {
        let recharge = [
            "/api/v1/recharges",
            "/api/v1/vouchers",
            "/api/v1/vouchers/redeem",
            "/api/v1/vouchers/{id}/cancel",
        ];
        for (name, route) in ROUTES {
            let expected = if *route == "/api/v1/audit" {
                Scope::Admin
            } else if *name == "get" {
                Scope::Read
            } else if recharge.contains(route) {
                Scope::Recharge
            } else {
                Scope::Admin
            };
            assert_eq!(
                required_scope(&method(name), route),
                expected,
                "{name} {route}"
            );
        }
        assert_eq!(required_scope(&Method::POST, "/unknown"), Scope::Admin);
        assert_eq!(required_scope(&Method::POST, ""), Scope::Admin);
    }

    #[test]
    fn the_openapi_document_names_the_scope_of_every_route() {
        let document: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        for (name, route) in ROUTES.iter().filter(|(_, r)| *r != "/api/v1/openapi.json") {
            let documented = &document["paths"][route][name]["x-scope"];
            assert_eq!(
                documented.as_str(),
                Some(required_scope(&method(name), route).as_str()),
                "{name} {route}"
            );
        }
    }

    #[test]
    fn a_token_is_found_only_by_its_whole_secret() {
        let tokens = [
            ApiToken::new("a", "0123456789abcdef-a", Scope::Read),
            ApiToken::new("b", "0123456789abcdef-b", Scope::Admin),
        ];
        assert_eq!(find_token(&tokens, "0123456789abcdef-b").unwrap().name, "b");
        assert!(find_token(&tokens, "0123456789abcdef-").is_none());
        assert!(find_token(&tokens, "").is_none());
        assert!(find_token(&[ApiToken::new("e", "", Scope::Admin)], "").is_none());
    }
}
