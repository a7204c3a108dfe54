//! The wire contract round-trips: every message of plugin.proto, every oneof member,
//! populated with non-default values, through binary protobuf and proto JSON (value
//! and pretty text); JSON uses snake_case names and enum names, and rejects unknown
//! fields. A coverage check against the descriptor pool keeps the list complete.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt::Debug,
};

use proto::{
    Duration, ProtoName, Timestamp,
    pb::{
        self, admin_to_worker_message::Body as AdminBody, config_value::Kind,
        worker_to_admin_message::Body as WorkerBody,
    },
};

/// JSON keys seen per message, over all samples (for the oneof coverage check).
#[derive(Default)]
struct Seen(BTreeMap<&'static str, BTreeSet<String>>);

impl Seen {
    /// Round-trips `message` every way the contract allows and checks that every
    /// field outside a oneof is set (present in proto JSON, which omits defaults).
    fn check<M>(&mut self, message: M)
    where
        M: prost::Message + Default + PartialEq + Debug + ProtoName,
    {
        let name = M::FULL_NAME;
        let decoded = M::decode(message.encode_to_vec().as_slice()).expect("binary decodes");
        assert_eq!(decoded, message, "binary round trip of {name}");

        let value = proto::json::to_value(&message).expect("to JSON value");
        let back: M = proto::json::from_value(value.clone()).expect("from JSON value");
        assert_eq!(back, message, "JSON value round trip of {name}");

        let text = proto::json::to_string_pretty(&message).expect("to pretty JSON");
        let back: M = proto::json::from_str(&text).expect("from pretty JSON");
        assert_eq!(back, message, "pretty JSON round trip of {name}");

        let keys: BTreeSet<String> = value.as_object().expect("a JSON object").keys().cloned().collect();
        let descriptor = proto::descriptor_pool().get_message_by_name(name).expect("in the pool");
        for field in descriptor.fields() {
            if field.containing_oneof().is_none() {
                assert!(keys.contains(field.name()), "{name}.{} is unset (or not snake_case) in {text}", field.name());
            }
        }
        self.0.entry(name).or_default().extend(keys);
    }
}

fn ts(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 250_000_000 })
}

fn duration() -> Duration {
    Duration { seconds: 90, nanos: 500_000_000 }
}

fn strings(prefix: &str) -> Vec<String> {
    vec![format!("{prefix}-1"), format!("{prefix}-2")]
}

fn labels() -> HashMap<String, String> {
    [("team".to_string(), "storage".to_string()), ("zone".to_string(), "b".to_string())].into()
}

fn cv(kind: Kind) -> pb::ConfigValue {
    pb::ConfigValue { kind: Some(kind) }
}

/// One value of every ConfigValue kind.
fn every_value_kind() -> Vec<pb::ConfigValue> {
    vec![
        cv(Kind::BoolValue(true)),
        cv(Kind::Int64Value(-9_000_000_001)),
        cv(Kind::DoubleValue(42.5)),
        cv(Kind::StringValue("text".into())),
        cv(Kind::BytesValue(vec![0, 1, 254, 255])),
        cv(Kind::DurationValue(duration())),
        cv(Kind::StringList(pb::StringList { values: strings("s") })),
        cv(Kind::Int64List(pb::Int64List { values: vec![1, -2, 3_000_000_000] })),
        cv(Kind::DoubleList(pb::DoubleList { values: vec![0.5, -1.25] })),
        cv(Kind::BoolList(pb::BoolList { values: vec![true, false] })),
        cv(Kind::ListValue(pb::ValueList { values: vec![cv(Kind::Int64Value(1)), cv(Kind::StringValue("x".into()))] })),
        cv(Kind::MapValue(pb::ValueMap { fields: [("inner".to_string(), cv(Kind::BoolValue(true)))].into() })),
    ]
}

/// A map holding every kind of value.
fn values() -> HashMap<String, pb::ConfigValue> {
    every_value_kind().into_iter().enumerate().map(|(i, v)| (format!("v{i}"), v)).collect()
}

fn capability() -> pb::JobTypeCapability {
    pb::JobTypeCapability {
        job_type: "vacuum".into(),
        can_detect: true,
        can_execute: true,
        max_detection_concurrency: 2,
        max_execution_concurrency: 4,
        display_name: "Vacuum".into(),
        description: "reclaims space".into(),
        weight: 3,
    }
}

