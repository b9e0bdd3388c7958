//! The admin web: server-rendered French HTML (askama), usable without JavaScript.
//!
//! Every request goes through [`Auth`], which reads the session cookie and loads the user
//! from the base; every page and download then checks the role and the collectivité
//! (`may_see`). Every form carries the session's CSRF token, checked before anything
//! is done. A resource the user may not see answers 404, as if it did not exist.

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
                own == Some(c.siret.as_str()) || (own.is_some() && c.cdg_siret.as_deref() == own)
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

#[derive(Template)]
#[template(path = "connexion.html")]
struct LoginT {
    user: Option<NavUser>,
    message: Option<String>,
    error: Option<String>,
    csrf: String,
}

#[derive(Template)]
#[template(path = "mot_de_passe.html")]
struct PasswordT {
    user: Option<NavUser>,
    message: Option<String>,
    error: Option<String>,
    csrf: String,
    force: bool,
}

struct SuiviLine {
    import_id: i64,
    log_id: i64,
    type_fichier: &'static str,
    date: String,
    label: String,
    collectivite: String,
}

#[derive(Template)]
#[template(path = "suivi.html")]
struct SuiviT {
    user: Option<NavUser>,
    message: Option<String>,
    error: Option<String>,
    types: Vec<(&'static str, &'static str)>,
    type_choisi: String,
    du: String,
    au: String,
    rows: Vec<SuiviLine>,
    total: u64,
    page: u64,
    pages: u64,
    query: String,
}

struct LogLine {
    id: i64,
    collectivite: String,
    label: String,
    errors: u64,
    warnings: u64,
}

struct Rejet {
    agent: String,
    message: String,
    /// (field, base, file, differs)
    mismatch: Option<Vec<(&'static str, String, String, bool)>>,
}

#[derive(Template)]
#[template(path = "import.html")]
struct ImportT {
    user: Option<NavUser>,
    message: Option<String>,
    error: Option<String>,
    id: i64,
    row: atmp_store::ImportRow,
    emetteur: String,
    type_fichier: String,
    mode: String,
    date_creation: String,
    cdg: String,
    debut: String,
    fin: String,
    counts: Vec<(&'static str, u64, u64, u64)>,
    logs: Vec<LogLine>,
    rejets: Vec<Rejet>,
    rejets_total: usize,
    rejets_page: usize,
    rejets_pages: usize,
    /// What the retention purge removed of this import, said in French.
    purges: Vec<String>,
    /// The logs were purged: no download links.
    logs_purged: bool,
}

// ---------------------------------------------------------------------------------------
// Login, logout, password

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    login: String,
    #[serde(default)]
    password: String,
}

async fn login_form(State(app): State<App>) -> Response {
    let csrf = auth::token(24);
    let t = LoginT {
        user: None,
        message: None,
        error: None,
        csrf: csrf.clone(),
    };
    let mut r = render(StatusCode::OK, &t);
    r.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(&app, LOGIN_COOKIE, &csrf, 3600),
    );
    r
}

async fn login(
    State(app): State<App>,
    peer: Option<axum::Extension<Peer>>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    // Login CSRF: the form's token must match the cookie set with the form.
    if !same_token(cookie(&headers, LOGIN_COOKIE).unwrap_or(""), &f.csrf) {
        return csrf_refused();
    }
    let source = client_address(&app, peer.map(|p| p.0 .0), &headers);
    let login = f.login.trim().to_string();
    if failures(&app, &address_key(&source)).await >= MAX_ADDRESS_FAILURES {
        tracing::warn!("web login refused: too many failures from this address");
        audit(
            &app,
            &login,
            "connexion_refusee",
            "adresse bloquée après trop d'échecs".into(),
            &source,
        )
        .await;
        return login_refused(
            &app,
            StatusCode::TOO_MANY_REQUESTS,
            "Trop d'essais infructueux depuis cette adresse : réessayez dans quelques minutes.",
        );
    }
    // The block of an identifier applies to the address that failed: a stranger elsewhere
    // cannot lock its owner out.
    let login_key = format!("web:{}|{source}", login.to_lowercase());
    if failures(&app, &login_key).await >= MAX_FAILURES {
        tracing::warn!("web login refused: too many failures");
        audit(
            &app,
            &login,
            "connexion_refusee",
            "identifiant bloqué après trop d'échecs".into(),
            &source,
        )
        .await;
        return login_refused(
            &app,
            StatusCode::TOO_MANY_REQUESTS,
            "Trop d'essais infructueux pour cet identifiant : réessayez dans quelques minutes.",
        );
    }
    let l2 = login.clone();
    let user = match db(&app, move |s| s.utilisateur(&l2)).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let password = f.password.clone();
    let hash = user
        .as_ref()
        .filter(|u| u.actif)
        .map(|u| u.password_hash.clone());
    let ok = tokio::task::spawn_blocking(move || {
        // Same work whether or not the login exists.
        let h = hash.clone().unwrap_or_else(|| auth::hash_password("-"));
        auth::verify_password(&password, &h) && hash.is_some()
    })
    .await
    .unwrap_or(false);
    let Some(user) = user.filter(|_| ok) else {
        tracing::warn!("web login refused");
        audit(
            &app,
            &login,
            "connexion_refusee",
            "identifiant ou mot de passe incorrect".into(),
            &source,
        )
        .await;
        failed_login(&app, &login_key).await;
        failed_login(&app, &address_key(&source)).await;
        return login_refused(
            &app,
            StatusCode::UNAUTHORIZED,
            "Identifiant ou mot de passe incorrect.",
        );
    };
    let key = login_key.clone();
    if let Err(r) = db(&app, move |s| s.clear_login_failures(&key)).await {
        return r;
    }
    let token = auth::token(32);
    let h = auth::token_hash(&token);
    let csrf = auth::token(24);
    let expires = (chrono::Local::now() + chrono::Duration::hours(SESSION_HOURS))
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string();
    let uid = user.id;
    if let Err(r) = db(&app, move |s| s.create_session(&h, uid, &csrf, &expires)).await {
        return r;
    }
    tracing::info!(user = uid, "web login");
    audit(&app, &user.login, "connexion", String::new(), &source).await;
    let to = if user.doit_changer {
        "/mot-de-passe"
    } else {
        "/suivi"
    };
    let mut r = Redirect::to(to).into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&app, COOKIE, &token, SESSION_HOURS * 3600),
    );
    r.headers_mut()
        .append(header::SET_COOKIE, set_cookie(&app, LOGIN_COOKIE, "", 0));
    r
}

/// Failed logins before an identifier is blocked, and for how long.
const MAX_FAILURES: u64 = 5;
const BLOCK: chrono::Duration = chrono::Duration::seconds(300);

