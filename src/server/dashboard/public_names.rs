//! The dashboard's marks for the public insights page: which names it may publish, shown as a
//! toggle beside each name in the usage and environment views, and the form that changes one
//! (audited, as every dashboard change is).

use actix_web::web;

use super::session::{self, Form};
use super::{see_other, DashboardError, FormResponses, Page};
use crate::protocol::percent_encode as encode;
use crate::server::{blocking, AppState};
use crate::store;

/// A name's mark for the public page: whether it is public, and the form that changes it.
pub struct PublicToggle {
    pub public: bool,
    /// Set by the `public_names` setting: the dashboard cannot take it away.
    pub configured: bool,
    pub action: String,
}

/// Per name of `kind`: its mark for the public page and the form that changes it, where the
/// public page can list that kind.
pub(super) fn public_toggles<'a>(
    state: &AppState,
    kind: &str,
    names: impl Iterator<Item = &'a str>,
    marked: &store::PublicNames,
) -> Vec<Option<PublicToggle>> {
    let configured = state.public.as_ref().map(|p| p.configured().clone()).unwrap_or_default();
    names
        .map(|name| {
            store::PUBLIC_KINDS.contains(&kind).then(|| {
                let key = (kind.to_owned(), name.to_owned());
                let (configured, public) = (configured.contains(&key), marked.contains(&key));
                PublicToggle {
                    public: public || configured,
                    configured,
                    action: public_name_path(kind, if public { "withhold" } else { "publish" }, name),
                }
            })
        })
        .collect()
}

/// The form address that marks a name public or withholds it: each segment of the name
/// encoded apart, so the route's tail receives its slashes as they are.
fn public_name_path(kind: &str, decision: &str, name: &str) -> String {
    let name: Vec<String> = name.split('/').map(|segment| encode(segment).to_string()).collect();
    format!("/admin/public-names/{kind}/{decision}/{}", name.join("/"))
}

/// Marks a name public on the public insights page (`publish`), or takes the mark away
/// (`withhold`). Recorded in the audit log, with the kind, the decision and the name. It takes
/// effect with the next month's publication: a month already published is never revised.
#[utoipa::path(post, path = "/admin/public-names/{kind}/{decision}/{name}", tag = "dashboard", security(("dashboard_session" = [])),
    params(("kind" = String, Path, description = "api, command, feature, module or version"),
        ("decision" = String, Path, description = "publish or withhold"),
        ("name" = String, Path, description = "The name, as the usage view lists it")),
    request_body( content_type = "application/x-www-form-urlencoded", description = "With the form token, `csrf`"),
    responses(FormResponses))]
pub async fn public_name(
    trail: crate::server::audit::Trail,
    state: web::Data<AppState>,
    path: web::Path<(String, String, String)>,
    form: Form<session::Token>,
) -> Page {
    form.session.may_change()?;
    let (kind, decision, name) = path.into_inner();
    let Some(kind) = store::PUBLIC_KINDS.iter().find(|k| **k == kind) else {
        return Err(DashboardError::BadRequest(format!(
            "{kind:?} is not a kind the public page lists ({})",
            store::PUBLIC_KINDS.join(", ")
        )));
    };
    let public = match decision.as_str() {
        "publish" => true,
        "withhold" => false,
        _ => return Err(DashboardError::BadRequest(format!("{decision:?} is neither publish nor withhold"))),
    };
    if !crate::privacy::fits_name_grammar(&name) {
        return Err(DashboardError::BadRequest(format!("{name:?} is not a name the usage views list")));
    }
    let (store, now) = (state.store.clone(), (state.clock)());
    let n = name.clone();
    let audit = trail.audit(actix_web::http::StatusCode::SEE_OTHER);
    blocking(move || Ok(store.set_public_name(kind, &n, public, now, Some(&audit))?)).await?;
    tracing::info!(kind, name = %name, public, "public name marked from the dashboard");
    Ok(see_other(&match *kind {
        "module" => "/admin/environment".to_owned(),
        "version" => "/admin/overview".to_owned(),
        usage => format!("/admin/usage?kind={usage}"),
    }))
}
