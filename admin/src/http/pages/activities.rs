//! The activities timeline: what the admin, detectors and executors reported, newest
//! first, filtered by job type or job, paged by id. The jobs' output lines are left out
//! (the store's feed); each job's log has them.

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    extract::{Query, State},
    response::{IntoResponse, Response},
};
use serde::Deserialize;

use super::{
    Chrome, Flash, PageError, Time,
    jobs::{Choice, job_type_choices},
    percent_encode,
};
use crate::{http::AppState, job::ActivityView, validator::is_valid_job_type};

const PAGE_SIZE: usize = 100;

pub struct ActivityRow {
    pub at: Time,
    pub job_type: String,
    pub job_id: String,
    pub source: &'static str,
    /// `source` as the pages say it (a worker that named no source is "worker").
    pub source_label: &'static str,
    pub stage: String,
    pub message: String,
}

impl ActivityRow {
    pub fn from_view(a: &ActivityView) -> ActivityRow {
        ActivityRow {
            at: Time::at(a.created_at),
            job_type: a.job_type.clone(),
            job_id: a.job_id.clone(),
            source: a.source,
            source_label: if a.source == "unspecified" { "worker" } else { a.source },
            stage: a.stage.clone(),
            message: a.message.clone(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ActivitiesFilter {
    pub job_type: Option<String>,
    pub job_id: Option<String>,
    pub before: Option<i64>,
}

#[derive(Template, WebTemplate)]
#[template(path = "activities.html")]
pub struct ActivitiesPage {
    pub page: Chrome,
    pub activities: Vec<ActivityRow>,
    pub job_types: Vec<Choice>,
    pub job_id: String,
    pub filter_job_type: String,
    pub older: String,
    pub newest: String,
    pub first_page: bool,
    pub filter_error: String,
}

pub async fn page(
    State(state): State<AppState>,
    Query(filter): Query<ActivitiesFilter>,
    Query(flash): Query<Flash>,
) -> Result<Response, PageError> {
    let chrome = Chrome::new(&state, "Activities", "activities", &flash);
    let job_type = filter.job_type.clone().map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
    let job_id = filter.job_id.clone().map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
    let mut filter_error = String::new();
    let activities = if job_type.as_deref().is_some_and(|t| !is_valid_job_type(t)) {
        filter_error = "That job type is not a valid name (letters, digits, '_', '.', '-').".into();
        Vec::new()
    } else {
        state.store.settle().await;
        state.store.feed(job_type.as_deref(), job_id.as_deref(), filter.before, PAGE_SIZE)?
    };
    let mut base = Vec::new();
    if let Some(t) = &job_type {
        base.push(format!("job_type={}", percent_encode(t)));
    }
    if let Some(j) = &job_id {
        base.push(format!("job_id={}", percent_encode(j)));
    }
    let link = |extra: Option<String>| {
        let q: Vec<String> = base.iter().cloned().chain(extra).collect();
        if q.is_empty() { "/plugin/activities".to_string() } else { format!("/plugin/activities?{}", q.join("&")) }
    };
    let older = (activities.len() == PAGE_SIZE)
        .then(|| activities.last().map(|a| link(Some(format!("before={}", a.id)))))
        .flatten()
        .unwrap_or_default();
    let page = ActivitiesPage {
        page: chrome,
        activities: activities.iter().map(ActivityRow::from_view).collect(),
        job_types: job_type_choices(&state, job_type.as_deref().unwrap_or_default()),
        job_id: job_id.unwrap_or_default(),
        filter_job_type: job_type.unwrap_or_default(),
        older,
        newest: if filter.before.is_some() { link(None) } else { String::new() },
        first_page: filter.before.is_none(),
        filter_error,
    };
    Ok(page.into_response())
}
