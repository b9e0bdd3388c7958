//! The admin web: server-rendered French HTML (askama), usable without JavaScript.
//!
//! Every request goes through [`Auth`], which reads the session cookie and loads the user
//! from the base; every page and download then checks the role and the collectivité
//! (`may_see`). Every form carries the session's CSRF token, checked before anything
//! is done. A resource the user may not see answers 404, as if it did not exist.
//!
//! One file per area: this one holds the router, the serving of connections, the small
//! responses and the session extractor ([`Auth`]); `session.rs` the login, logout and password
//! pages; `suivi.rs` the tracking table, an import's page and its downloads; `rejets.rs` the
//! quarantine ("Rejets à traiter", correction, classement, rejeu); `essai.rs` the dry run of a
//! file ("Tester un fichier"); `admin.rs` the
//! administration pages.

// Handlers return `Response` as their error: the page to show, as axum does.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::Instant;

use askama::Template;
use axum::extract::{FromRequestParts, Multipart, Path, Query, State};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use atmp_model::Siret;
use atmp_store::{
    Autorisation, ImportLog, NewUtilisateur, Role, Scope, StoreError, SuiviQuery, Utilisateur,
};

use crate::{auth, PlatformError, Shared};

mod admin;
mod essai;
mod rejets;
mod session;
mod suivi;

use admin::*;
use session::*;
use suivi::*;

type App = Arc<Shared>;

/// Rows per page of the tracking table.
const PAGE: u64 = 20;
/// How long a session lasts.
const SESSION_HOURS: i64 = 8;
const COOKIE: &str = "atmp_session";
const LOGIN_COOKIE: &str = "atmp_connexion";

/// The web router.
pub fn router(shared: App) -> Router {
    let hsts = shared.config.web_tls;
    Router::new()
        .route("/", get(|| async { Redirect::to("/suivi") }))
        .route("/sante", get(|| async { "ok" }))
        .route("/connexion", get(login_form).post(login))
        .route("/deconnexion", post(logout))
        .route("/mot-de-passe", get(password_form).post(password_change))
        .route("/suivi", get(suivi))
        .route("/imports/{id}", get(import_page))
        .route("/imports/{id}/journaux/{log}/{kind}", get(download_log))
        .route("/imports/{id}/accuse", get(download_receipt))
        .route("/imports/{id}/rejeu", post(rejets::rejeu))
        .route(
            "/essai",
            get(essai::essai_form)
                .post(essai::essai)
                .layer(axum::extract::DefaultBodyLimit::max(
                    usize::try_from(shared.config.limits.max_file)
                        .unwrap_or(usize::MAX)
                        .saturating_add(1 << 20),
                )),
        )
        .route("/rejets", get(rejets::rejets_page))
        .route("/rejets/{id}", get(rejets::rejet_page))
        .route("/rejets/{id}/corriger", post(rejets::rejet_corriger))
        .route("/rejets/{id}/classer", post(rejets::rejet_classer))
        .route(
            "/admin/collectivites",
            get(collectivites).post(collectivite_add),
        )
        .route("/admin/collectivites/rattacher", post(collectivite_attach))
        .route(
            "/admin/collectivites/{siret}/services",
            get(services).post(service_add),
        )
        .route("/admin/emetteurs", get(emetteurs).post(emetteur_add))
        .route("/admin/emetteurs/mot-de-passe", post(emetteur_password))
        .route(
            "/admin/autorisations",
            get(autorisations).post(autorisation_set),
        )
        .route(
            "/admin/utilisateurs",
            get(utilisateurs).post(utilisateur_add),
        )
        .route("/admin/utilisateurs/actif", post(utilisateur_actif))
        .route(
            "/admin/nomenclatures",
            get(nomenclatures).post(nomenclature_load),
        )
        .route("/admin/journal", get(journal))
        .fallback(|| async { not_found() })
        .layer(axum::middleware::from_fn(move |req, next| {
            headers(req, next, hsts)
        }))
        .with_state(shared)
}

/// Security headers on every response, and the server time (`Server-Timing`) that the
/// benchmark reads.
async fn headers(
    req: axum::extract::Request,
    next: axum::middleware::Next,
    hsts: bool,
) -> Response {
    let t = Instant::now();
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    if hsts {
        // Served over HTTPS: browsers must never come back in plain HTTP.
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "app;dur={:.3}",
        t.elapsed().as_secs_f64() * 1000.0
    )) {
        h.insert("server-timing", v);
    }
    r
}

/// Serves the router on `listener`, over TLS when `tls` is given.
pub async fn serve(
    shared: App,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Result<(), PlatformError> {
    let app = router(shared);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone().layer(axum::Extension(Peer(peer)));
        tokio::spawn(async move {
            let Some(acceptor) = acceptor else {
                serve_connection(hyper_util::rt::TokioIo::new(stream), app).await;
                return;
            };
            // A browser that came in plain HTTP is sent to the HTTPS address.
            let mut first = [0u8; 1];
            match tokio::time::timeout(std::time::Duration::from_secs(10), stream.peek(&mut first))
                .await
            {
                Ok(Ok(1)) if first[0] != 0x16 => {
                    redirect_to_https(stream).await;
                    return;
                }
                Ok(Ok(1)) => {}
                _ => return,
            }
            let Ok(Ok(tls)) =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(stream))
                    .await
            else {
                return;
            };
            serve_connection(hyper_util::rt::TokioIo::new(tls), app).await;
        });
    }
}