/// Failed logins from one address, whatever the identifiers, before it is refused.
const MAX_ADDRESS_FAILURES: u64 = 10;

/// The connection's peer, put in each request by the accept loop.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub std::net::SocketAddr);

/// The address a login comes from: the TCP peer; behind the TLS reverse proxy that
/// `web = false` declares, the last address the proxy appended to `X-Forwarded-For`.
fn client_address(app: &App, peer: Option<std::net::SocketAddr>, headers: &HeaderMap) -> String {
    if !app.config.web_tls {
        if let Some(last) = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .map(str::trim)
            .and_then(|a| a.parse::<std::net::IpAddr>().ok())
        {
            return last.to_string();
        }
    }
    peer.map(|p| p.ip().to_string())
        .unwrap_or_else(|| "inconnue".into())
}

fn address_key(source: &str) -> String {
    format!("web:@{source}")
}

/// The start of the blocking window: failures before it no longer count.
fn window_start() -> String {
    (chrono::Local::now() - BLOCK)
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

/// The failed logins of a key within the window. Kept in the base, so that a lock-out holds
/// on every instance and across restarts; if the base cannot say, the login goes on to the
/// password check (which needs the base anyway).
async fn failures(app: &App, key: &str) -> u64 {
    let key = key.to_string();
    let since = window_start();
    db(app, move |s| s.login_failures(&key, &since))
        .await
        .unwrap_or(0)
}

async fn failed_login(app: &App, key: &str) {
    let key = key.to_string();
    let (now, since) = (atmp_store::now(), window_start());
    if db(app, move |s| s.record_login_failure(&key, &now, &since))
        .await
        .is_err()
    {
        tracing::warn!("failed login not recorded");
    }
}

/// The login page again, with an error.
fn login_refused(app: &App, status: StatusCode, error: &str) -> Response {
    let csrf = auth::token(24);
    let t = LoginT {
        user: None,
        message: None,
        error: Some(error.into()),
        csrf: csrf.clone(),
    };
    let mut r = render(status, &t);
    r.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(app, LOGIN_COOKIE, &csrf, 3600),
    );
    r
}

#[derive(Deserialize)]
struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

async fn logout(State(app): State<App>, a: Auth, Form(f): Form<CsrfOnly>) -> Response {
    if let Err(r) = a.check(&f.csrf) {
        return r;
    }
    let h = a.token_hash.clone();
    if let Err(r) = db(&app, move |s| s.delete_session(&h)).await {
        return r;
    }
    a.audit(&app, "deconnexion", String::new()).await;
    let mut r = Redirect::to("/connexion").into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&app, COOKIE, "", 0));
    r
}

async fn password_form(a: Auth) -> Response {
    let t = PasswordT {
        force: a.user.doit_changer,
        csrf: a.csrf.clone(),
        user: Some(a.nav()),
        message: None,
        error: None,
    };
    render(StatusCode::OK, &t)
}

#[derive(Deserialize)]
struct PasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    actuel: String,
    #[serde(default)]
    nouveau: String,
    #[serde(default)]
    confirmation: String,
}

async fn password_change(State(app): State<App>, a: Auth, Form(f): Form<PasswordForm>) -> Response {
    if let Err(r) = a.check(&f.csrf) {
        return r;
    }
    let problem = if f.nouveau != f.confirmation {
        Some("la confirmation ne correspond pas au nouveau mot de passe")
    } else if f.nouveau == f.actuel {
        Some("le nouveau mot de passe doit différer de l'actuel")
    } else {
        auth::password_problem(&f.nouveau)
    };
    let current_ok = {
        let (p, h) = (f.actuel.clone(), a.user.password_hash.clone());
        tokio::task::spawn_blocking(move || auth::verify_password(&p, &h))
            .await
            .unwrap_or(false)
    };
    let error = if !current_ok {
        Some("Le mot de passe actuel est incorrect.".to_string())
    } else {
        problem.map(|p| format!("Mot de passe refusé : {p}."))
    };
    if let Some(e) = error {
        let t = PasswordT {
            force: a.user.doit_changer,
            csrf: a.csrf.clone(),
            user: Some(a.nav()),
            message: None,
            error: Some(e),
        };
        return render(StatusCode::BAD_REQUEST, &t);
    }
    let new = f.nouveau.clone();
    let hash = tokio::task::spawn_blocking(move || auth::hash_password(&new))
        .await
        .unwrap_or_default();
    let (uid, keep) = (a.user.id, a.token_hash.clone());
    if let Err(r) = db(&app, move |s| {
        s.set_utilisateur_password(uid, &hash, false)?;
        s.delete_sessions_of(uid, Some(&keep))
    })
    .await
    {
        return r;
    }
    a.audit(
        &app,
        "mot_de_passe",
        "changement de son mot de passe".into(),
    )
    .await;
    let t = PasswordT {
        force: false,
        csrf: a.csrf.clone(),
        user: Some(a.nav()),
        message: Some("Mot de passe changé. Vos autres sessions ont été fermées.".into()),
        error: None,
    };
    render(StatusCode::OK, &t)
}

// ---------------------------------------------------------------------------------------
// Suivi des imports

#[derive(Deserialize, Default)]
struct SuiviParams {
    #[serde(rename = "type", default)]
    type_fichier: String,
    #[serde(default)]
    du: String,
    #[serde(default)]
    au: String,
    #[serde(default)]
    page: Option<String>,
}

const TYPES: [(&str, &str); 4] = [
    ("", "Tous"),
    ("AGENT", "Agent"),
    ("SERVICE", "Service"),
    ("DECLARATION", "Déclaration"),
];

fn type_libelle(t: Option<&str>) -> &'static str {
    TYPES
        .iter()
        .find(|(v, _)| Some(*v) == t && !v.is_empty())
        .map(|(_, l)| *l)
        .unwrap_or("—")
}

/// `YYYY-MM-DDTHH:MM:SS` → `DD/MM/YYYY HH:MM:SS`.
fn fr_datetime(s: &str) -> String {
    match chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S") {
        Ok(d) => d.format("%d/%m/%Y %H:%M:%S").to_string(),
        Err(_) => s.to_string(),
    }
}

fn fr_date_opt(s: Option<&str>) -> String {
    s.map(fr_datetime).unwrap_or_else(|| "—".into())
}

fn parse_day(s: &str) -> Option<chrono::NaiveDate> {
    let s = s.trim();
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .or_else(|_| chrono::NaiveDate::parse_from_str(s, "%d/%m/%Y"))
        .ok()
}

