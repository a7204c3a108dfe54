//! A complete Plughost worker: one job type, `echo`, whose detection proposes saying the
//! configured text and whose execution says it in ten steps, reporting progress.

use std::time::Duration;

use worker_sdk::prelude::*;

struct Echo;

#[worker_sdk::async_trait]
impl JobHandler for Echo {
    fn capability(&self) -> pb::JobTypeCapability {
        capability("echo", "Echo").detect(1).execute(4)
    }

    fn descriptor(&self) -> pb::JobTypeDescriptor {
        Descriptor::new("echo", "Echo")
            .admin_form(
                Form::new("admin", "Echo").section(
                    Section::new("main", "What to say")
                        .field(Field::string("text", "Text").required().default_value("hello")),
                ),
            )
            .runtime(Runtime::default().interval_minutes(60))
            .build()
    }

    async fn detect(
        &self,
        request: pb::RunDetectionRequest,
        out: DetectionSender,
        _cancel: CancellationToken,
    ) -> HandlerResult<()> {
        let text = values::string_or(&request.admin_config_values, "text", "hello".into())?;
        let proposal = pb::JobProposal {
            dedupe_key: text.clone(),
            summary: format!("say {text}"),
            parameters: [("text".to_string(), value::string(text))].into(),
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
        let job = request.job.unwrap_or_default();
        let text = values::get_string(&job.parameters, "text")?;
        for step in 1..=10 {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                _ = cancel.cancelled() => return Err("canceled".into()),
            }
            progress.progress(step as f64 * 10.0, "saying", &format!("{step} of 10")).await;
        }
        Ok(pb::JobResult { summary: format!("said {text}"), ..Default::default() })
    }
}

#[tokio::main]
async fn main() -> Result<(), worker_sdk::Error> {
    // The admin's HTTP address (its gRPC port is looked up), and a directory for the
    // worker's id.
    let admin = std::env::args().nth(1).unwrap_or_else(|| "http://127.0.0.1:23646".into());
    let config = WorkerConfig::new(admin, "./echo-worker");
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        on_signal.cancel();
    });
    Worker::new(config).handler(Echo).run(shutdown).await
}
