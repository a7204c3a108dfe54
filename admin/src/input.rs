//! Checks of what workers send against the admin's input limits ([`InputLimits`]): every
//! string's length, every list's count, every blob's encoded size. A check returns the
//! reason for a refusal; the reason names the offending item by its start and its length
//! only, so neither the worker's reply nor the log line ever carries the input in full.

use prost::Message;
use proto::pb::{self, worker_to_admin_message::Body};

use crate::{config::InputLimits, config_value::form_fields, text::clip, validator::is_valid_job_type};

/// Running work items one heartbeat may list (far more than any worker's slots).
pub const MAX_RUNNING_WORK: usize = 1024;

/// How refusals show worker-supplied text: its first bytes, quoted.
pub fn shown(s: &str) -> String {
    format!("{:?}", clip(s, 32))
}

fn text(what: &str, s: &str, max: usize) -> Result<(), String> {
    if s.len() > max { Err(format!("{what} is {} bytes, over the limit of {max}", s.len())) } else { Ok(()) }
}

/// A printable id: no control characters, within the id limit.
fn id(what: &str, s: &str, l: &InputLimits) -> Result<(), String> {
    text(what, s, l.max_id_bytes)?;
    if s.chars().any(char::is_control) {
        return Err(format!("{what} {} holds control characters", shown(s)));
    }
    Ok(())
}

fn count(what: &str, n: usize, max: usize) -> Result<(), String> {
    if n > max { Err(format!("{n} {what}, over the limit of {max}")) } else { Ok(()) }
}

fn size(what: &str, bytes: usize, max: usize) -> Result<(), String> {
    if bytes > max { Err(format!("{what}: {bytes} bytes encoded, over the limit of {max}")) } else { Ok(()) }
}

/// String pairs such as metadata and labels: how many, and each key's and value's length.
fn pairs<'a>(
    what: &str,
    entries: impl ExactSizeIterator<Item = (&'a String, &'a String)>,
    l: &InputLimits,
) -> Result<(), String> {
    count(&format!("{what} entries"), entries.len(), l.max_metadata_entries)?;
    for (k, v) in entries {
        text(&format!("{what} key {}", shown(k)), k, l.max_id_bytes)?;
        text(&format!("{what} value of {}", shown(k)), v, l.max_name_bytes)?;
    }
    Ok(())
}

/// The encoded size of a map of config values (keys and values; framing is ignored).
pub fn values_size(values: &std::collections::HashMap<String, pb::ConfigValue>) -> usize {
    values.iter().map(|(k, v)| k.len() + v.encoded_len()).sum()
}

/// A hello: the worker's identity, its address and metadata, and the job types it offers.
pub fn check_hello(h: &pb::WorkerHello, l: &InputLimits) -> Result<(), String> {
    if h.worker_id.is_empty() {
        return Err("hello needs a non-empty worker_id".into());
    }
    id("worker_id", &h.worker_id, l)?;
    id("worker_instance_id", &h.worker_instance_id, l)?;
    text("worker_version", &h.worker_version, l.max_id_bytes)?;
    text("protocol_version", &h.protocol_version, l.max_id_bytes)?;
    text("address", &h.address, l.max_name_bytes)?;
    pairs("metadata", h.metadata.iter(), l)?;
    count("job types", h.capabilities.len(), l.max_job_types_per_worker)?;
    for cap in &h.capabilities {
        if !is_valid_job_type(&cap.job_type) {
            return Err(format!(
                "job type {} ({} bytes) is not a valid name (1 to 128 letters, digits, '_', '.', '-')",
                shown(&cap.job_type),
                cap.job_type.len()
            ));
        }
        if cap.max_execution_concurrency < 0 || cap.max_detection_concurrency < 0 {
            return Err(format!("job type {:?} has a negative concurrency", cap.job_type));
        }
        text(&format!("the display name of {:?}", cap.job_type), &cap.display_name, l.max_name_bytes)?;
        text(&format!("the description of {:?}", cap.job_type), &cap.description, l.max_text_bytes)?;
    }
    Ok(())
}