fn enc(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

async fn suivi(State(app): State<App>, a: Auth, Query(p): Query<SuiviParams>) -> Response {
    let today = chrono::Local::now().date_naive();
    let mut error = None;
    let au = if p.au.is_empty() {
        today
    } else {
        parse_day(&p.au).unwrap_or_else(|| {
            error = Some("Date de fin invalide : la période par défaut est appliquée.".to_string());
            today
        })
    };
    let default_du = au
        .checked_sub_months(chrono::Months::new(12))
        .unwrap_or(au)
        .succ_opt()
        .unwrap_or(au);
    let du = if p.du.is_empty() {
        default_du
    } else {
        parse_day(&p.du).unwrap_or_else(|| {
            error =
                Some("Date de début invalide : la période par défaut est appliquée.".to_string());
            default_du
        })
    };
    let type_choisi = TYPES
        .iter()
        .find(|(v, _)| *v == p.type_fichier)
        .map(|(v, _)| v.to_string())
        .unwrap_or_default();
    let page: u64 = p
        .page
        .as_deref()
        .and_then(|s| s.parse().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(1);
    let q = SuiviQuery {
        scope: a.scope(),
        type_fichier: (!type_choisi.is_empty()).then(|| type_choisi.clone()),
        du: du.format("%Y-%m-%d").to_string(),
        au: au.format("%Y-%m-%d").to_string(),
        limit: PAGE,
        offset: (page - 1) * PAGE,
    };
    let platform = a.user.role == Role::Plateforme;
    let (rows, total, pending) = match db(&app, move |s| {
        let (rows, total) = s.suivi(&q)?;
        // Files in the queue have no collectivité yet: only the platform sees them.
        let pending = if platform { s.pending_jobs()? } else { 0 };
        Ok((rows, total, pending))
    })
    .await
    {
        Ok(v) => v,
        Err(r) => return r,
    };
    let pages = total.div_ceil(PAGE).max(1);
    let rows = rows
        .into_iter()
        .map(|r| SuiviLine {
            import_id: r.import_id,
            log_id: r.log_id,
            type_fichier: type_libelle(r.type_fichier.as_deref()),
            date: fr_datetime(&r.started_at),
            label: r.label,
            collectivite: match (r.global, r.collectivite_nom) {
                (true, Some(n)) => format!("{n} (journal global du CDG)"),
                (true, None) => format!("{} (journal global du CDG)", r.collectivite_siret),
                (false, Some(n)) => n,
                (false, None) if r.collectivite_siret.is_empty() => "— (fichier rejeté)".into(),
                (false, None) => r.collectivite_siret,
            },
        })
        .collect();
    let du_s = du.format("%Y-%m-%d").to_string();
    let au_s = au.format("%Y-%m-%d").to_string();
    let query = format!(
        "/suivi?type={}&du={}&au={}",
        enc(&type_choisi),
        enc(&du_s),
        enc(&au_s)
    );
    let t = SuiviT {
        user: Some(a.nav()),
        message: (pending > 0)
            .then(|| format!("{pending} fichier(s) reçu(s) en attente ou en cours d'intégration.")),
        error,
        types: TYPES.to_vec(),
        type_choisi,
        du: du_s,
        au: au_s,
        rows,
        total,
        page: page.min(pages),
        pages,
        query,
    };
    render(StatusCode::OK, &t)
}

// ---------------------------------------------------------------------------------------
// One import

/// The import and the logs of it the user may see; `None`: nothing visible (404).
async fn visible_import(
    app: &App,
    a: &Auth,
    id: i64,
) -> Result<Option<(atmp_store::ImportRow, Vec<(i64, ImportLog)>, bool)>, Response> {
    let found = db(app, move |s| {
        let Some((row, logs)) = s.import(id)? else {
            return Ok(None);
        };
        let mut cdgs = Vec::new();
        for (_, l) in &logs {
            cdgs.push(
                s.collectivite(&l.collectivite_siret)?
                    .and_then(|c| c.cdg_siret),
            );
        }
        Ok(Some((row, logs, cdgs)))
    })
    .await?;
    let Some((row, logs, cdgs)) = found else {
        return Ok(None);
    };
    let all = logs.len();
    let visible: Vec<(i64, ImportLog)> = logs
        .into_iter()
        .zip(cdgs)
        .filter(|((_, l), cdg)| may_see(a, l, cdg.as_deref()))
        .map(|(l, _)| l)
        .collect();
    if visible.is_empty() {
        return Ok(None);
    }
    let sees_all = visible.len() == all;
    Ok(Some((row, visible, sees_all)))
}

fn counts_rows(counts: &atmp_store::RecordCounts) -> Vec<(&'static str, u64, u64, u64)> {
    counts
        .rows()
        .iter()
        .map(|(_, label, c)| (*label, c.added, c.existing, c.rejected))
        .collect()
}

/// The two identities of a §6.3 mismatch message, side by side.
fn mismatch(msg: &str) -> Option<Vec<(&'static str, String, String, bool)>> {
    let rest = msg.strip_prefix("Les données de l'agent dans la base [")?;
    let (base, rest) = rest.split_once("] ne correspondent pas à celles du fichier à traiter [")?;
    let (file, rest) = rest.split_once("] (")?;
    let (diff, _) = rest.split_once(')')?;
    let split = |s: &str| -> (String, String, String) {
        let mut p = s.rsplitn(3, " - ");
        let nir = p.next().unwrap_or("").to_string();
        let dob = p.next().unwrap_or("").to_string();
        let name = p.next().unwrap_or("").to_string();
        (name, dob, nir)
    };
    let (bn, bd, bnir) = split(base);
    let (fnm, fd, fnir) = split(file);
    let names_differ = diff.contains("nom usuel") || diff.contains("prénom");
    Some(vec![
        ("Nom et prénom", bn, fnm, names_differ),
        (
            "Date de naissance",
            bd,
            fd,
            diff.contains("date de naissance"),
        ),
        ("NIR", bnir, fnir, false),
    ])
}

/// The rejected agents of the visible error logs (at most `max`).
fn rejets(paths: &[String], offset: usize, limit: usize) -> (Vec<Rejet>, usize) {
    use std::io::BufRead;
    let mut out = Vec::new();
    let mut total = 0;
    for p in paths {
        let Ok(f) = std::fs::File::open(p) else {
            continue;
        };
        for line in std::io::BufReader::new(f).lines().map_while(Result::ok) {
            let f = atmp_integrator::split_line(&line);
            if f.len() < 6
                || f[1] != "ERROR"
                || f[2].is_empty()
                || !f[3].is_empty()
                || !f[4].is_empty()
            {
                continue;
            }
            total += 1;
            if total > offset && out.len() < limit {
                out.push(Rejet {
                    agent: f[2].clone(),
                    mismatch: mismatch(&f[5]),
                    message: f[5].clone(),
                });
            }
        }
    }
    (out, total)
}

/// Rejected agents shown per page of an import's page.
const REJETS_PAGE: usize = 100;

#[derive(Deserialize, Default)]
struct ImportParams {
    #[serde(default)]
    rejets: Option<String>,
}

async fn import_page(
    State(app): State<App>,
    a: Auth,
    Path(id): Path<String>,
    Query(q): Query<ImportParams>,
) -> Response {
    let rejets_page: usize = q
        .rejets
        .as_deref()
        .and_then(|s| s.parse().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(1);
    let Ok(id) = id.parse::<i64>() else {
        return not_found();
    };
    let (row, logs, sees_all) = match visible_import(&app, &a, id).await {
        Ok(Some(v)) => v,
        Ok(None) => return not_found(),
        Err(r) => return r,
    };
    let siret_names = {
        let sirets: Vec<String> = logs
            .iter()
            .map(|(_, l)| l.collectivite_siret.clone())
            .collect();
        match db(&app, move |s| {
            sirets
                .iter()
                .map(|x| Ok(s.collectivite(x)?.map(|c| c.nom)))
                .collect::<Result<Vec<_>, StoreError>>()
        })
        .await
        {
            Ok(v) => v,
            Err(r) => return r,
        }
    };
    let purged = match db(&app, move |s| s.purges_of(id)).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let logs_purged = purged
        .iter()
        .any(|(k, _)| *k == atmp_store::PurgeKind::Journaux);
    let purges: Vec<String> = purged
        .iter()
        .map(|(k, at)| match k {
            atmp_store::PurgeKind::FichierRecu => format!(
                "Fichier reçu supprimé le {} (durée de conservation atteinte).",
                fr_datetime(at)
            ),
            atmp_store::PurgeKind::Journaux => format!(
                "Journaux supprimés le {} (durée de conservation atteinte).",
                fr_datetime(at)
            ),
        })
        .collect();
    let error_paths: Vec<String> = if logs_purged {
        Vec::new()
    } else {
        logs.iter().map(|(_, l)| l.erreurs_path.clone()).collect()
    };
    let offset = (rejets_page - 1) * REJETS_PAGE;
    let (rejets, rejets_total) =
        tokio::task::spawn_blocking(move || rejets(&error_paths, offset, REJETS_PAGE))
            .await
            .unwrap_or_default();
    let logs: Vec<LogLine> = logs
        .iter()
        .zip(siret_names)
        .map(|((lid, l), nom)| LogLine {
            id: *lid,
            collectivite: match (l.global, nom) {
                (true, Some(n)) => {
                    format!("{n} ({}) — journal global du CDG", l.collectivite_siret)
                }
                (false, Some(n)) => format!("{n} ({})", l.collectivite_siret),
                (_, None) if l.collectivite_siret.is_empty() => "— (fichier rejeté)".into(),
                (_, None) => l.collectivite_siret.clone(),
            },
            label: l.label.clone(),
            errors: l.errors,
            warnings: l.warnings,
        })
        .collect();
    let t = ImportT {
        user: Some(a.nav()),
        message: None,
        error: None,
        id,
        emetteur: row.emetteur.clone().unwrap_or_else(|| "—".into()),
        type_fichier: type_libelle(row.type_fichier.as_deref()).into(),
        mode: row.mode.clone().unwrap_or_else(|| "—".into()),
        date_creation: fr_date_opt(row.date_creation.as_deref()),
        cdg: row.cdg_siret.clone().unwrap_or_else(|| "—".into()),
        debut: fr_datetime(&row.started_at),
        fin: fr_date_opt(row.finished_at.as_deref()),
        counts: if sees_all {
            counts_rows(&row.counts)
        } else {
            vec![]
        },
        row,
        logs,
        rejets,
        rejets_total,
        rejets_page,
        rejets_pages: rejets_total.div_ceil(REJETS_PAGE).max(1),
        purges,
        logs_purged,
    };
    render(StatusCode::OK, &t)
}

async fn download_log(
    State(app): State<App>,
    a: Auth,
    Path((id, log, kind)): Path<(String, String, String)>,
) -> Response {
    let (Ok(id), Ok(log)) = (id.parse::<i64>(), log.parse::<i64>()) else {
        return not_found();
    };
    if kind != "complet" && kind != "erreurs" {
        return not_found();
    }
    let logs = match visible_import(&app, &a, id).await {
        Ok(Some((_, logs, _))) => logs,
        Ok(None) => return not_found(),
        Err(r) => return r,
    };
    let Some((_, l)) = logs.iter().find(|(lid, _)| *lid == log) else {
        return not_found();
    };
    let purged = match db(&app, move |s| s.purges_of(id)).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    if let Some((_, at)) = purged
        .iter()
        .find(|(k, _)| *k == atmp_store::PurgeKind::Journaux)
    {
        return page_simple(
            StatusCode::GONE,
            Some(a.nav()),
            "Journal supprimé",
            &format!(
                "Ce journal a été supprimé le {} : sa durée de conservation était atteinte.",
                fr_datetime(at)
            ),
        );
    }
    let path = if kind == "complet" {
        &l.complet_path
    } else {
        &l.erreurs_path
    };
    let file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) => return internal(e),
    };
    a.audit(
        &app,
        "telechargement_journal",
        format!("import {id}, journal {log} ({kind})"),
    )
    .await;
    let who = if l.global {
        format!("{}-global", l.collectivite_siret)
    } else {
        l.collectivite_siret.clone()
    };
    let name = format!("import-{id}-{who}-{kind}.log");
    tracing::info!(user = a.user.id, import = id, log, "log downloaded");
    let body = axum::body::Body::from_stream(tokio_util_stream(file));
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response()
}

/// A file as a stream of chunks (logs can be larger than memory should hold).
fn tokio_util_stream(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = std::io::Result<Vec<u8>>> {
    futures_util::stream::unfold(file, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 64 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(buf), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    })
}

async fn download_receipt(State(app): State<App>, a: Auth, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return not_found();
    };
    let (row, logs, sees_all) = match visible_import(&app, &a, id).await {
        Ok(Some(v)) => v,
        Ok(None) => return not_found(),
        Err(r) => return r,
    };
    // A user who sees only part of a grouped file gets the receipt of that part: its logs,
    // their errors and results, never the whole file's counts.
    let row = if sees_all {
        row
    } else {
        atmp_store::ImportRow {
            errors: logs.iter().map(|(_, l)| l.errors).sum(),
            warnings: logs.iter().map(|(_, l)| l.warnings).sum(),
            label: logs
                .iter()
                .map(|(_, l)| l.label.as_str())
                .collect::<Vec<_>>()
                .join(" ; "),
            ..row
        }
    };
    let job = match row.job_id {
        Some(j) => match db(&app, move |s| s.job(j)).await {
            Ok(j) => j,
            Err(r) => return r,
        },
        None => None,
    };
    let body = crate::worker::receipt(job.as_ref(), id, &row, &logs, sees_all);
    a.audit(&app, "telechargement_accuse", format!("import {id}"))
        .await;
    (
        [
            (
                header::CONTENT_TYPE,
                "application/json; charset=utf-8".to_string(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"import-{id}-accuse.json\""),
            ),
        ],
        body,
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------
// Administration (platform administrators only)

#[derive(Template)]
#[template(path = "collectivites.html")]
struct CollectivitesT {
    user: Option<NavUser>,
    message: Option<String>,
    error: Option<String>,
    csrf: String,
    collectivites: Vec<atmp_store::Collectivite>,
    /// The creation and attachment forms (platform administrators only).
    formulaires: bool,
}

async fn collectivites_page(
    app: &App,
    a: &Auth,
    message: Option<String>,
    error: Option<String>,
) -> Response {
    let list = match db(app, |s| s.collectivites()).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let status = status_for(&error);
    let t = CollectivitesT {
        user: Some(a.nav()),
        message,
        error,
        csrf: a.csrf.clone(),
        collectivites: list.into_iter().filter(|c| a.administers(c)).collect(),
        formulaires: a.user.role == Role::Plateforme,
    };
    render(status, &t)
}

async fn collectivites(State(app): State<App>, a: Auth) -> Response {
    if let Err(r) = a.gestion() {
        return r;
    }
    collectivites_page(&app, &a, None, None).await
}

#[derive(Deserialize)]
struct CollectiviteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    siret: String,
    #[serde(default)]
    nom: String,
    #[serde(default)]
    cdg: String,
}

/// Runs an admin change; the page shows its message or its error.
async fn change(
    app: &App,
    who: &Auth,
    action: &'static str,
    detail: String,
    f: impl FnOnce(&mut dyn atmp_store::Store) -> Result<String, StoreError> + Send + 'static,
) -> Result<String, String> {
    let app2 = app.clone();
    match tokio::task::spawn_blocking(move || app2.with_store(f)).await {
        Ok(Ok(m)) => {
            // Every management change is in the audit trail (never the message: it may hold
            // a one-time password).
            who.audit(app, action, detail).await;
            Ok(m)
        }
        Ok(Err(StoreError::Invalid(m))) => Err(capitalize(&m)),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "admin change failed");
            Err("La modification n'a pas pu être enregistrée.".into())
        }
        Err(_) => Err("La modification n'a pas pu être enregistrée.".into()),
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect::<String>() + ".",
        None => String::new(),
    }
}

