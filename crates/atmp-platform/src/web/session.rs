//! The web: login (with its lock-outs), logout, password change.

#[allow(unused_imports)]
use super::*;

#[derive(Template)]
#[template(path = "connexion.html")]
pub(super) struct LoginT {
    user: Option<NavUser>,
    message: Option<String>,
    error: Option<String>,
    csrf: String,
    /// The page to go to after login.
    retour: String,
    login: String,
    /// Whether "Mot de passe oublié" can send its link (mail configured).
    oubli: bool,
}

#[derive(Template)]
#[template(path = "mot_de_passe.html")]
pub(super) struct PasswordT {
    user: Option<NavUser>,
    message: Option<String>,
    error: Option<String>,
    csrf: String,
    force: bool,
    /// Where to go once the password is changed.
    retour: String,
    /// The field at fault after a refusal (passwords are never drawn again).
    saisie: Saisie,
}

// ---------------------------------------------------------------------------------------
// Login, logout, password

#[derive(Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    login: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    retour: String,
}

#[derive(Deserialize)]
pub(super) struct LoginQuery {
    #[serde(default)]
    retour: String,
    #[serde(default)]
    expiree: Option<String>,
    #[serde(default)]
    reinitialise: Option<String>,
}

pub(super) async fn login_form(State(app): State<App>, Query(q): Query<LoginQuery>) -> Response {
    let csrf = auth::token(24);
    let message = if q.expiree.is_some() {
        Some("Votre session a expiré : reconnectez-vous pour revenir à la page demandée.".into())
    } else if q.reinitialise.is_some() {
        Some("Mot de passe changé : connectez-vous avec le nouveau.".into())
    } else {
        None
    };
    let t = LoginT {
        user: None,
        message,
        error: None,
        csrf: csrf.clone(),
        retour: safe_return(&q.retour).unwrap_or("").to_string(),
        login: String::new(),
        oubli: app.config.smtp_url.is_some(),
    };
    let mut r = render(StatusCode::OK, &t);
    r.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(&app, LOGIN_COOKIE, &csrf, 3600),
    );
    r
}

pub(super) async fn login(
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
            &f,
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
            &f,
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
            &f,
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
    let back = safe_return(&f.retour).unwrap_or("/");
    let to = if user.doit_changer {
        // The one-time password is changed first, then the user goes where it was going.
        if back == "/" {
            "/mot-de-passe".to_string()
        } else {
            format!("/mot-de-passe?retour={}", urlencode(back))
        }
    } else {
        back.to_string()
    };
    let mut r = Redirect::to(&to).into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&app, COOKIE, &token, SESSION_HOURS * 3600),
    );
    r.headers_mut()
        .append(header::SET_COOKIE, set_cookie(&app, LOGIN_COOKIE, "", 0));
    r
}

/// Failed logins before an identifier is blocked, and for how long.
pub(super) const MAX_FAILURES: u64 = 5;
pub(super) const BLOCK: chrono::Duration = chrono::Duration::seconds(300);

/// Failed logins from one address, whatever the identifiers, before it is refused.
pub(super) const MAX_ADDRESS_FAILURES: u64 = 10;

/// The connection's peer, put in each request by the accept loop.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub std::net::SocketAddr);

