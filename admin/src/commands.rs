//! The command layer: every change an operator can make to the admin is a [`Command`]
//! executed by [`Components::execute`], the one entry point, on behalf of an [`Actor`].
//! It returns a typed [`Outcome`] or a typed [`Refusal`]. The JSON API and the pages
//! are thin translators onto it (they parse their request into a command and render
//! the result their own way), so both reach the same outcome for the same request, and
//! there is one place that knows who did what.

use std::{fmt, sync::Arc};

use proto::pb::{self, JobState};

use crate::{
    components::Components,
    config_store::ConfigStoreError,
    dispatcher::JobActionError,
    events::EventKind,
    job::JobView,
    scheduler::{DetectError, DetectionMode},
    schema::SchemaError,
};

/// Who asked for a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A caller that did not authenticate, named by the surface it came through
    /// (`api`, `ui`, `cli`).
    Local(&'static str),
    /// An API token, by its name.
    Token(String),
    /// An mTLS client certificate, by its subject.
    Certificate(String),
    /// A signed-in page session, by its user.
    Session(String),
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Local(via) => f.write_str(via),
            Actor::Token(name) | Actor::Certificate(name) | Actor::Session(name) => f.write_str(name),
        }
    }
}

/// A change an operator asks for.
#[derive(Debug, Clone)]
pub enum Command {
    /// Replace a job type's saved config (validated against its descriptor; sensitive
    /// and read-only fields absent from it keep their saved values).
    SaveConfig {
        config: pb::PersistedJobTypeConfig,
    },
    /// Ask a worker for the job type's descriptor again.
    RefreshSchema {
        job_type: String,
        force: bool,
    },
    /// Run a detection now: `Run` creates jobs, `Preview` only shows proposals.
    Detect {
        job_type: String,
        mode: DetectionMode,
    },
    CancelJob {
        seq: i64,
        reason: String,
    },
    /// End a job as FAILED, without retry.
    ExpireJob {
        seq: i64,
        reason: String,
    },
    /// Start a new cycle of attempts for a FAILED or CANCELED job.
    RetryJob {
        seq: i64,
    },
    /// A draining worker keeps its running jobs and gets no new work.
    SetDraining {
        worker_id: String,
        draining: bool,
    },
    PauseDispatch {
        paused: bool,
    },
}

impl Command {
    /// The command's name, for logs and the audit trail.
    pub fn name(&self) -> &'static str {
        match self {
            Command::SaveConfig { .. } => "save_config",
            Command::RefreshSchema { .. } => "refresh_schema",
            Command::Detect { mode: DetectionMode::Preview, .. } => "detect",
            Command::Detect { .. } => "run",
            Command::CancelJob { .. } => "cancel_job",
            Command::ExpireJob { .. } => "expire_job",
            Command::RetryJob { .. } => "retry_job",
            Command::SetDraining { .. } => "set_draining",
            Command::PauseDispatch { .. } => "pause_dispatch",
        }
    }
}

/// What a command did.
#[derive(Debug, Clone)]
pub enum Outcome {
    ConfigSaved(Arc<pb::PersistedJobTypeConfig>),
    SchemaRefreshed(Arc<pb::JobTypeDescriptor>),
    /// `queued`: a detection was running, this one follows it.
    DetectionRequested {
        queued: bool,
    },
    /// The job after a cancel, expire or retry.
    Job(Box<JobView>),
    Draining {
        worker_id: String,
        draining: bool,
    },
    DispatchPaused(bool),
}

/// Why a command was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Config(#[from] ConfigStoreError),
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error(transparent)]
    Detect(#[from] DetectError),
    #[error(transparent)]
    Job(#[from] JobActionError),
    #[error("no connected worker {0:?}")]
    NotConnected(String),
    #[error("{0}")]
    Internal(String),
}

impl Components {
    /// Executes one operator command on behalf of `actor`.
    pub async fn execute(&self, actor: &Actor, command: Command) -> Result<Outcome, Refusal> {
        let name = command.name();
        let result = self.run_command(actor, command).await;
        match &result {
            Ok(_) => tracing::info!(actor = %actor, command = name, "command carried out"),
            Err(e) => tracing::info!(actor = %actor, command = name, refusal = %e, "command refused"),
        }
        result
    }

    async fn run_command(&self, actor: &Actor, command: Command) -> Result<Outcome, Refusal> {
        match command {
            Command::SaveConfig { config } => self.save_config(actor, config).await.map(Outcome::ConfigSaved),
            Command::RefreshSchema { job_type, force } => {
                Ok(Outcome::SchemaRefreshed(self.schemas.refresh_schema(&job_type, force).await?))
            }
            Command::Detect { job_type, mode } => {
                let queued = self.scheduler.request_detection(&job_type, mode)?;
                Ok(Outcome::DetectionRequested { queued })
            }
            Command::CancelJob { seq, reason } => {
                Ok(Outcome::Job(Box::new(self.dispatcher.stop_job(seq, JobState::Canceled, &reason)?)))
            }
            Command::ExpireJob { seq, reason } => {
                Ok(Outcome::Job(Box::new(self.dispatcher.stop_job(seq, JobState::Failed, &reason)?)))
            }
            Command::RetryJob { seq } => Ok(Outcome::Job(Box::new(self.dispatcher.retry_job(seq)?))),
            Command::SetDraining { worker_id, draining } => {
                if draining && self.registry.get(&worker_id).is_none() {
                    return Err(Refusal::NotConnected(worker_id));
                }
                self.registry.set_draining(&worker_id, draining);
                self.events.publish(EventKind::WorkerDrain { worker_id: worker_id.clone(), draining });
                self.dispatcher.wake();
                self.scheduler.wake();
                Ok(Outcome::Draining { worker_id, draining })
            }
            Command::PauseDispatch { paused } => {
                self.dispatcher.set_paused(paused);
                Ok(Outcome::DispatchPaused(paused))
            }
        }
    }

    /// Saves a job type's config (the config store validates it) and tells everyone who
    /// cares: the event bus, the activity timeline, the scheduler and the dispatcher.
    async fn save_config(
        &self,
        actor: &Actor,
        config: pb::PersistedJobTypeConfig,
    ) -> Result<Arc<pb::PersistedJobTypeConfig>, Refusal> {
        let job_type = config.job_type.clone();
        let configs = self.configs.clone();
        let by = actor.to_string();
        let saved = tokio::task::spawn_blocking(move || configs.save_config(config, &by))
            .await
            .map_err(|e| Refusal::Internal(format!("saving the config stopped: {e}")))??;
        self.events.publish(EventKind::ConfigSaved { job_type: job_type.clone(), updated_by: actor.to_string() });
        self.journal.record(
            &job_type,
            "",
            pb::ActivitySource::Admin,
            "config",
            &format!("configuration saved by {actor}"),
        );
        self.scheduler.wake();
        self.dispatcher.wake();
        Ok(saved)
    }
}