fn siret(s: &str, what: &str) -> Result<Siret, String> {
    Siret::parse(s.trim()).map_err(|e| format!("{what} « {} » : {e}.", s.trim()))
}

async fn collectivite_add(
    State(app): State<App>,
    a: Auth,
    Form(f): Form<CollectiviteForm>,
) -> Response {
    if let Err(r) = a.admin().and_then(|_| a.check(&f.csrf)) {
        return r;
    }
    let r = async {
        let s = siret(&f.siret, "SIRET")?;
        let cdg = if f.cdg.trim().is_empty() {
            None
        } else {
            Some(siret(&f.cdg, "SIRET du CDG")?)
        };
        let nom = f.nom.trim().to_string();
        if nom.is_empty() {
            return Err("Le nom est obligatoire.".to_string());
        }
        let detail = format!("création de la collectivité {}", s.as_str());
        change(&app, &a, "collectivite", detail, move |st| {
            if st.collectivite(s.as_str())?.is_some() {
                return Err(StoreError::Invalid(format!(
                    "la collectivité {} existe déjà",
                    s.as_str()
                )));
            }
            st.add_collectivite(&s, &nom, cdg.as_ref())?;
            Ok(format!("Collectivité {} créée.", s.as_str()))
        })
        .await
    }
    .await;
    let (m, e) = split(r);
    collectivites_page(&app, &a, m, e).await
}

