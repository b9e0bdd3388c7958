//! Administration: the audit trail of every management change.

#[allow(unused_imports)]
use super::*;

#[derive(Template)]
#[template(path = "journal.html")]
pub(in crate::web) struct JournalT {
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
pub(in crate::web) const AUDIT_PAGE: u64 = 100;

#[derive(Deserialize)]
pub(in crate::web) struct PageQuery {
    page: Option<u64>,
}

/// The audit trail, for the platform administrator only.
pub(in crate::web) async fn journal(
    State(app): State<App>,
    a: Auth,
    Query(q): Query<PageQuery>,
) -> Response {
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
