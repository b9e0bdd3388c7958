//! The admin web: server-rendered French HTML (askama), usable without JavaScript.
//!
//! Every request goes through [`Auth`], which reads the session cookie and loads the user
//! from the base; every page and download then checks the role and the collectivité
//! (`may_see`). Every form carries the session's CSRF token, checked before anything
//! is done. A resource the user may not see answers 404, as if it did not exist.
//!
//! One file per area: this one holds the router, the serving of connections, the small
//! responses, the session extractor ([`Auth`]) and the shapes several pages share (the menu,
//! the result badges, the collectivités a user sees); `accueil.rs` the dashboard;
//! `session.rs` the login, logout and password pages; `suivi.rs` the tracking table, an import's page and its downloads; `rejets.rs` the
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

mod accueil;
mod admin;
mod essai;
mod rejets;
mod saisie;
mod session;
mod suivi;

use admin::*;
use saisie::{Issue, Saisie};
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
        .route("/", get(accueil::accueil))
        .route(
            "/accueil/imports-par-semaine.csv",
            get(accueil::accueil_csv),
        )
        .route("/sante", get(|| async { "ok" }))
        .route("/static/atmp.css", get(stylesheet))
        .route("/accessibilite", get(accessibilite))
        .route("/connexion", get(login_form).post(login))
        .route("/deconnexion", post(logout))
        .route("/mot-de-passe", get(password_form).post(password_change))
        .route("/mot-de-passe-oublie", get(oubli_form).post(oubli))
        .route(
            "/mot-de-passe-oublie/{token}",
            get(oubli_lien_form).post(oubli_lien),
        )
        .route("/suivi", get(suivi))
        .route("/imports/{id}", get(import_page))
        .route("/imports/{id}/journaux/{log}", get(journal_view))
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
        .route("/admin/emetteurs/actif", post(emetteur_actif))
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
            "/admin/utilisateurs/mot-de-passe",
            post(utilisateur_reinitialiser),
        )
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
        HeaderValue::from_static("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
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

/// The one stylesheet, compiled into the binary; browsers keep it for a day.
async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        include_str!("../../static/atmp.css"),
    )
        .into_response()
}

/// The accessibility statement (RGAA 4.1 asks every public service for one), readable
/// without logging in.
async fn accessibilite(user: Option<Auth>) -> Response {
    render(
        StatusCode::OK,
        &AccessibiliteT {
            user: user.map(|a| a.nav()),
            message: None,
            error: None,
        },
    )
}

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
    /// The path asked for.
    path: String,
}

/// What the layout shows of the user.
pub struct NavUser {
    login: String,
    role: &'static str,
    csrf: String,
    /// The path asked for, so that the menu marks where the user is (`aria-current`).
    path: String,
    /// The main menu, as this role sees it.
    liens: Vec<Lien>,
}

/// An entry of the main menu.
pub struct Lien {
    href: &'static str,
    texte: &'static str,
    courant: bool,
}

/// The main menu of a role, in its order: (address, label, shown to).
/// Who sees a menu entry.
type ShownTo = fn(Role) -> bool;

const MENU: &[(&str, &str, ShownTo)] = &[
    ("/", "Accueil", |_| true),
    ("/suivi", "Suivi des imports", |_| true),
    ("/rejets", "Rejets à traiter", |_| true),
    ("/admin/collectivites", "Collectivités", |r| {
        r != Role::Collectivite
    }),
    ("/admin/emetteurs", "Émetteurs", |r| r == Role::Plateforme),
    ("/admin/autorisations", "Autorisations", |r| {
        r == Role::Plateforme
    }),
    ("/admin/utilisateurs", "Utilisateurs", |r| {
        r != Role::Collectivite
    }),
    ("/admin/nomenclatures", "Nomenclatures", |r| {
        r == Role::Plateforme
    }),
    ("/essai", "Tester un fichier", |r| r == Role::Plateforme),
    ("/admin/journal", "Journal d'audit", |r| {
        r == Role::Plateforme
    }),
];

/// The menu entry a path belongs to: the longest entry that is the path or a parent of it;
/// an import's page belongs to the tracking table.
fn menu_of(path: &str) -> &'static str {
    if path.starts_with("/imports/") {
        return "/suivi";
    }
    MENU.iter()
        .map(|m| m.0)
        .filter(|h| {
            path == *h || (*h != "/" && path.strip_prefix(h).is_some_and(|r| r.starts_with('/')))
        })
        .max_by_key(|h| h.len())
        .unwrap_or("")
}

impl Auth {
    fn nav(&self) -> NavUser {
        let current = menu_of(&self.path);
        NavUser {
            login: self.user.login.clone(),
            role: self.user.role.libelle(),
            csrf: self.csrf.clone(),
            path: self.path.clone(),
            liens: MENU
                .iter()
                .filter(|m| (m.2)(self.user.role))
                .map(|m| Lien {
                    href: m.0,
                    texte: m.1,
                    courant: m.0 == current,
                })
                .collect(),
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
            return Err(to_login(parts, false));
        };
        let h = auth::token_hash(&token);
        let h2 = h.clone();
        let found = db(app, move |s| s.session(&h2, &atmp_store::now())).await?;
        let Some((user, csrf)) = found else {
            // A cookie whose session is gone: it expired, or was closed elsewhere.
            return Err(to_login(parts, true));
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
            path: parts.uri.path().to_string(),
        })
    }
}

