//! `JobRunner`: the `JobHandler` for `job_runner`. Detection proposes a job for each
//! definition whose schedule is due; execution runs the definition the job's
//! parameters name, reports its output as activities, and returns its structured
//! result and artifacts (also when it fails).

use std::{collections::HashMap, sync::Arc};

use script_runner::{
    output::{OutputEvent, progress_line},
    run::Ending,
};
use worker_sdk::{JobFailure, pb, prelude::*, values};

use crate::{
    JOB_TYPE, artifacts,
    definition::{Definition, valid_env_name},
    descriptor,
    execute::{RunRequest, Runner},
    policy::RunnerPolicy,
};

const DISABLED: &str =
    "the job runner is disabled on this worker; start it with --allow-scripts to run job definitions";

/// The job parameter that names the definition.
pub const PARAM_DEFINITION: &str = "definition";
/// The job parameter that records the definition's pinned source.
pub const PARAM_SOURCE: &str = "source";

/// The `job_runner` job type, bound to the worker's policy.
#[derive(Debug, Clone)]
pub struct JobRunner {
    runner: Arc<Runner>,
    /// When this worker last proposed each scheduled definition (by name and source),
    /// in Unix seconds.
    proposed: Arc<std::sync::Mutex<HashMap<String, i64>>>,
}

impl JobRunner {
    /// Sets up the runner (interpreters, sandbox, helpers); an error when `--sandbox on`
    /// cannot be honoured.
    pub fn new(policy: RunnerPolicy) -> Result<Self, String> {
        let runner = Runner::new(policy)?;
        if runner.policy.allow {
            match &runner.sandbox {
                Ok(_) => tracing::info!("job runner: {}", runner.describe()),
                Err(_) => tracing::warn!("job runner: {}", runner.describe()),
            }
        }
        Ok(JobRunner { runner: Arc::new(runner), proposed: Default::default() })
    }

    pub fn runner(&self) -> &Runner {
        &self.runner
    }
}

/// The definitions saved in the admin's form.
fn definitions(v: &values::Values) -> Result<Vec<Definition>, HandlerError> {
    match values::opt_map(v, "definitions")? {
        None => Ok(Vec::new()),
        Some(map) => {
            let json = serde_json::Value::Object(
                map.iter().map(|(k, v)| (k.clone(), script_runner::settings::to_json(v))).collect(),
            );
            Ok(Definition::parse_all(&json)?)
        }
    }
}

