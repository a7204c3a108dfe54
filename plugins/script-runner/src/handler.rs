//! `ScriptRunner`: the `JobHandler` for `script`. Detection proposes one run of the
//! configured script; execution runs it under the worker's [`ScriptPolicy`] and turns
//! its output into activities.

use worker_sdk::{pb, prelude::*};

use crate::{
    JOB_TYPE,
    command::{RunIdentity, ScriptCommand},
    descriptor,
    output::{OutputEvent, progress_line},
    policy::ScriptPolicy,
    run::{RunSpec, run},
    settings::{self, ScriptSettings, Source},
};

const DISABLED: &str = "scripts are disabled on this worker; start it with --allow-scripts to run them";

/// The `script` job type, bound to the worker's policy.
#[derive(Debug, Clone)]
pub struct ScriptRunner {
    policy: ScriptPolicy,
}

impl ScriptRunner {
    pub fn new(policy: ScriptPolicy) -> Self {
        ScriptRunner { policy }
    }

    pub fn policy(&self) -> &ScriptPolicy {
        &self.policy
    }
}

#[worker_sdk::async_trait]
impl JobHandler for ScriptRunner {
    fn capability(&self) -> pb::JobTypeCapability {
        capability(JOB_TYPE, "Script").detect(1).execute(1).description("Runs operator-defined scripts on a schedule")
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
        if !self.policy.allow {
            out.activity(DISABLED).await;
            return Ok(());
        }
        let Some(s) = ScriptSettings::from_values(&request.admin_config_values)? else {
            out.activity("no script configured").await;
            return Ok(());
        };
        let source = match &s.source {
            Source::Inline(text) => format!("{} lines written in the form", text.lines().count()),
            Source::File(file) => format!("file {}", file.display()),
        };
        let proposal = pb::JobProposal {
            dedupe_key: format!("script:{}", s.name),
            job_type: JOB_TYPE.to_string(),
            priority: pb::JobPriority::Normal as i32,
            summary: format!("run script {}", s.name),
            detail: format!("{} script, {source}, timeout {}s", s.interpreter.program(), s.timeout.as_secs()),
            // The environment travels as the job's parameters, so each job records the
            // values it ran with. Secrets never do: they are read at execution time.
            parameters: s.env.iter().map(|(k, v)| (k.clone(), value::string(v.clone()))).collect(),
            labels: [("script".to_string(), s.name.clone())].into(),
            ..Default::default()
        };
        out.send(vec![proposal]).await?;
        Ok(())
    }

    async fn execute(
        &self,
        request: pb::ExecuteJobRequest,
        progress: ProgressSender,
        cancel: CancellationToken,
    ) -> HandlerResult<pb::JobResult> {
        if !self.policy.allow {
            return Err(DISABLED.into());
        }
        let s = ScriptSettings::from_values(&request.admin_config_values)?.ok_or("no script configured")?;
        let job = request.job.unwrap_or_default();
        let parameters = settings::env_vars(&job.parameters)?;
        let who = RunIdentity { script_name: s.name.clone(), job_id: job.job_id.clone(), attempt: request.attempt };
        std::fs::create_dir_all(&self.policy.work_dir)
            .map_err(|e| format!("scripts directory {}: {e}", self.policy.work_dir.display()))?;
        let command = ScriptCommand::new(&self.policy, s.interpreter, &s.source, &parameters, &who)?;
        let spec = RunSpec {
            command,
            stdin: format!("{}\n", s.secrets_json).into_bytes(),
            timeout: s.timeout,
            output_limit: s.output_limit,
        };

        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let running = run(&spec, &cancel, tx);
        tokio::pin!(running);
        let outcome = loop {
            tokio::select! {
                outcome = &mut running => break outcome?,
                Some(event) = rx.recv() => report(&progress, &s.name, event).await,
            }
        };
        while let Ok(event) = rx.try_recv() {
            report(&progress, &s.name, event).await;
        }

        if let Some(failure) = outcome.failure(&s.name) {
            return Err(failure.into());
        }
        let summary = format!(
            "script {} exited with code 0 after {:.1}s ({} bytes of output{})",
            s.name,
            outcome.elapsed.as_secs_f64(),
            outcome.stdout_bytes + outcome.stderr_bytes,
            if outcome.truncated { ", truncated" } else { "" }
        );
        progress.progress(100.0, "done", &summary).await;
        let output_values = [
            ("exit_code", value::int(0)),
            ("stdout_bytes", value::int(i64::try_from(outcome.stdout_bytes).unwrap_or(i64::MAX))),
            ("stderr_bytes", value::int(i64::try_from(outcome.stderr_bytes).unwrap_or(i64::MAX))),
            ("output_truncated", value::boolean(outcome.truncated)),
            ("elapsed", value::duration(outcome.elapsed)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Ok(pb::JobResult { output_values, summary })
    }
}

async fn report(progress: &ProgressSender, name: &str, event: OutputEvent) {
    match event {
        OutputEvent::Started { pid } => {
            progress.progress(0.0, "running", &format!("script {name} started as process {pid}")).await;
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
