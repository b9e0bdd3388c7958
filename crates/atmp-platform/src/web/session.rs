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
            retour: safe_return(&f.retour).unwrap_or("").to_string(),
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
    };
    render(StatusCode::OK, &t)
}