/// How long a client may take to send a request's headers, and how long a kept-alive
/// connection may stay idle: a connection that sends nothing is closed. 20 s, or
/// `ATMP_WEB_HEADER_TIMEOUT_SECONDS` (the tests shorten it).
fn header_timeout() -> std::time::Duration {
    static T: std::sync::OnceLock<std::time::Duration> = std::sync::OnceLock::new();
    *T.get_or_init(|| {
        std::time::Duration::from_secs(
            std::env::var("ATMP_WEB_HEADER_TIMEOUT_SECONDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(20u64)
                .max(1),
        )
    })
}

/// Serves HTTP/1.1 or HTTP/2 on one connection, with the timeouts above.
async fn serve_connection<I>(io: I, app: Router)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = hyper_util::service::TowerToHyperService::new(app);
    let mut b = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    b.http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout());
    b.http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Some(header_timeout()))
        .keep_alive_timeout(header_timeout());
    let _ = b.serve_connection_with_upgrades(io, svc).await;
}

/// Answers a plain-HTTP request on the HTTPS port with a redirection to the same path over
/// HTTPS (the first byte of a TLS connection is 0x16; anything else is taken for HTTP).
async fn redirect_to_https(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 1024];
    let read = async {
        while buf.len() < 8192 && !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    if tokio::time::timeout(std::time::Duration::from_secs(10), read)
        .await
        .is_err()
    {
        return;
    }
    let text = String::from_utf8_lossy(&buf);
    let path = text
        .lines()
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .filter(|p| p.starts_with('/') && !p.contains(['\r', '\n']))
        .unwrap_or("/");
    let host = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("host").then(|| v.trim().to_string())
        })
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        });
    let response = match host {
        Some(h) => format!(
            "HTTP/1.1 301 Moved Permanently\r\nLocation: https://{h}{path}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
        None => "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
    };
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Errors and small responses

fn html(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

/// A rendered page (templates are checked at compile time).
fn render(status: StatusCode, t: &impl Template) -> Response {
    (status, html(t.render().unwrap_or_default())).into_response()
}

/// 400 when the page reports a refused change, 200 otherwise.
fn status_for(error: &Option<String>) -> StatusCode {
    if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    }
}

fn page_simple(status: StatusCode, user: Option<NavUser>, titre: &str, texte: &str) -> Response {
    let t = SimpleT {
        user,
        message: None,
        error: None,
        titre: titre.into(),
        texte: texte.into(),
    };
    render(status, &t)
}

fn not_found() -> Response {
    page_simple(
        StatusCode::NOT_FOUND,
        None,
        "Page introuvable",
        "Cette page n'existe pas ou vous n'y avez pas accès.",
    )
}

fn forbidden(user: &Auth) -> Response {
    page_simple(
        StatusCode::FORBIDDEN,
        Some(user.nav()),
        "Accès refusé",
        "Cette page est réservée aux administrateurs.",
    )
}

fn csrf_refused() -> Response {
    page_simple(
        StatusCode::FORBIDDEN,
        None,
        "Formulaire refusé",
        "Le jeton de sécurité du formulaire est absent ou périmé. Rechargez la page et recommencez.",
    )
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "web request failed");
    page_simple(
        StatusCode::INTERNAL_SERVER_ERROR,
        None,
        "Erreur interne",
        "La plate-forme n'a pas pu traiter la demande. Réessayez plus tard.",
    )
}