/// The ids a reply carries (request, job, job type): the admin's own are short, so a
/// longer one matches nothing and is refused before anything looks it up or logs it.
pub fn check_ids(body: &Body, l: &InputLimits) -> Result<(), String> {
    let (request_id, job_id, job_type) = match body {
        Body::Acknowledge(a) => (&a.request_id, None, None),
        Body::ConfigSchemaResponse(r) => (&r.request_id, None, Some(&r.job_type)),
        Body::DetectionProposals(p) => (&p.request_id, None, Some(&p.job_type)),
        Body::DetectionComplete(d) => (&d.request_id, None, Some(&d.job_type)),
        Body::JobProgressUpdate(u) => (&u.request_id, Some(&u.job_id), Some(&u.job_type)),
        Body::JobCompleted(c) => (&c.request_id, Some(&c.job_id), Some(&c.job_type)),
        Body::ObjectPreviewResponse(r) => (&r.request_id, None, None),
        Body::Hello(_) | Body::Heartbeat(_) | Body::Observations(_) => return Ok(()),
    };
    text("request_id", request_id, l.max_id_bytes)?;
    text("job_id", job_id.map_or("", |s| s.as_str()), l.max_id_bytes)?;
    text("job_type", job_type.map_or("", |s| s.as_str()), l.max_id_bytes)
}

/// A heartbeat: the running work it lists and its metadata.
pub fn check_heartbeat(hb: &pb::WorkerHeartbeat, l: &InputLimits) -> Result<(), String> {
    count("running work items", hb.running_work.len(), MAX_RUNNING_WORK)?;
    for w in &hb.running_work {
        text("a running work id", &w.work_id, l.max_id_bytes)?;
        text("a running work job type", &w.job_type, l.max_id_bytes)?;
        text("a running work stage", &w.stage, l.max_name_bytes)?;
    }
    count("queued job types", hb.queued_jobs_by_type.len(), l.max_job_types_per_worker)?;
    pairs("heartbeat metadata", hb.metadata.iter(), l)
}

/// One proposal of a detection: its ids, texts, labels and parameters.
pub fn check_proposal(p: &pb::JobProposal, l: &InputLimits) -> Result<(), String> {
    text("proposal_id", &p.proposal_id, l.max_id_bytes)?;
    text("dedupe_key", &p.dedupe_key, l.max_name_bytes)?;
    text("summary", &p.summary, l.max_text_bytes)?;
    text("detail", &p.detail, l.max_text_bytes)?;
    pairs("label", p.labels.iter(), l)?;
    size("parameters", values_size(&p.parameters), l.max_parameters_bytes)
}

/// A descriptor: its encoded size, how many fields its forms declare, and their names.
pub fn check_descriptor(d: &pb::JobTypeDescriptor, l: &InputLimits) -> Result<(), String> {
    size("the descriptor", d.encoded_len(), l.max_descriptor_bytes)?;
    text("display_name", &d.display_name, l.max_name_bytes)?;
    let fields: Vec<&pb::ConfigField> =
        form_fields(d.admin_config_form.as_ref()).chain(form_fields(d.worker_config_form.as_ref())).collect();
    count("form fields", fields.len(), l.max_descriptor_fields)?;
    for f in fields {
        text(&format!("field name {}", shown(&f.name)), &f.name, l.max_id_bytes)?;
    }
    Ok(())
}

/// An observations message: its encoded size.
pub fn check_observations(o: &pb::WorkerObservations, l: &InputLimits) -> Result<(), String> {
    size("observations", o.encoded_len(), l.max_observation_bytes)
}

/// Activities beyond the per-message limit are dropped; returns how many were.
pub fn trim_activities(list: &mut Vec<pb::ActivityEvent>, l: &InputLimits) -> usize {
    let over = list.len().saturating_sub(l.max_activities_per_message);
    list.truncate(l.max_activities_per_message);
    over
}