fn running_work() -> pb::RunningWork {
    pb::RunningWork {
        work_id: "req-7".into(),
        kind: pb::WorkKind::Execution as i32,
        job_type: "vacuum".into(),
        state: pb::JobState::Running as i32,
        progress_percent: 37.5,
        stage: "copy".into(),
    }
}

fn option() -> pb::ConfigOption {
    pb::ConfigOption { value: "zst".into(), label: "Zstandard".into(), description: "fast".into(), disabled: true }
}

fn rule() -> pb::ValidationRule {
    pb::ValidationRule {
        r#type: pb::ValidationRuleType::Regex as i32,
        expression: "^[a-z]+$".into(),
        error_message: "lowercase only".into(),
    }
}

fn field() -> pb::ConfigField {
    pb::ConfigField {
        name: "format".into(),
        label: "Format".into(),
        description: "output format".into(),
        help_text: "pick one".into(),
        placeholder: "zst".into(),
        field_type: pb::ConfigFieldType::Enum as i32,
        widget: pb::ConfigWidget::Select as i32,
        required: true,
        read_only: true,
        sensitive: true,
        min_value: Some(cv(Kind::Int64Value(1))),
        max_value: Some(cv(Kind::DoubleValue(9.5))),
        options: vec![option()],
        validation_rules: vec![rule()],
        visible_when_field: "mode".into(),
        visible_when_equals: Some(cv(Kind::StringValue("advanced".into()))),
    }
}

fn section() -> pb::ConfigSection {
    pb::ConfigSection {
        section_id: "scan".into(),
        title: "What to scan".into(),
        description: "paths and limits".into(),
        fields: vec![field()],
    }
}

fn form() -> pb::ConfigForm {
    pb::ConfigForm {
        form_id: "admin".into(),
        title: "Scope".into(),
        description: "where and how".into(),
        sections: vec![section()],
        default_values: values(),
    }
}

fn runtime_defaults() -> pb::AdminRuntimeDefaults {
    pb::AdminRuntimeDefaults {
        enabled: true,
        detection_interval_minutes: 10,
        detection_timeout_seconds: 60,
        max_jobs_per_detection: 100,
        global_execution_concurrency: 8,
        per_worker_execution_concurrency: 2,
        retry_limit: 3,
        retry_backoff_seconds: 30,
        job_type_max_runtime_seconds: 3600,
        execution_timeout_seconds: 600,
    }
}

fn runtime() -> pb::AdminRuntimeConfig {
    pb::AdminRuntimeConfig {
        enabled: true,
        detection_interval_minutes: 11,
        detection_timeout_seconds: 61,
        max_jobs_per_detection: 101,
        global_execution_concurrency: 9,
        per_worker_execution_concurrency: 3,
        retry_limit: 4,
        retry_backoff_seconds: 31,
        job_type_max_runtime_seconds: 3601,
        execution_timeout_seconds: 601,
    }
}

fn descriptor() -> pb::JobTypeDescriptor {
    pb::JobTypeDescriptor {
        job_type: "vacuum".into(),
        display_name: "Vacuum".into(),
        description: "reclaims space".into(),
        icon: "broom".into(),
        descriptor_version: 7,
        admin_config_form: Some(form()),
        worker_config_form: Some(pb::ConfigForm { form_id: "worker".into(), ..form() }),
        admin_runtime_defaults: Some(runtime_defaults()),
        worker_default_values: values(),
    }
}

fn cluster() -> pb::ClusterContext {
    pb::ClusterContext {
        master_grpc_addresses: strings("master"),
        filer_addresses: strings("filer"),
        volume_grpc_addresses: strings("volume"),
        metadata: labels(),
        s3_grpc_addresses: strings("s3"),
    }
}

fn activity() -> pb::ActivityEvent {
    pb::ActivityEvent {
        source: pb::ActivitySource::Executor as i32,
        message: "copied 10 files".into(),
        stage: "copy".into(),
        details: values(),
        created_at: ts(1_700_000_001),
    }
}