fn split(r: Result<String, String>) -> (Option<String>, Option<String>) {
    match r {
        Ok(m) => (Some(m), None),
        Err(e) => (None, Some(e)),
    }
}

async fn collectivite_attach(
    State(app): State<App>,
    a: Auth,
    Form(f): Form<CollectiviteForm>,
) -> Response {
    if let Err(r) = a.admin().and_then(|_| a.check(&f.csrf)) {
        return r;
    }
    let s = f.siret.trim().to_string();
    let cdg = f.cdg.trim().to_string();
    let detail = format!("rattachement de {s} au CDG « {cdg} »");
    let r = change(&app, &a, "collectivite", detail, move |st| {
        st.set_cdg(&s, (!cdg.is_empty()).then_some(cdg.as_str()))?;
        Ok(if cdg.is_empty() {
            format!("Collectivité {s} détachée de son CDG.")
        } else {
            format!("Collectivité {s} rattachée au CDG {cdg}.")
        })
    })
    .await;
    let (m, e) = split(r);
    collectivites_page(&app, &a, m, e).await
}

#[derive(Template)]
#[template(path = "services.html")]
struct ServicesT {
    user: Option<NavUser>,
    message: Option<String>,
    error: Option<String>,
    csrf: String,
    siret: String,
    nom: String,
    services: Vec<(i64, String, Option<String>)>,
}

async fn services_page(
    app: &App,
    a: &Auth,
    siret: String,
    message: Option<String>,
    error: Option<String>,
) -> Response {
    let s2 = siret.clone();
    let found = match db(app, move |s| {
        let Some(c) = s.collectivite(&s2)? else {
            return Ok(None);
        };
        let services = s.services(c.id)?;
        Ok(Some((c, services)))
    })
    .await
    {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some((c, services)) = found.filter(|(c, _)| a.administers(c)) else {
        return not_found();
    };
    let nom = c.nom;
    let t = ServicesT {
        user: Some(a.nav()),
        message,
        error,
        csrf: a.csrf.clone(),
        siret,
        nom,
        services,
    };
    render(StatusCode::OK, &t)
}

async fn services(State(app): State<App>, a: Auth, Path(siret): Path<String>) -> Response {
    if let Err(r) = a.gestion() {
        return r;
    }
    services_page(&app, &a, siret, None, None).await
}

#[derive(Deserialize)]
struct ServiceForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    libelle: String,
}

