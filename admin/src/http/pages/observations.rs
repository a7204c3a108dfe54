//! Observations on a job type's page (what its workers last saw of each object) and the
//! preview of one object on demand: the Preview button asks a worker through the command
//! layer and shows the rows it sends (at most 200) as a table.

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    Extension, Form,
    extract::{Path, State, rejection::FormRejection},
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use proto::pb;

use super::{Chrome, Flash, PageError, Time, csrf, forms, forms::Posted, jobs::posted, see_other};
use crate::{
    commands::{Caller, Command, Outcome},
    http::AppState,
    observations::{ObservationView, PreviewView},
};

/// Observations shown on a job type's page.
pub const SHOWN: usize = 50;

/// One object's newest observation, as the job type page shows it.
pub struct ObservationRow {
    /// The object id path, joined with `/`.
    pub path: String,
    pub kind: String,
    pub format: String,
    /// `name = value`, each attribute.
    pub attributes: Vec<(String, String)>,
    pub worker_id: String,
    pub observed: Time,
}

impl ObservationRow {
    pub fn of(v: &ObservationView) -> ObservationRow {
        let mut attributes: Vec<(String, String)> = v
            .attributes
            .iter()
            .map(|(k, json)| {
                let shown = proto::json::from_value::<pb::ConfigValue>(json.clone())
                    .map(|value| super::display_named(k, &value, forms::display))
                    .unwrap_or_else(|_| json.to_string());
                (k.clone(), shown)
            })
            .collect();
        attributes.sort();
        ObservationRow {
            path: v.object_id.join("/"),
            kind: v.object_kind.clone(),
            format: v.format.clone(),
            attributes,
            worker_id: v.worker_id.clone(),
            observed: Time::at(if v.observed_at > 0 { v.observed_at } else { v.received_at }),
        }
    }
}

/// The newest observations of a job type, for its page.
pub fn rows(state: &AppState, job_type: &str) -> (Vec<ObservationRow>, usize) {
    let all = state.observations.list(Some(job_type), None);
    (all.iter().take(SHOWN).map(ObservationRow::of).collect(), all.len())
}

#[derive(Template, WebTemplate)]
#[template(path = "preview.html")]
pub struct PreviewPage {
    pub page: Chrome,
    pub job_type: String,
    pub job_type_q: String,
    pub path: String,
    pub preview: PreviewView,
    pub at: Time,
}

/// `POST /plugin/job-types/{t}/preview` with `object` (`db/table`) and `format`.
pub async fn preview(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(t): Path<String>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Response, PageError> {
    let pairs = posted(form)?;
    csrf::check(&headers, &pairs)?;
    let job_type_q = super::percent_encode(&t);
    let back =
        super::back_or(Posted(&pairs).first("back"), &format!("{}#observations", super::job_type_page(&t, "history")));
    let path = Posted(&pairs).first("object").unwrap_or_default().trim().to_string();
    let object_id: Vec<String> = path.split('/').filter(|p| !p.is_empty()).map(String::from).collect();
    let format = Posted(&pairs).first("format").unwrap_or_default().to_string();
    let request = pb::RequestObjectPreview { object_id, format, row_limit: 0 };
    match state.execute(&caller, Command::PreviewObject { job_type: t.clone(), request }).await {
        Ok(Outcome::Preview(preview)) => {
            let page = PreviewPage {
                page: Chrome::new(&state, format!("Preview of {path}"), "overview", &Flash::default()),
                job_type: t,
                job_type_q,
                path,
                preview: *preview,
                at: Time::at(state.clock.now_ms()),
            };
            Ok(page.into_response())
        }
        Ok(_) => Ok(see_other(&back, Err("The preview gave no rows.".into()))),
        Err(e) => Ok(see_other(&back, Err(super::sentence(&e.to_string())))),
    }
}