/// Runs a base task on the blocking pool.
async fn db<T: Send + 'static>(
    app: &App,
    f: impl FnOnce(&mut dyn atmp_store::Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Response> {
    let app = app.clone();
    tokio::task::spawn_blocking(move || app.with_store(f))
        .await
        .map_err(internal)?
        .map_err(|e| match e {
            StoreError::Invalid(m) => {
                page_simple(StatusCode::BAD_REQUEST, None, "Demande refusée", &m)
            }
            e => internal(e),
        })
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

fn set_cookie(app: &App, name: &str, value: &str, max_age: i64) -> HeaderValue {
    let secure = if app.config.web_tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .expect("cookie")
}

/// Compares two tokens in constant time.
fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && !a.is_empty()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

// ---------------------------------------------------------------------------------------
// Sessions and access

/// The logged-in user of a request.
pub struct Auth {
    pub user: Utilisateur,
    csrf: String,
    token_hash: String,
    /// Where the request comes from (for the audit trail).
    address: String,
}

/// What the layout shows of the user.
pub struct NavUser {
    login: String,
    role: &'static str,
    csrf: String,
    admin: bool,
    /// Administers collectivités (its own, or a CDG's): users and services pages.
    gestion: bool,
}

impl Auth {
    fn nav(&self) -> NavUser {
        NavUser {
            login: self.user.login.clone(),
            role: self.user.role.libelle(),
            csrf: self.csrf.clone(),
            admin: self.user.role == Role::Plateforme,
            gestion: self.user.role != Role::Collectivite,
        }
    }

    /// Whether the user administers this collectivité (its users and its services): the
    /// platform all of them, a CDG's administrator the CDG and its attached collectivités,
    /// a collectivité's administrator its own.
    fn administers(&self, c: &atmp_store::Collectivite) -> bool {
        let own = self.user.collectivite_siret.as_deref();
        match self.user.role {
            Role::Plateforme => true,
            Role::Cdg => {
                own == Some(c.siret.as_str())
                    || (own.is_some() && c.cdg_siret.as_ref().map(|s| s.as_str()) == own)
            }
            Role::CollectiviteAdmin => own == Some(c.siret.as_str()),
            Role::Collectivite => false,
        }
    }

    /// Whether the user may give `role` to a user of collectivité `c`.
    fn may_grant(&self, role: Role, c: Option<&atmp_store::Collectivite>) -> bool {
        match (self.user.role, role, c) {
            (Role::Plateforme, _, _) => true,
            (_, Role::Plateforme, _) | (_, _, None) => false,
            // A CDG administrator names other administrators of its own CDG only.
            (Role::Cdg, Role::Cdg, Some(c)) => {
                self.user.collectivite_siret.as_deref() == Some(c.siret.as_str())
            }
            (Role::Cdg, _, Some(c)) => self.administers(c),
            (Role::CollectiviteAdmin, Role::CollectiviteAdmin | Role::Collectivite, Some(c)) => {
                self.administers(c)
            }
            _ => false,
        }
    }

    /// Refuses the users who administer nothing.
    fn gestion(&self) -> Result<(), Response> {
        if self.user.role != Role::Collectivite {
            Ok(())
        } else {
            Err(forbidden(self))
        }
    }

    /// Checks a form's CSRF token.
    fn check(&self, token: &str) -> Result<(), Response> {
        if same_token(&self.csrf, token) {
            Ok(())
        } else {
            Err(csrf_refused())
        }
    }

    fn admin(&self) -> Result<(), Response> {
        if self.user.role == Role::Plateforme {
            Ok(())
        } else {
            Err(forbidden(self))
        }
    }

    /// Which imports the user may see.
    fn scope(&self) -> Scope {
        match (
            self.user.role,
            &self.user.collectivite_siret,
            self.user.collectivite_id,
        ) {
            (Role::Plateforme, _, _) => Scope::Tout,
            (Role::Cdg, Some(s), Some(id)) => Scope::Cdg {
                id,
                siret: s.clone(),
            },
            (_, Some(s), _) => Scope::Collectivite { siret: s.clone() },
            // A user without collectivité sees nothing.
            _ => Scope::Collectivite {
                siret: "\u{0}".into(),
            },
        }
    }
}

impl FromRequestParts<App> for Auth {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Auth, Response> {
        let Some(token) = cookie(&parts.headers, COOKIE).map(str::to_string) else {
            return Err(Redirect::to("/connexion").into_response());
        };
        let h = auth::token_hash(&token);
        let h2 = h.clone();
        let found = db(app, move |s| s.session(&h2, &atmp_store::now())).await?;
        let Some((user, csrf)) = found else {
            return Err(Redirect::to("/connexion").into_response());
        };
        // A password set by someone else must be changed before anything else.
        if user.doit_changer
            && parts.uri.path() != "/mot-de-passe"
            && parts.uri.path() != "/deconnexion"
        {
            return Err(Redirect::to("/mot-de-passe").into_response());
        }
        let peer = parts.extensions.get::<Peer>().map(|p| p.0);
        Ok(Auth {
            user,
            csrf,
            token_hash: h,
            address: client_address(app, peer, &parts.headers),
        })
    }
}

/// Records an event of the audit trail, without making the request wait (SQLite has one
/// writer, which a large integration holds for a while); a failure is traced, never shown.
async fn audit(app: &App, actor: &str, action: &'static str, detail: String, address: &str) {
    crate::record_audit(
        app,
        atmp_store::AuditEvent {
            actor: actor.chars().take(64).collect(),
            action: action.into(),
            detail,
            address: address.into(),
        },
    );
}

impl Auth {
    /// Records what this user did.
    async fn audit(&self, app: &App, action: &'static str, detail: String) {
        audit(app, &self.user.login, action, detail, &self.address).await;
    }
}

/// Whether a user may see a log pair.
fn may_see(a: &Auth, log: &ImportLog, cdg_of: Option<&str>) -> bool {
    a.scope().sees(&log.collectivite_siret, log.global, cdg_of)
}

// ---------------------------------------------------------------------------------------
// Templates

#[derive(Template)]
#[template(path = "simple.html")]
struct SimpleT {
    user: Option<NavUser>,
    message: Option<String>,
    error: Option<String>,
    titre: String,
    texte: String,
}