fn proposal() -> pb::JobProposal {
    pb::JobProposal {
        proposal_id: "p-1".into(),
        dedupe_key: "/data/a.db".into(),
        job_type: "vacuum".into(),
        priority: pb::JobPriority::High as i32,
        summary: "vacuum a.db".into(),
        detail: "40% free pages".into(),
        parameters: values(),
        labels: labels(),
        not_before: ts(1_700_000_002),
        expires_at: ts(1_700_000_003),
    }
}

fn job_spec() -> pb::JobSpec {
    pb::JobSpec {
        job_id: "job-1".into(),
        job_type: "vacuum".into(),
        dedupe_key: "/data/a.db".into(),
        priority: pb::JobPriority::Critical as i32,
        summary: "vacuum a.db".into(),
        detail: "40% free pages".into(),
        parameters: values(),
        labels: labels(),
        created_at: ts(1_700_000_004),
        scheduled_at: ts(1_700_000_005),
    }
}

fn job_result() -> pb::JobResult {
    pb::JobResult { output_values: values(), summary: "freed 3 MiB".into() }
}

fn observation() -> pb::ObjectObservation {
    pb::ObjectObservation {
        object_id: strings("obj"),
        object_kind: "file".into(),
        format: "sqlite".into(),
        attributes: values(),
        observed_at: ts(1_700_000_006),
    }
}

fn preview_row() -> pb::PreviewRow {
    pb::PreviewRow { values: strings("cell") }
}

fn worker_bodies() -> Vec<WorkerBody> {
    vec![
        WorkerBody::Hello(hello()),
        WorkerBody::Heartbeat(heartbeat()),
        WorkerBody::Acknowledge(ack()),
        WorkerBody::ConfigSchemaResponse(schema_response()),
        WorkerBody::DetectionProposals(proposals()),
        WorkerBody::DetectionComplete(detection_complete()),
        WorkerBody::JobProgressUpdate(progress()),
        WorkerBody::JobCompleted(completed()),
        WorkerBody::Observations(observations()),
        WorkerBody::ObjectPreviewResponse(preview_response()),
    ]
}

fn admin_bodies() -> Vec<AdminBody> {
    vec![
        AdminBody::Hello(admin_hello()),
        AdminBody::RequestConfigSchema(request_schema()),
        AdminBody::RunDetectionRequest(run_detection()),
        AdminBody::ExecuteJobRequest(execute()),
        AdminBody::CancelRequest(cancel()),
        AdminBody::Shutdown(shutdown()),
        AdminBody::RequestObjectPreview(request_preview()),
    ]
}

fn hello() -> pb::WorkerHello {
    pb::WorkerHello {
        worker_id: "worker-1".into(),
        worker_instance_id: "inst-1".into(),
        address: "10.0.0.5:9000".into(),
        worker_version: "1.2.3".into(),
        protocol_version: proto::PROTOCOL_VERSION.into(),
        capabilities: vec![capability()],
        metadata: labels(),
    }
}

fn admin_hello() -> pb::AdminHello {
    pb::AdminHello {
        accepted: true,
        message: "welcome".into(),
        heartbeat_interval_seconds: 5,
        reconnect_delay_seconds: 2,
    }
}

fn heartbeat() -> pb::WorkerHeartbeat {
    pb::WorkerHeartbeat {
        worker_id: "worker-1".into(),
        running_work: vec![running_work()],
        detection_slots_used: 1,
        detection_slots_total: 2,
        execution_slots_used: 3,
        execution_slots_total: 4,
        queued_jobs_by_type: [("vacuum".to_string(), 5)].into(),
        metadata: labels(),
    }
}

fn ack() -> pb::WorkerAcknowledge {
    pb::WorkerAcknowledge { request_id: "req-1".into(), accepted: true, message: "job started".into() }
}

fn request_schema() -> pb::RequestConfigSchema {
    pb::RequestConfigSchema { job_type: "vacuum".into(), force_refresh: true }
}

fn schema_response() -> pb::ConfigSchemaResponse {
    pb::ConfigSchemaResponse {
        request_id: "req-2".into(),
        job_type: "vacuum".into(),
        success: true,
        error_message: "none".into(),
        job_type_descriptor: Some(descriptor()),
    }
}

fn run_detection() -> pb::RunDetectionRequest {
    pb::RunDetectionRequest {
        request_id: "req-3".into(),
        job_type: "vacuum".into(),
        detection_sequence: 12,
        admin_runtime: Some(runtime()),
        admin_config_values: values(),
        worker_config_values: values(),
        cluster_context: Some(cluster()),
        last_successful_run: ts(1_700_000_007),
        max_results: 50,
    }
}