async fn service_add(
    State(app): State<App>,
    a: Auth,
    Path(siret): Path<String>,
    Form(f): Form<ServiceForm>,
) -> Response {
    if let Err(r) = a.gestion().and_then(|_| a.check(&f.csrf)) {
        return r;
    }
    let known = {
        let s2 = siret.clone();
        match db(&app, move |s| s.collectivite(&s2)).await {
            Ok(c) => c,
            Err(r) => return r,
        }
    };
    if !known.as_ref().is_some_and(|c| a.administers(c)) {
        return not_found();
    }
    let code = f.code.trim().to_string();
    let libelle = f.libelle.trim().to_string();
    let s2 = siret.clone();
    let r = if code.is_empty() || code.len() > 50 {
        Err("Le code du service est obligatoire (50 caractères au plus).".to_string())
    } else {
        let detail = format!("service {code} de la collectivité {siret}");
        change(&app, &a, "service", detail, move |st| {
            let c = st
                .collectivite(&s2)?
                .ok_or_else(|| StoreError::Invalid(format!("la collectivité {s2} n'existe pas")))?;
            if st.add_service(
                c.id,
                &code,
                (!libelle.is_empty()).then_some(libelle.as_str()),
            )? {
                Ok(format!("Service {code} ajouté."))
            } else {
                Err(StoreError::Invalid(format!(
                    "le service {code} existe déjà"
                )))
            }
        })
        .await
    };
    let (m, e) = split(r);
    services_page(&app, &a, siret, m, e).await
}

struct EmetteurLine {
    code: String,
    nom: String,
    ftps: bool,
    autorisees: String,
}

#[derive(Template)]
#[template(path = "emetteurs.html")]
struct EmetteursT {
    user: Option<NavUser>,
    message: Option<String>,
    error: Option<String>,
    csrf: String,
    emetteurs: Vec<EmetteurLine>,
}

async fn emetteurs_page(
    app: &App,
    a: &Auth,
    message: Option<String>,
    error: Option<String>,
) -> Response {
    let list = match db(app, |s| {
        let mut out = Vec::new();
        for e in s.emetteurs()? {
            let ftps = s.emetteur_password(&e.code)?.is_some();
            out.push((e, ftps));
        }
        Ok(out)
    })
    .await
    {
        Ok(l) => l,
        Err(r) => return r,
    };
    let emetteurs = list
        .into_iter()
        .map(|(e, ftps)| EmetteurLine {
            autorisees: e
                .autorisations
                .iter()
                .filter(|x| x.1 == Autorisation::Accordee)
                .map(|x| x.0.clone())
                .collect::<Vec<_>>()
                .join(", "),
            code: e.code,
            nom: e.nom.unwrap_or_default(),
            ftps,
        })
        .collect();
    let t = EmetteursT {
        user: Some(a.nav()),
        message,
        error,
        csrf: a.csrf.clone(),
        emetteurs,
    };
    render(StatusCode::OK, &t)
}

async fn emetteurs(State(app): State<App>, a: Auth) -> Response {
    if let Err(r) = a.admin() {
        return r;
    }
    emetteurs_page(&app, &a, None, None).await
}

#[derive(Deserialize)]
struct EmetteurForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    nom: String,
    #[serde(default)]
    password: String,
}

async fn emetteur_add(State(app): State<App>, a: Auth, Form(f): Form<EmetteurForm>) -> Response {
    if let Err(r) = a.admin().and_then(|_| a.check(&f.csrf)) {
        return r;
    }
    let code = f.code.trim().to_string();
    let r = if !crate::ftps::valid_code(&code) {
        Err(
            "Le code de l'émetteur ne peut contenir que des lettres, des chiffres, - et _."
                .to_string(),
        )
    } else if let Some(p) = auth::password_problem(&f.password) {
        Err(capitalize(p))
    } else {
        let pw = f.password.clone();
        let hash = tokio::task::spawn_blocking(move || auth::hash_password(&pw))
            .await
            .unwrap_or_default();
        let nom = f.nom.trim().to_string();
        let detail = format!("création de l'émetteur {code} et de son compte FTPS");
        change(&app, &a, "emetteur", detail, move |st| {
            if st.emetteur(&code)?.is_some() {
                return Err(StoreError::Invalid(format!(
                    "l'émetteur {code} existe déjà"
                )));
            }
            st.add_emetteur(&code, (!nom.is_empty()).then_some(nom.as_str()))?;
            st.set_emetteur_password(&code, &hash)?;
            Ok(format!("Émetteur {code} créé, avec son compte FTPS."))
        })
        .await
    };
    let (m, e) = split(r);
    emetteurs_page(&app, &a, m, e).await
}

async fn emetteur_password(
    State(app): State<App>,
    a: Auth,
    Form(f): Form<EmetteurForm>,
) -> Response {
    if let Err(r) = a.admin().and_then(|_| a.check(&f.csrf)) {
        return r;
    }
    let code = f.code.trim().to_string();
    let r = if let Some(p) = auth::password_problem(&f.password) {
        Err(capitalize(p))
    } else {
        let pw = f.password.clone();
        let hash = tokio::task::spawn_blocking(move || auth::hash_password(&pw))
            .await
            .unwrap_or_default();
        let detail = format!("nouveau mot de passe FTPS de l'émetteur {code}");
        change(&app, &a, "emetteur", detail, move |st| {
            st.set_emetteur_password(&code, &hash)?;
            Ok(format!("Mot de passe FTPS de {code} changé."))
        })
        .await
    };
    let (m, e) = split(r);
    emetteurs_page(&app, &a, m, e).await
}

#[derive(Template)]
#[template(path = "autorisations.html")]
struct AutorisationsT {
    user: Option<NavUser>,
    message: Option<String>,
    error: Option<String>,
    csrf: String,
    autorisations: Vec<(String, String, &'static str, String, String)>,
}

async fn autorisations_page(
    app: &App,
    a: &Auth,
    message: Option<String>,
    error: Option<String>,
) -> Response {
    let list = match db(app, |s| s.emetteurs()).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let mut rows = Vec::new();
    for e in list {
        for (siret, st, date, reference) in e.autorisations {
            rows.push((
                e.code.clone(),
                siret,
                match st {
                    Autorisation::Accordee => "accordée",
                    Autorisation::Refusee => "refusée",
                    Autorisation::Retiree => "retirée",
                },
                fr_datetime(&date),
                reference.unwrap_or_default(),
            ));
        }
    }
    let status = status_for(&error);
    let t = AutorisationsT {
        user: Some(a.nav()),
        message,
        error,
        csrf: a.csrf.clone(),
        autorisations: rows,
    };
    render(status, &t)
}

async fn autorisations(State(app): State<App>, a: Auth) -> Response {
    if let Err(r) = a.admin() {
        return r;
    }
    autorisations_page(&app, &a, None, None).await
}

#[derive(Deserialize)]
struct AutorisationForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    emetteur: String,
    #[serde(default)]
    siret: String,
    #[serde(default)]
    statut: String,
    #[serde(default)]
    reference: String,
}

