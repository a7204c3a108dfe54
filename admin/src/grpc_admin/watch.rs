//! `WatchEvents`: the event bus as a server stream, with resume from an event id as SSE
//! has with `Last-Event-ID` (`http/sse.rs`): the buffered events after the id first, then
//! live ones, each exactly once. An id that is not from this run of the admin, or whose
//! successors left the buffer, gets a `reset` first; so does a stream that falls behind.
//! The stream ends when the admin stops.

use std::pin::Pin;

use proto::admin_pb as api;
use tokio_stream::{
    Stream, StreamExt,
    wrappers::{BroadcastStream, errors::BroadcastStreamRecvError},
};
use tonic::Status;

use super::messages;
use crate::components::Components;

pub type EventStream = Pin<Box<dyn Stream<Item = Result<api::Event, Status>> + Send>>;

pub fn events(state: &Components, after: Option<u64>) -> EventStream {
    let sub = state.events.subscribe_after(after);
    let mut first: Vec<Result<api::Event, Status>> = Vec::new();
    if let Some(reason) = sub.reset {
        first.push(Ok(messages::reset(reason)));
    }
    let replayed_up_to = sub.after;
    first.extend(sub.replay.iter().map(|e| Ok(messages::event(e))));
    let live = BroadcastStream::new(sub.rx).filter_map(move |item| match item {
        Ok(e) if e.id > replayed_up_to => Some(Ok(messages::event(&e))),
        Ok(_) => None,
        Err(BroadcastStreamRecvError::Lagged(n)) => Some(Ok(messages::reset(format!("{n} events were missed")))),
    });
    let shutdown = state.shutdown.clone();
    Box::pin(futures_util::StreamExt::take_until(
        tokio_stream::iter(first).chain(live),
        Box::pin(async move { shutdown.cancelled_owned().await }),
    ))
}