fn proposals() -> pb::DetectionProposals {
    pb::DetectionProposals {
        request_id: "req-3".into(),
        job_type: "vacuum".into(),
        proposals: vec![proposal()],
        has_more: true,
    }
}

fn detection_complete() -> pb::DetectionComplete {
    pb::DetectionComplete {
        request_id: "req-3".into(),
        job_type: "vacuum".into(),
        success: true,
        error_message: "partial".into(),
        total_proposals: 9,
    }
}

fn execute() -> pb::ExecuteJobRequest {
    pb::ExecuteJobRequest {
        request_id: "req-4".into(),
        job: Some(job_spec()),
        admin_runtime: Some(runtime()),
        admin_config_values: values(),
        worker_config_values: values(),
        cluster_context: Some(cluster()),
        attempt: 2,
    }
}

fn progress() -> pb::JobProgressUpdate {
    pb::JobProgressUpdate {
        request_id: "req-4".into(),
        job_id: "job-1".into(),
        job_type: "vacuum".into(),
        state: pb::JobState::Running as i32,
        progress_percent: 62.5,
        stage: "copy".into(),
        message: "copying".into(),
        metrics: values(),
        activities: vec![activity()],
        updated_at: ts(1_700_000_008),
    }
}

fn completed() -> pb::JobCompleted {
    pb::JobCompleted {
        request_id: "req-4".into(),
        job_id: "job-1".into(),
        job_type: "vacuum".into(),
        success: true,
        error_message: "warnings".into(),
        result: Some(job_result()),
        activities: vec![activity()],
        completed_at: ts(1_700_000_009),
    }
}

fn cancel() -> pb::CancelRequest {
    pb::CancelRequest {
        target_id: "req-4".into(),
        target_kind: pb::WorkKind::Detection as i32,
        reason: "operator".into(),
        force: true,
    }
}

fn shutdown() -> pb::AdminShutdown {
    pb::AdminShutdown { reason: "maintenance".into(), grace_period_seconds: 30 }
}

fn persisted() -> pb::PersistedJobTypeConfig {
    pb::PersistedJobTypeConfig {
        job_type: "vacuum".into(),
        descriptor_version: 7,
        admin_config_values: values(),
        worker_config_values: values(),
        admin_runtime: Some(runtime()),
        updated_at: ts(1_700_000_010),
        updated_by: "alice".into(),
    }
}

fn observations() -> pb::WorkerObservations {
    pb::WorkerObservations { job_type: "vacuum".into(), observations: vec![observation()] }
}

fn request_preview() -> pb::RequestObjectPreview {
    pb::RequestObjectPreview { object_id: strings("obj"), format: "csv".into(), row_limit: 10 }
}

fn preview_response() -> pb::ObjectPreviewResponse {
    pb::ObjectPreviewResponse {
        success: true,
        error_message: "truncated".into(),
        columns: strings("col"),
        rows: vec![preview_row()],
        total_rows: 1_000_000_000_000,
        request_id: "req-5".into(),
    }
}