async fn autorisation_set(
    State(app): State<App>,
    a: Auth,
    Form(f): Form<AutorisationForm>,
) -> Response {
    if let Err(r) = a.admin().and_then(|_| a.check(&f.csrf)) {
        return r;
    }
    let r = match Autorisation::parse(&f.statut) {
        None => Err("Décision inconnue.".to_string()),
        Some(st) => {
            let (e, s, reference) = (
                f.emetteur.trim().to_string(),
                f.siret.trim().to_string(),
                f.reference.trim().to_string(),
            );
            let detail = format!(
                "autorisation de {e} pour {s} : {} (référence « {reference} »)",
                st.code()
            );
            change(&app, &a, "autorisation", detail, move |store| {
                store.set_autorisation(
                    &e,
                    &s,
                    st,
                    (!reference.is_empty()).then_some(reference.as_str()),
                )?;
                Ok(format!(
                    "Décision enregistrée pour {e} et la collectivité {s}."
                ))
            })
            .await
        }
    };
    let (m, e) = split(r);
    autorisations_page(&app, &a, m, e).await
}

struct UtilisateurLine {
    id: i64,
    login: String,
    role: &'static str,
    collectivite: String,
    email: String,
    actif: bool,
}

#[derive(Template)]
#[template(path = "utilisateurs.html")]
struct UtilisateursT {
    user: Option<NavUser>,
    message: Option<String>,
    error: Option<String>,
    csrf: String,
    utilisateurs: Vec<UtilisateurLine>,
    roles: Vec<(&'static str, &'static str)>,
    /// The SIRET proposed in the creation form.
    siret_defaut: String,
}

/// The users `a` manages, with the collectivités it administers (by SIRET).
fn managed(
    a: &Auth,
    users: Vec<Utilisateur>,
    collectivites: &[atmp_store::Collectivite],
) -> Vec<Utilisateur> {
    users
        .into_iter()
        .filter(|u| manages(a, u, collectivites))
        .collect()
}

/// Whether `a` manages user `u`: it administers `u`'s collectivité and may give `u`'s role.
fn manages(a: &Auth, u: &Utilisateur, collectivites: &[atmp_store::Collectivite]) -> bool {
    let c = u
        .collectivite_siret
        .as_deref()
        .and_then(|s| collectivites.iter().find(|c| c.siret == s));
    a.may_grant(u.role, c)
}

async fn utilisateurs_page(
    app: &App,
    a: &Auth,
    message: Option<String>,
    error: Option<String>,
) -> Response {
    let (list, collectivites) = match db(app, |s| Ok((s.utilisateurs()?, s.collectivites()?))).await
    {
        Ok(l) => l,
        Err(r) => return r,
    };
    let status = status_for(&error);
    let t = UtilisateursT {
        user: Some(a.nav()),
        message,
        error,
        csrf: a.csrf.clone(),
        utilisateurs: managed(a, list, &collectivites)
            .into_iter()
            .map(|u| UtilisateurLine {
                id: u.id,
                login: u.login,
                role: u.role.libelle(),
                collectivite: match (u.collectivite_nom, u.collectivite_siret) {
                    (Some(n), Some(s)) => format!("{n} ({s})"),
                    _ => "—".into(),
                },
                email: u.email.unwrap_or_default(),
                actif: u.actif,
            })
            .collect(),
        roles: Role::ALL
            .iter()
            .filter(|r| match a.user.role {
                Role::Plateforme => true,
                Role::Cdg => **r != Role::Plateforme,
                _ => matches!(r, Role::CollectiviteAdmin | Role::Collectivite),
            })
            .map(|r| (r.code(), r.libelle()))
            .collect(),
        siret_defaut: if a.user.role == Role::Plateforme {
            String::new()
        } else {
            a.user.collectivite_siret.clone().unwrap_or_default()
        },
    };
    render(status, &t)
}

async fn utilisateurs(State(app): State<App>, a: Auth) -> Response {
    if let Err(r) = a.gestion() {
        return r;
    }
    utilisateurs_page(&app, &a, None, None).await
}

#[derive(Deserialize)]
struct UtilisateurForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    login: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    siret: String,
    #[serde(default)]
    email: String,
}

async fn utilisateur_add(
    State(app): State<App>,
    a: Auth,
    Form(f): Form<UtilisateurForm>,
) -> Response {
    if let Err(r) = a.gestion().and_then(|_| a.check(&f.csrf)) {
        return r;
    }
    let siret = f.siret.trim().to_string();
    let target = if siret.is_empty() {
        None
    } else {
        let s2 = siret.clone();
        match db(&app, move |s| s.collectivite(&s2)).await {
            Ok(c) => c,
            Err(r) => return r,
        }
    };
    let email = if f.email.trim().is_empty() {
        Ok(None)
    } else {
        crate::mail::parse_email(&f.email).map(Some)
    };
    let r = match Role::parse(&f.role) {
        None => Err("Rôle inconnu.".to_string()),
        Some(_) if email.is_err() => Err(format!("{}.", email.clone().unwrap_err())),
        Some(role) if !a.may_grant(role, target.as_ref()) && a.user.role != Role::Plateforme => {
            Err(format!(
                "Vous ne pouvez pas donner le rôle « {} » pour la collectivité « {siret} ».",
                role.libelle()
            ))
        }
        Some(role) => {
            let pw = auth::password();
            let p2 = pw.clone();
            let hash = tokio::task::spawn_blocking(move || auth::hash_password(&p2))
                .await
                .unwrap_or_default();
            let u = NewUtilisateur {
                login: f.login.trim().to_string(),
                password_hash: hash,
                role,
                collectivite: (!siret.is_empty()).then_some(siret),
                email: email.clone().ok().flatten(),
                doit_changer: true,
            };
            let detail = format!(
                "création de l'utilisateur {} (rôle {}{})",
                u.login,
                u.role.code(),
                u.collectivite
                    .as_deref()
                    .map(|c| format!(", collectivité {c}"))
                    .unwrap_or_default()
            );
            change(&app, &a, "utilisateur", detail, move |s| {
                let created = s.add_utilisateur(&u)?;
                Ok(format!(
                    "Utilisateur {} créé. Mot de passe à usage unique, affiché une seule fois : {pw}",
                    created.login
                ))
            })
            .await
        }
    };
    let (m, e) = split(r);
    utilisateurs_page(&app, &a, m, e).await
}

#[derive(Deserialize)]
struct ActifForm {
    #[serde(default)]
    csrf: String,
    // Defaults, so that a form missing a field is refused by the handler (its token, then
    // an unknown user), in French, rather than by the extractor in English.
    #[serde(default)]
    id: i64,
    #[serde(default)]
    actif: u8,
}