/// The address a login comes from: the TCP peer; behind the TLS reverse proxy that
/// `web = false` declares, the last address the proxy appended to `X-Forwarded-For`.
pub(super) fn client_address(
    app: &App,
    peer: Option<std::net::SocketAddr>,
    headers: &HeaderMap,
) -> String {
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

pub(super) fn address_key(source: &str) -> String {
    format!("web:@{source}")
}

/// The start of the blocking window: failures before it no longer count.
pub(super) fn window_start() -> String {
    (chrono::Local::now() - BLOCK)
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

/// The failed logins of a key within the window. Kept in the base, so that a lock-out holds
/// on every instance and across restarts; if the base cannot say, the login goes on to the
/// password check (which needs the base anyway).
pub(super) async fn failures(app: &App, key: &str) -> u64 {
    let key = key.to_string();
    let since = window_start();
    db(app, move |s| s.login_failures(&key, &since))
        .await
        .unwrap_or(0)
}

pub(super) async fn failed_login(app: &App, key: &str) {
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
pub(super) fn login_refused(app: &App, f: &LoginForm, status: StatusCode, error: &str) -> Response {
    let csrf = auth::token(24);
    let t = LoginT {
        user: None,
        message: None,
        error: Some(error.into()),
        csrf: csrf.clone(),
        retour: safe_return(&f.retour).unwrap_or("").to_string(),
        login: f.login.trim().chars().take(64).collect(),
        oubli: app.config.smtp_url.is_some(),
    };
    let mut r = render(status, &t);
    r.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(app, LOGIN_COOKIE, &csrf, 3600),
    );
    r
}

#[derive(Deserialize)]
pub(super) struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

pub(super) async fn logout(State(app): State<App>, a: Auth, Form(f): Form<CsrfOnly>) -> Response {
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

#[derive(Deserialize, Default)]
pub(super) struct RetourQuery {
    #[serde(default)]
    retour: String,
}

pub(super) async fn password_form(a: Auth, Query(q): Query<RetourQuery>) -> Response {
    let t = PasswordT {
        retour: safe_return(&q.retour).unwrap_or("").to_string(),
        force: a.user.doit_changer,
        csrf: a.csrf.clone(),
        user: Some(a.nav()),
        message: None,
        error: None,
        saisie: Saisie::new(),
    };
    render(StatusCode::OK, &t)
}

#[derive(Deserialize)]
pub(super) struct PasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    actuel: String,
    #[serde(default)]
    nouveau: String,
    #[serde(default)]
    confirmation: String,
    #[serde(default)]
    retour: String,
}

pub(super) async fn password_change(
    State(app): State<App>,
    a: Auth,
    Form(f): Form<PasswordForm>,
) -> Response {
    if let Err(r) = a.check(&f.csrf) {
        return r;
    }
    let problem = new_password_problem(&f.nouveau, &f.confirmation).or_else(|| {
        (f.nouveau == f.actuel).then(|| {
            (
                "nouveau",
                "Choisissez un nouveau mot de passe différent de l'actuel.".to_string(),
            )
        })
    });
    let current_ok = {
        let (p, h) = (f.actuel.clone(), a.user.password_hash.clone());
        tokio::task::spawn_blocking(move || auth::verify_password(&p, &h))
            .await
            .unwrap_or(false)
    };
    let refus = if !current_ok {
        Some((
            "actuel",
            "Le mot de passe actuel est incorrect : saisissez celui avec lequel vous vous êtes connecté."
                .to_string(),
        ))
    } else {
        problem
    };
    if let Some((champ, m)) = refus {
        let mut saisie = Saisie::new();
        saisie.refuse(champ, m);
        let t = PasswordT {
            retour: safe_return(&f.retour).unwrap_or("").to_string(),
            force: a.user.doit_changer,
            csrf: a.csrf.clone(),
            user: Some(a.nav()),
            message: None,
            error: Some("Mot de passe non changé : corrigez le champ signalé.".into()),
            saisie,
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
    if let Some(back) = safe_return(&f.retour).filter(|b| *b != "/") {
        // A forced change on the way to a page: the user goes on there.
        return Redirect::to(back).into_response();
    }
    let t = PasswordT {
        retour: String::new(),
        force: false,
        csrf: a.csrf.clone(),
        user: Some(a.nav()),
        message: Some("Mot de passe changé. Vos autres sessions ont été fermées.".into()),
        error: None,
        saisie: Saisie::new(),
    };
    render(StatusCode::OK, &t)
}

// ---------------------------------------------------------------------------------------
// "Mot de passe oublié": a one-use link, valid 30 minutes, sent when mail is configured

/// How long a password link is valid.
const LINK_MINUTES: i64 = 30;

#[derive(Template)]
#[template(path = "mot_de_passe_oublie.html")]
pub(super) struct OubliT {
    user: Option<NavUser>,
    message: Option<String>,
    error: Option<String>,
    csrf: String,
    /// The form to choose the new password (a valid link), else the request form.
    lien: Option<String>,
    envoye: bool,
    /// The field at fault after a refusal.
    saisie: Saisie,
}

/// What is wrong with a new password and its confirmation, as (field, what to do).
fn new_password_problem(nouveau: &str, confirmation: &str) -> Option<(&'static str, String)> {
    if let Some(p) = auth::password_problem(nouveau) {
        return Some(("nouveau", capitalize(p)));
    }
    (nouveau != confirmation).then(|| {
        (
            "confirmation",
            "La confirmation ne correspond pas au nouveau mot de passe : saisissez-le de nouveau à l'identique.".to_string(),
        )
    })
}

fn oubli_page(
    app: &App,
    status: StatusCode,
    lien: Option<String>,
    envoye: bool,
    error: Option<String>,
    saisie: Saisie,
) -> Response {
    let csrf = auth::token(24);
    let t = OubliT {
        user: None,
        message: envoye.then(|| {
            "Si cet identifiant existe et qu'une adresse de courriel lui est associée, un lien valable 30 minutes vient d'y être envoyé.".to_string()
        }),
        error,
        csrf: csrf.clone(),
        lien,
        envoye,
        saisie,
    };
    let mut r = render(status, &t);
    r.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(app, LOGIN_COOKIE, &csrf, 3600),
    );
    r
}

pub(super) async fn oubli_form(State(app): State<App>) -> Response {
    if app.config.smtp_url.is_none() {
        return not_found();
    }
    oubli_page(&app, StatusCode::OK, None, false, None, Saisie::new())
}

#[derive(Deserialize)]
pub(super) struct OubliForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    login: String,
}

/// Answers the same, at once, whether or not the login exists; the link is made and sent
/// in the background. Requests count as failed logins of the address, so that the form
/// cannot be used to flood a mailbox.
pub(super) async fn oubli(
    State(app): State<App>,
    peer: Option<axum::Extension<Peer>>,
    headers: HeaderMap,
    Form(f): Form<OubliForm>,
) -> Response {
    if app.config.smtp_url.is_none() {
        return not_found();
    }
    if !same_token(cookie(&headers, LOGIN_COOKIE).unwrap_or(""), &f.csrf) {
        return csrf_refused();
    }
    let source = client_address(&app, peer.map(|p| p.0 .0), &headers);
    let key = format!("oubli:@{source}");
    if failures(&app, &key).await >= MAX_ADDRESS_FAILURES {
        return oubli_page(
            &app,
            StatusCode::TOO_MANY_REQUESTS,
            None,
            false,
            Some("Trop de demandes depuis cette adresse : réessayez dans quelques minutes.".into()),
            Saisie::new(),
        );
    }
    failed_login(&app, &key).await;
    let login: String = f.login.trim().chars().take(64).collect();
    let app2 = app.clone();
    let source2 = source.clone();
    tokio::spawn(async move {
        let l2 = login.clone();
        let Ok(Some(user)) = db(&app2, move |s| s.utilisateur(&l2)).await else {
            audit(
                &app2,
                &login,
                "mot_de_passe_oublie",
                "identifiant inconnu".into(),
                &source2,
            )
            .await;
            return;
        };
        let Some(email) = user.email.clone().filter(|_| user.actif) else {
            audit(
                &app2,
                &login,
                "mot_de_passe_oublie",
                "aucune adresse de courriel ou compte désactivé".into(),
                &source2,
            )
            .await;
            return;
        };
        let token = auth::token(32);
        let h = auth::token_hash(&token);
        let expires = (chrono::Local::now() + chrono::Duration::minutes(LINK_MINUTES))
            .format("%Y-%m-%dT%H:%M:%S")
            .to_string();
        let uid = user.id;
        if db(&app2, move |s| s.create_password_link(&h, uid, &expires))
            .await
            .is_err()
        {
            return;
        }
        let body = format!(
            "Bonjour,\n\nUn nouveau mot de passe a été demandé pour le compte « {} » de la plate-forme atmp.\n\n\
             Pour le choisir, ouvrez ce lien dans les {LINK_MINUTES} minutes ; il ne sert qu'une fois :\n{}/mot-de-passe-oublie/{token}\n\n\
             Si vous n'avez rien demandé, ignorez ce message : votre mot de passe actuel reste valable.\n",
            user.login,
            app2.public_url()
        );
        match crate::mail::send_now(
            &app2,
            &email,
            "[atmp] Choisir un nouveau mot de passe",
            body,
        )
        .await
        {
            Ok(()) => {
                tracing::info!(user = uid, "password link sent");
                audit(
                    &app2,
                    &user.login,
                    "mot_de_passe_oublie",
                    "lien envoyé".into(),
                    &source2,
                )
                .await;
            }
            Err(e) => tracing::warn!(user = uid, error = %e, "password link not sent"),
        }
    });
    oubli_page(&app, StatusCode::OK, None, true, None, Saisie::new())
}

pub(super) async fn oubli_lien_form(State(app): State<App>, Path(token): Path<String>) -> Response {
    let h = auth::token_hash(&token);
    let now = atmp_store::now();
    match db(&app, move |s| s.password_link(&h, &now)).await {
        Ok(Some(_)) => oubli_page(
            &app,
            StatusCode::OK,
            Some(token),
            false,
            None,
            Saisie::new(),
        ),
        Ok(None) => lien_perime(),
        Err(r) => r,
    }
}

fn lien_perime() -> Response {
    page_simple(
        StatusCode::GONE,
        None,
        "Lien expiré",
        "Ce lien a déjà servi ou a dépassé ses 30 minutes de validité. Demandez-en un autre depuis la page de connexion.",
    )
}

#[derive(Deserialize)]
pub(super) struct NouveauForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    nouveau: String,
    #[serde(default)]
    confirmation: String,
}

pub(super) async fn oubli_lien(
    State(app): State<App>,
    peer: Option<axum::Extension<Peer>>,
    headers: HeaderMap,
    Path(token): Path<String>,
    Form(f): Form<NouveauForm>,
) -> Response {
    if !same_token(cookie(&headers, LOGIN_COOKIE).unwrap_or(""), &f.csrf) {
        return csrf_refused();
    }
    if let Some((champ, m)) = new_password_problem(&f.nouveau, &f.confirmation) {
        let mut saisie = Saisie::new();
        saisie.refuse(champ, m);
        return oubli_page(
            &app,
            StatusCode::BAD_REQUEST,
            Some(token),
            false,
            Some("Mot de passe non changé : corrigez le champ signalé.".into()),
            saisie,
        );
    }
    let new = f.nouveau.clone();
    let hash = tokio::task::spawn_blocking(move || auth::hash_password(&new))
        .await
        .unwrap_or_default();
    let h = auth::token_hash(&token);
    let now = atmp_store::now();
    let used = db(&app, move |s| {
        let Some(uid) = s.use_password_link(&h, &now)? else {
            return Ok(None);
        };
        s.set_utilisateur_password(uid, &hash, false)?;
        s.delete_sessions_of(uid, None)?;
        Ok(s.utilisateur_by_id(uid)?.map(|u| u.login))
    })
    .await;
    match used {
        Ok(Some(login)) => {
            let source = client_address(&app, peer.map(|p| p.0 .0), &headers);
            audit(
                &app,
                &login,
                "mot_de_passe",
                "nouveau mot de passe par lien".into(),
                &source,
            )
            .await;
            Redirect::to("/connexion?reinitialise=1").into_response()
        }
        Ok(None) => lien_perime(),
        Err(r) => r,
    }
}