impl axum::extract::OptionalFromRequestParts<App> for Auth {
    type Rejection = Response;

    /// The logged-in user if there is one: for the pages anyone may read.
    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Option<Auth>, Response> {
        Ok(
            <Auth as FromRequestParts<App>>::from_request_parts(parts, app)
                .await
                .ok(),
        )
    }
}

/// The login page, told where to come back to after login (the page asked for, when it was
/// one to read) and whether the session had expired.
fn to_login(parts: &Parts, expired: bool) -> Response {
    let mut to = String::from("/connexion");
    let mut sep = '?';
    if expired {
        to.push_str("?expiree=1");
        sep = '&';
    }
    if parts.method == axum::http::Method::GET {
        let asked = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        if let Some(back) = safe_return(asked).filter(|b| *b != "/") {
            to.push(sep);
            to.push_str("retour=");
            to.push_str(&urlencode(back));
        }
    }
    Redirect::to(&to).into_response()
}

/// A return address kept only when it is a path of this site: `/…`, not `//host` nor
/// `/\host` (which browsers take for another site), no control character, bounded.
fn safe_return(s: &str) -> Option<&str> {
    let ok = s.starts_with('/')
        && !s.starts_with("//")
        && !s.starts_with("/\\")
        && s.len() <= 1024
        && !s.chars().any(|c| c.is_control() || c == '\\')
        && !s.starts_with("/connexion")
        && !s.starts_with("/deconnexion");
    ok.then_some(s)
}

/// Percent-encodes a query value (everything but unreserved characters).
fn urlencode(s: &str) -> String {
    let mut o = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
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
// Shapes shared by several pages

/// A result shown at a glance: a colour, an icon and a text (never the colour alone).
#[derive(Clone, Copy)]
pub(super) struct Badge(pub atmp_store::SuiviResultat);

impl Badge {
    pub(super) fn texte(self) -> &'static str {
        use atmp_store::SuiviResultat as R;
        match self.0 {
            R::Reussi => "Réussi",
            R::ReussiAvecErreurs => "Réussi avec erreurs",
            R::Echoue => "Échoué",
            R::Doublon => "Doublon",
            R::EnCours => "En cours",
        }
    }
}

/// Static HTML only (no user text): rendered with `|safe`.
impl std::fmt::Display for Badge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use atmp_store::SuiviResultat as R;
        let (classe, icone) = match self.0 {
            R::Reussi => ("reussi", "✔"),
            R::ReussiAvecErreurs => ("erreurs", "⚠"),
            R::Echoue => ("echoue", "✖"),
            R::Doublon => ("doublon", "⧉"),
            R::EnCours => ("en-cours", "⏳"),
        };
        write!(
            f,
            "<span class=\"badge badge-{classe}\"><span aria-hidden=\"true\">{icone}</span> {}</span>",
            self.texte()
        )
    }
}

/// The collectivités a user sees (by name, with their SIRET), for the filters and forms
/// that choose one: all for the platform, a CDG and its members, a collectivité itself.
pub(super) async fn visible_collectivites(
    app: &App,
    a: &Auth,
) -> Result<Vec<atmp_store::Collectivite>, Response> {
    let sirets = rejets::visible_sirets(app, a).await?;
    let mut all = db(app, |s| s.collectivites()).await?;
    if let Some(v) = sirets {
        all.retain(|c| v.iter().any(|x| x == c.siret.as_str()));
    }
    all.sort_by_key(|c| c.nom.to_lowercase());
    Ok(all)
}

/// The senders a user may filter by: every sender for the platform, else those on record
/// for one of the collectivités the user sees.
pub(super) async fn visible_emetteurs(
    app: &App,
    a: &Auth,
    collectivites: &[atmp_store::Collectivite],
) -> Result<Vec<atmp_store::Emetteur>, Response> {
    let all = db(app, |s| s.emetteurs()).await?;
    if a.user.role == Role::Plateforme {
        return Ok(all);
    }
    Ok(all
        .into_iter()
        .filter(|e| {
            e.autorisations
                .iter()
                .any(|(s, ..)| collectivites.iter().any(|c| c.siret.as_str() == s))
        })
        .collect())
}

// ---------------------------------------------------------------------------------------
// Templates

#[derive(Template)]
#[template(path = "accessibilite.html")]
struct AccessibiliteT {
    user: Option<NavUser>,
    message: Option<String>,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "simple.html")]
struct SimpleT {
    user: Option<NavUser>,
    message: Option<String>,
    error: Option<String>,
    titre: String,
    texte: String,
}
