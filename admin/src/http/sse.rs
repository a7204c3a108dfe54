//! `GET /api/plugin/events`: Server-Sent Events of the event bus, with `Last-Event-ID`
//! replay from the bus's bounded buffer. A client that fell too far behind, or whose id
//! is not from this run of the admin (ids are unique across restarts), gets a `reset`
//! event, meaning "reload your view".

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::State,
    http::HeaderMap,
    response::sse::{Event, KeepAlive, Sse},
};
use tokio_stream::{Stream, StreamExt, wrappers::BroadcastStream, wrappers::errors::BroadcastStreamRecvError};

use super::{ApiQuery, AppState, routes::Routes};

pub fn routes() -> Routes {
    Routes::new().get("/events", events)
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(events))]
pub(super) struct Doc;

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// Replay the events after this id (the `Last-Event-ID` header wins).
    last_event_id: Option<u64>,
}

fn to_sse(e: &crate::events::Event) -> Event {
    let data = serde_json::to_string(e).unwrap_or_else(|_| "{}".into());
    Event::default().id(e.id.to_string()).event(e.kind.name()).data(data)
}

/// The event bus as Server-Sent Events (the event's kind as the SSE event name, its
/// JSON as data; `reset` when a replay cannot be complete), with `Last-Event-ID` replay.
#[utoipa::path(get, path = "/api/plugin/events", tag = "events",
    params(EventsQuery, ("last-event-id" = Option<String>, Header, description = "replay the events after this id")),
    responses((status = 200, description = "an endless event stream", content_type = "text/event-stream", body = String)))]
async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .or(q.last_event_id);
    let sub = state.events.subscribe_after(last);
    let mut first: Vec<Result<Event, Infallible>> = Vec::new();
    if let Some(reason) = &sub.reset {
        first.push(Ok(Event::default().event("reset").data(serde_json::json!({ "reason": reason }).to_string())));
    }
    let replayed_up_to = sub.after;
    first.extend(sub.replay.iter().map(|e| Ok(to_sse(e))));
    let live = BroadcastStream::new(sub.rx).filter_map(move |item| match item {
        Ok(e) if e.id > replayed_up_to => Some(Ok(to_sse(&e))),
        Ok(_) => None,
        Err(BroadcastStreamRecvError::Lagged(n)) => {
            Some(Ok(Event::default().event("reset").data(format!("{{\"reason\":\"{n} events were missed\"}}"))))
        }
    });
    let shutdown = state.shutdown.clone();
    let stream = futures_util::StreamExt::take_until(
        tokio_stream::iter(first).chain(live),
        Box::pin(async move { shutdown.cancelled_owned().await }),
    );
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