#[test]
fn every_message_of_the_contract_round_trips_through_binary_and_proto_json() {
    let mut seen = Seen::default();

    for body in worker_bodies() {
        seen.check(pb::WorkerToAdminMessage {
            worker_id: "worker-1".into(),
            sent_at: ts(1_700_000_100),
            body: Some(body),
        });
    }
    for body in admin_bodies() {
        seen.check(pb::AdminToWorkerMessage {
            request_id: "req-9".into(),
            sent_at: ts(1_700_000_101),
            body: Some(body),
        });
    }
    seen.check(hello());
    seen.check(admin_hello());
    seen.check(heartbeat());
    seen.check(ack());
    seen.check(running_work());
    seen.check(capability());
    seen.check(request_schema());
    seen.check(schema_response());
    seen.check(descriptor());
    seen.check(form());
    seen.check(section());
    seen.check(field());
    seen.check(option());
    seen.check(rule());
    for value in every_value_kind() {
        seen.check(value);
    }
    seen.check(pb::StringList { values: strings("s") });
    seen.check(pb::Int64List { values: vec![-1, i64::MAX] });
    seen.check(pb::DoubleList { values: vec![1.5, -0.125] });
    seen.check(pb::BoolList { values: vec![true, false, true] });
    seen.check(pb::ValueList { values: every_value_kind() });
    seen.check(pb::ValueMap { fields: values() });
    seen.check(runtime_defaults());
    seen.check(runtime());
    seen.check(run_detection());
    seen.check(proposals());
    seen.check(detection_complete());
    seen.check(proposal());
    seen.check(execute());
    seen.check(job_spec());
    seen.check(progress());
    seen.check(completed());
    seen.check(job_result());
    seen.check(cluster());
    seen.check(activity());
    seen.check(cancel());
    seen.check(shutdown());
    seen.check(persisted());
    seen.check(observations());
    seen.check(observation());
    seen.check(request_preview());
    seen.check(preview_response());
    seen.check(preview_row());

    // Coverage: every message of package plugin was checked, and every oneof member
    // appeared in some sample.
    let pool = proto::descriptor_pool();
    let mut missing = Vec::new();
    for message in pool.all_messages().filter(|m| m.package_name() == "plugin" && !m.is_map_entry()) {
        let Some(keys) = seen.0.get(message.full_name()) else {
            missing.push(message.full_name().to_string());
            continue;
        };
        for field in message.fields() {
            if !keys.contains(field.name()) {
                missing.push(format!("{}.{}", message.full_name(), field.name()));
            }
        }
    }
    assert!(missing.is_empty(), "not covered by a sample: {missing:?}");
    assert!(seen.0.len() >= 40, "the contract has 40-odd messages, checked {}", seen.0.len());
}

#[test]
fn proto_json_uses_snake_case_field_names_and_enum_names() {
    let json = proto::json::to_value(&pb::WorkerToAdminMessage {
        worker_id: "worker-1".into(),
        sent_at: ts(1_700_000_000),
        body: Some(WorkerBody::Heartbeat(heartbeat())),
    })
    .unwrap();
    assert_eq!(json["worker_id"], "worker-1");
    assert_eq!(json["sent_at"], "2023-11-14T22:13:20.250Z");
    let heartbeat = &json["heartbeat"];
    assert_eq!(heartbeat["execution_slots_total"], 4);
    assert_eq!(heartbeat["running_work"][0]["kind"], "WORK_KIND_EXECUTION");
    assert_eq!(heartbeat["running_work"][0]["state"], "JOB_STATE_RUNNING");
    assert_eq!(heartbeat["running_work"][0]["progress_percent"], 37.5);

    let field = proto::json::to_value(&field()).unwrap();
    assert_eq!(field["field_type"], "CONFIG_FIELD_TYPE_ENUM");
    assert_eq!(field["widget"], "CONFIG_WIDGET_SELECT");
    assert_eq!(field["validation_rules"][0]["type"], "VALIDATION_RULE_TYPE_REGEX");
    assert_eq!(field["visible_when_equals"]["string_value"], "advanced");

    let value = proto::json::to_value(&cv(Kind::DurationValue(duration()))).unwrap();
    assert_eq!(value["duration_value"], "90.500s");
    let priority = proto::json::to_value(&proposal()).unwrap();
    assert_eq!(priority["priority"], "JOB_PRIORITY_HIGH");
    let source = proto::json::to_value(&activity()).unwrap();
    assert_eq!(source["source"], "ACTIVITY_SOURCE_EXECUTOR");
}

#[test]
fn proto_json_accepts_enum_names_when_reading() {
    let work: pb::RunningWork =
        proto::json::from_str(r#"{"work_id":"r","kind":"WORK_KIND_DETECTION","state":"JOB_STATE_CANCELED"}"#).unwrap();
    assert_eq!(work.kind, pb::WorkKind::Detection as i32);
    assert_eq!(work.state, pb::JobState::Canceled as i32);
}

#[test]
fn proto_json_rejects_unknown_fields() {
    let err = proto::json::from_str::<pb::WorkerHello>(r#"{"worker_id":"w","no_such_field":1}"#).unwrap_err();
    assert!(err.to_string().contains("no_such_field"), "{err}");
    let err = proto::json::from_value::<pb::AdminShutdown>(serde_json::json!({"reason":"x","grace":3}));
    assert!(err.is_err());
}