async fn utilisateur_actif(State(app): State<App>, a: Auth, Form(f): Form<ActifForm>) -> Response {
    if let Err(r) = a.gestion().and_then(|_| a.check(&f.csrf)) {
        return r;
    }
    let (target, collectivites) = match db(&app, move |s| {
        Ok((s.utilisateur_by_id(f.id)?, s.collectivites()?))
    })
    .await
    {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(target) = target.filter(|u| manages(&a, u, &collectivites)) else {
        return not_found();
    };
    let r = if target.id == a.user.id {
        Err("Vous ne pouvez pas désactiver votre propre compte.".to_string())
    } else {
        let detail = format!(
            "{} de l'utilisateur {}",
            if f.actif == 1 {
                "réactivation"
            } else {
                "désactivation"
            },
            target.login
        );
        change(&app, &a, "utilisateur", detail, move |s| {
            s.set_utilisateur_actif(target.id, f.actif == 1)?;
            Ok(if f.actif == 1 {
                "Utilisateur réactivé.".into()
            } else {
                "Utilisateur désactivé ; ses sessions sont fermées.".into()
            })
        })
        .await
    };
    let (m, e) = split(r);
    utilisateurs_page(&app, &a, m, e).await
}

#[derive(Template)]
#[template(path = "nomenclatures.html")]
struct NomenclaturesT {
    user: Option<NavUser>,
    message: Option<String>,
    error: Option<String>,
    csrf: String,
    listes: Vec<(String, usize)>,
    versions: Vec<(String, String, i64, String)>,
}

async fn nomenclatures_page(
    app: &App,
    a: &Auth,
    message: Option<String>,
    error: Option<String>,
) -> Response {
    let (entries, versions) = match db(app, |s| {
        Ok((s.nomenclature_entries()?, s.nomenclature_versions()?))
    })
    .await
    {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut listes: Vec<(String, usize)> = Vec::new();
    for e in entries {
        let n = e.nomenclature.name().to_string();
        match listes.last_mut() {
            Some((last, c)) if *last == n => *c += 1,
            _ => listes.push((n, 1)),
        }
    }
    let status = status_for(&error);
    let t = NomenclaturesT {
        user: Some(a.nav()),
        message,
        error,
        csrf: a.csrf.clone(),
        listes,
        versions: versions
            .into_iter()
            .rev()
            .map(|(v, s, n, at)| (v, s, n, fr_datetime(&at)))
            .collect(),
    };
    render(status, &t)
}

#[derive(Template)]
#[template(path = "journal.html")]
struct JournalT {
    user: Option<NavUser>,
    message: Option<String>,
    error: Option<String>,
    rows: Vec<(String, String, String, String, String)>,
    total: u64,
    first: u64,
    last: u64,
    page: u64,
    pages: u64,
}

/// Events per page of the audit trail.
const AUDIT_PAGE: u64 = 100;

#[derive(Deserialize)]
struct PageQuery {
    page: Option<u64>,
}

/// The audit trail, for the platform administrator only.
async fn journal(State(app): State<App>, a: Auth, Query(q): Query<PageQuery>) -> Response {
    if let Err(r) = a.admin() {
        return r;
    }
    let page = q.page.unwrap_or(1).max(1);
    let (total, rows) = match db(&app, move |s| {
        s.audit_page((page - 1) * AUDIT_PAGE, AUDIT_PAGE)
    })
    .await
    {
        Ok(v) => v,
        Err(r) => return r,
    };
    let pages = total.div_ceil(AUDIT_PAGE).max(1);
    let first = if rows.is_empty() {
        0
    } else {
        (page - 1) * AUDIT_PAGE + 1
    };
    let t = JournalT {
        user: Some(a.nav()),
        message: None,
        error: None,
        first,
        last: first + rows.len().saturating_sub(1) as u64,
        rows: rows
            .into_iter()
            .map(|r| {
                (
                    fr_datetime(&r.at),
                    r.event.actor,
                    r.event.action,
                    r.event.detail,
                    r.event.address,
                )
            })
            .collect(),
        total,
        page,
        pages,
    };
    render(StatusCode::OK, &t)
}

async fn nomenclatures(State(app): State<App>, a: Auth) -> Response {
    if let Err(r) = a.admin() {
        return r;
    }
    nomenclatures_page(&app, &a, None, None).await
}

async fn nomenclature_load(State(app): State<App>, a: Auth, mut mp: Multipart) -> Response {
    if let Err(r) = a.admin() {
        return r;
    }
    let (mut csrf, mut version, mut bytes) = (String::new(), String::new(), None::<Vec<u8>>);
    loop {
        match mp.next_field().await {
            Ok(Some(field)) => {
                let name = field.name().unwrap_or("").to_string();
                let Ok(data) = field.bytes().await else {
                    return page_simple(
                        StatusCode::BAD_REQUEST,
                        Some(a.nav()),
                        "Envoi incomplet",
                        "Le fichier n'a pas été reçu en entier.",
                    );
                };
                match name.as_str() {
                    "csrf" => csrf = String::from_utf8_lossy(&data).into_owned(),
                    "version" => version = String::from_utf8_lossy(&data).trim().to_string(),
                    "fichier" => bytes = Some(data.to_vec()),
                    _ => {}
                }
            }
            Ok(None) => break,
            Err(_) => {
                return page_simple(
                    StatusCode::BAD_REQUEST,
                    Some(a.nav()),
                    "Envoi incomplet",
                    "Le formulaire n'a pas été reçu en entier.",
                );
            }
        }
    }
    if let Err(r) = a.check(&csrf) {
        return r;
    }
    let r = async {
        let bytes = bytes
            .filter(|b| !b.is_empty())
            .ok_or("Aucun fichier reçu.")?;
        if version.is_empty() {
            return Err("La version est obligatoire.".to_string());
        }
        let text = String::from_utf8(bytes.clone())
            .map_err(|_| "Le fichier doit être en UTF-8.".to_string())?;
        let entries = atmp_model::parse_csv(&text).map_err(|errs| {
            let first: Vec<String> = errs
                .iter()
                .take(5)
                .map(|e| format!("ligne {} : {}", e.line, e.message))
                .collect();
            format!(
                "{} ligne(s) invalide(s), rien n'a été chargé ({}).",
                errs.len(),
                first.join(" ; ")
            )
        })?;
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        let n = entries.len();
        let detail =
            format!("chargement des nomenclatures, version {version}, {n} code(s), SHA-256 {sha}");
        change(&app, &a, "nomenclature", detail, move |s| {
            s.replace_nomenclatures(&entries, &version, &sha)?;
            Ok(format!("Version {version} chargée : {n} codes."))
        })
        .await
    }
    .await;
    let (m, e) = split(r);
    nomenclatures_page(&app, &a, m, e).await
}