/// A completion whose output values are over the size limit keeps its outcome and summary
/// but loses the values; returns the reason when it did.
pub fn trim_result(done: &mut pb::JobCompleted, l: &InputLimits) -> Option<String> {
    let result = done.result.as_mut()?;
    let bytes = values_size(&result.output_values);
    if bytes <= l.max_parameters_bytes {
        return None;
    }
    result.output_values.clear();
    Some(format!("output values: {bytes} bytes encoded, over the limit of {}; dropped", l.max_parameters_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> InputLimits {
        InputLimits::default()
    }

    fn hello() -> pb::WorkerHello {
        pb::WorkerHello {
            worker_id: "w1".into(),
            address: "10.0.0.1:9000".into(),
            capabilities: vec![pb::JobTypeCapability { job_type: "t".into(), ..Default::default() }],
            ..Default::default()
        }
    }

    #[test]
    fn a_plain_hello_passes() {
        assert_eq!(check_hello(&hello(), &limits()), Ok(()));
    }

    #[test]
    fn an_oversized_address_is_refused_without_being_echoed() {
        let mut h = hello();
        h.address = "x".repeat(5_000_000);
        let err = check_hello(&h, &limits()).unwrap_err();
        assert!(err.contains("address is 5000000 bytes, over the limit of 1024"), "{err}");
        assert!(err.len() < 200, "{err}");
    }

    #[test]
    fn a_long_invalid_job_type_name_is_named_by_its_start_only() {
        let mut h = hello();
        h.capabilities[0].job_type = "y".repeat(3 << 20);
        let err = check_hello(&h, &limits()).unwrap_err();
        assert!(err.contains("3145728 bytes"), "{err}");
        assert!(err.len() < 200, "{err}");
    }

    #[test]
    fn too_many_job_types_metadata_entries_or_control_characters_are_refused() {
        let l = limits();
        let mut h = hello();
        h.capabilities =
            (0..257).map(|i| pb::JobTypeCapability { job_type: format!("t{i}"), ..Default::default() }).collect();
        assert_eq!(check_hello(&h, &l).unwrap_err(), "257 job types, over the limit of 256");
        let mut h = hello();
        h.metadata = (0..65).map(|i| (format!("k{i}"), "v".into())).collect();
        assert!(check_hello(&h, &l).unwrap_err().contains("65 metadata entries"));
        let mut h = hello();
        h.worker_id = "a\nb".into();
        assert!(check_hello(&h, &l).unwrap_err().contains("control characters"));
        let mut h = hello();
        h.capabilities[0].job_type = "../etc".into();
        assert!(check_hello(&h, &l).is_err());
    }

    #[test]
    fn proposals_with_large_parameters_or_labels_are_refused() {
        let l = limits();
        let mut p = pb::JobProposal { dedupe_key: "k".into(), ..Default::default() };
        assert_eq!(check_proposal(&p, &l), Ok(()));
        let blob = pb::ConfigValue { kind: Some(pb::config_value::Kind::BytesValue(vec![0; 70_000])) };
        p.parameters.insert("blob".into(), blob);
        assert!(check_proposal(&p, &l).unwrap_err().starts_with("parameters: 700"), "{:?}", check_proposal(&p, &l));
        p.parameters.clear();
        p.labels.insert("k".into(), "v".repeat(2000));
        assert!(check_proposal(&p, &l).is_err());
    }

    #[test]
    fn replies_with_ids_longer_than_any_the_admin_issues_are_refused() {
        let l = limits();
        let ok = Body::JobCompleted(pb::JobCompleted { request_id: "exec-1".into(), ..Default::default() });
        assert_eq!(check_ids(&ok, &l), Ok(()));
        let long = Body::JobProgressUpdate(pb::JobProgressUpdate { job_id: "j".repeat(300), ..Default::default() });
        assert_eq!(check_ids(&long, &l).unwrap_err(), "job_id is 300 bytes, over the limit of 256");
    }

    #[test]
    fn descriptors_are_bounded_by_size_and_field_count() {
        let l = InputLimits { max_descriptor_fields: 2, ..limits() };
        let field = |n: &str| pb::ConfigField { name: n.into(), ..Default::default() };
        let form = pb::ConfigForm {
            sections: vec![pb::ConfigSection {
                fields: vec![field("a"), field("b"), field("c")],
                ..Default::default()
            }],
            ..Default::default()
        };
        let d = pb::JobTypeDescriptor { job_type: "t".into(), admin_config_form: Some(form), ..Default::default() };
        assert_eq!(check_descriptor(&d, &l).unwrap_err(), "3 form fields, over the limit of 2");
        let small = InputLimits { max_descriptor_bytes: 10, ..limits() };
        assert!(check_descriptor(&d, &small).unwrap_err().starts_with("the descriptor: "));
    }

    #[test]
    fn activities_and_result_values_over_the_limits_are_trimmed() {
        let l = InputLimits { max_activities_per_message: 2, max_parameters_bytes: 16, ..limits() };
        let mut list = vec![pb::ActivityEvent::default(); 5];
        assert_eq!(trim_activities(&mut list, &l), 3);
        assert_eq!(list.len(), 2);
        let big = pb::ConfigValue { kind: Some(pb::config_value::Kind::StringValue("z".repeat(100))) };
        let mut done = pb::JobCompleted {
            result: Some(pb::JobResult {
                output_values: [("out".to_string(), big)].into_iter().collect(),
                summary: "ok".into(),
            }),
            ..Default::default()
        };
        assert!(trim_result(&mut done, &l).is_some());
        let result = done.result.unwrap();
        assert!(result.output_values.is_empty());
        assert_eq!(result.summary, "ok");
    }
}