/// The values of the named secrets, as text.
fn secrets(v: &values::Values, names: &[String]) -> Result<Vec<(String, String)>, HandlerError> {
    let all = values::opt_map(v, "secrets")?.unwrap_or_default();
    let mut out = Vec::new();
    for name in names {
        let value = all.get(name).ok_or_else(|| format!("secret {name} is not set in the job type's secrets"))?;
        let text = match script_runner::settings::to_json(value) {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        out.push((name.clone(), text));
    }
    Ok(out)
}

/// Whether a definition scheduled every `minutes` is due at `now` when this worker last
/// proposed it at `last` (Unix seconds): at once when it never did (a new definition, a
/// restarted worker), then whenever a multiple of `minutes` since 00:00 UTC has passed.
pub fn due(minutes: u64, now: i64, last: Option<i64>) -> bool {
    if minutes == 0 {
        return false;
    }
    let slot = |t: i64| t.div_euclid(60 * minutes as i64);
    last.is_none_or(|last| slot(now) > slot(last))
}

#[worker_sdk::async_trait]
impl JobHandler for JobRunner {
    fn capability(&self) -> pb::JobTypeCapability {
        capability(JOB_TYPE, "Job runner")
            .detect(1)
            .execute(2)
            .description(format!("Runs job definitions from pinned sources ({})", self.runner.describe()))
    }

    fn descriptor(&self) -> pb::JobTypeDescriptor {
        descriptor::descriptor()
    }

    async fn detect(
        &self,
        request: pb::RunDetectionRequest,
        out: DetectionSender,
        _cancel: CancellationToken,
    ) -> HandlerResult<()> {
        if !self.runner.policy.allow {
            out.activity(DISABLED).await;
            return Ok(());
        }
        let defs = definitions(&request.admin_config_values)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        let due_now: Vec<&Definition> = {
            let mut proposed = self.proposed.lock().unwrap_or_else(|e| e.into_inner());
            proposed.retain(|key, _| defs.iter().any(|d| schedule_key(d) == *key));
            defs.iter()
                .filter(|d| {
                    let key = schedule_key(d);
                    let due = due(d.schedule_minutes, now, proposed.get(&key).copied());
                    if due {
                        proposed.insert(key, now);
                    }
                    due
                })
                .collect()
        };
        let proposals: Vec<pb::JobProposal> = due_now
            .into_iter()
            .map(|d| pb::JobProposal {
                dedupe_key: format!("job:{}", d.name),
                job_type: JOB_TYPE.to_string(),
                priority: pb::JobPriority::Normal as i32,
                summary: format!("run job definition {}", d.name),
                detail: format!("{} {} from {}", d.runtime.name(), d.entry.join(" "), d.source.pin()),
                parameters: [
                    (PARAM_DEFINITION.to_string(), value::string(d.name.clone())),
                    (PARAM_SOURCE.to_string(), value::string(d.source.pin())),
                ]
                .into(),
                labels: [("definition".to_string(), d.name.clone())].into(),
                ..Default::default()
            })
            .collect();
        if !proposals.is_empty() {
            out.send(proposals).await?;
        }
        Ok(())
    }

    async fn execute(
        &self,
        request: pb::ExecuteJobRequest,
        progress: ProgressSender,
        cancel: CancellationToken,
    ) -> HandlerResult<pb::JobResult> {
        if !self.runner.policy.allow {
            return Err(DISABLED.into());
        }
        let job = request.job.clone().unwrap_or_default();
        let name = values::opt_string(&job.parameters, PARAM_DEFINITION)?
            .ok_or("the job has no definition parameter naming the job definition to run")?;
        let def = definitions(&request.admin_config_values)?
            .into_iter()
            .find(|d| d.name == name)
            .ok_or_else(|| format!("no job definition named {name:?}"))?;
        if let Some(pinned) = values::opt_string(&job.parameters, PARAM_SOURCE)?
            && pinned != def.source.pin()
        {
            return Err(format!(
                "definition {name} changed its source since the job was created (job: {pinned}; now: {})",
                def.source.pin()
            )
            .into());
        }
        if request.attempt > 1 + def.retries as i32 {
            return Err(format!(
                "definition {name} allows {} retries; attempt {} is not run",
                def.retries, request.attempt
            )
            .into());
        }
        let mut env = Vec::new();
        for (key, v) in &job.parameters {
            if key == PARAM_DEFINITION || key == PARAM_SOURCE {
                continue;
            }
            if !valid_env_name(key) {
                return Err(format!("job parameter {key:?} cannot be an environment variable").into());
            }
            env.push((key.clone(), script_runner::settings::env_vars(&[(key.clone(), v.clone())].into())?.remove(0).1));
        }
        env.sort();
        let req = RunRequest {
            job_id: job.job_id.clone(),
            attempt: request.attempt,
            secrets: secrets(&request.admin_config_values, &def.secrets)?,
            env,
        };
        progress.progress(0.0, "fetching", &format!("fetching {}", def.source.pin())).await;

        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let running = self.runner.run(&def, &req, &cancel, Some(tx));
        tokio::pin!(running);
        let report = loop {
            tokio::select! {
                report = &mut running => break report,
                Some(event) = rx.recv() => report_event(&progress, &name, event).await,
            }
        };
        while let Ok(event) = rx.try_recv() {
            report_event(&progress, &name, event).await;
        }
        let report = report?;

        let o = &report.outcome;
        let exit_code = match o.ending {
            Ending::Exited(code) => code as i64,
            _ => -1,
        };
        let mut output_values: HashMap<String, pb::ConfigValue> = [
            ("definition", value::string(def.name.clone())),
            ("source", value::string(def.source.pin())),
            ("source_resolved", value::string(report.source.resolved.clone())),
            ("sandboxed", value::boolean(report.sandboxed)),
            ("exit_code", value::int(exit_code)),
            ("stdout_bytes", value::int(i64::try_from(o.stdout_bytes).unwrap_or(i64::MAX))),
            ("stderr_bytes", value::int(i64::try_from(o.stderr_bytes).unwrap_or(i64::MAX))),
            ("output_truncated", value::boolean(o.truncated)),
            ("elapsed", value::duration(o.elapsed)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let mut summary = None;
        if let Some(result) = report.result {
            summary = result.summary();
            let (values, skipped) = result.into_values(&output_values);
            output_values.extend(values);
            if !skipped.is_empty() {
                output_values.insert("result_fields_skipped".into(), value::string_list(skipped));
            }
        }
        let artifact_names: Vec<String> = report.artifacts.files.iter().map(|(n, _)| n.clone()).collect();
        output_values.extend(report.artifacts.into_values());
        let failure = o.failure(&format!("definition {name}"));
        let summary = summary.unwrap_or_else(|| match &failure {
            Some(f) => f.clone(),
            None => format!(
                "definition {name} exited with code 0 after {:.1}s ({} artifacts: {})",
                o.elapsed.as_secs_f64(),
                artifact_names.len(),
                artifact_names.join(", ")
            ),
        });
        let result = pb::JobResult { output_values, summary };
        match failure {
            Some(message) => Err(JobFailure { message, result }.into()),
            None => {
                progress.progress(100.0, "done", &result.summary).await;
                Ok(result)
            }
        }
    }
}

/// What a schedule is remembered by: the definition's name and its pinned source.
fn schedule_key(d: &Definition) -> String {
    format!("{}\0{}", d.name, d.source.pin())
}

async fn report_event(progress: &ProgressSender, name: &str, event: OutputEvent) {
    match event {
        OutputEvent::Started { pid } => {
            progress.progress(5.0, "running", &format!("definition {name} started as process {pid}")).await;
        }
        OutputEvent::Line { stream, text } => match progress_line(stream, &text) {
            Some((percent, message)) => progress.progress(percent, "running", message).await,
            None => progress.activity(format!("{}: {text}", stream.name())).await,
        },
        OutputEvent::Truncated { limit } => {
            progress.activity(format!("output truncated at {limit} bytes; the rest is dropped")).await;
        }
    }
}

/// Whether an output value name carries an artifact.
pub fn is_artifact(name: &str) -> bool {
    name.starts_with(artifacts::PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_is_due_once_per_slot() {
        assert!(!due(0, 1_000_000, None));
        assert!(due(60, 7200, None));
        assert!(!due(60, 7300, Some(7200)));
        assert!(due(60, 10_800, Some(7300)));
        assert!(due(1, 120, Some(119)));
    }
}
