//! The command layer: every change an operator can make to the admin is a [`Command`]
//! executed by [`Components::execute`], the one entry point, on behalf of an [`Actor`].
//! It returns a typed [`Outcome`] or a typed [`Refusal`]. The JSON API and the pages
//! are thin translators onto it (they parse their request into a command and render
//! the result their own way), so both reach the same outcome for the same request, and
//! there is one place that knows who did what.

use std::{fmt, sync::Arc};

use proto::pb::{self, JobState};

use crate::{
    auth::{Role, TokenError, TokenInfo},
    components::Components,
    config_store::ConfigStoreError,
    dispatcher::JobActionError,
    events::EventKind,
    job::JobView,
    scheduler::{DetectError, DetectionMode},
    schema::SchemaError,
};

/// Who asked for a command, and with which role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A caller on an admin with authentication off (a local admin), named by the surface
    /// it came through (`api`, `ui`, `demo`).
    Local(&'static str),
    /// An API token, by its name.
    Token { name: String, role: Role },
    /// An mTLS client certificate, by its subject.
    Certificate { subject: String, role: Role },
    /// A signed-in page session, by the name of the token it was opened with.
    Session { user: String, role: Role },
}

impl Actor {
    pub fn role(&self) -> Role {
        match self {
            Actor::Local(_) => Role::Admin,
            Actor::Token { role, .. } | Actor::Certificate { role, .. } | Actor::Session { role, .. } => *role,
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Local(via) => f.write_str(via),
            Actor::Token { name, .. }
            | Actor::Certificate { subject: name, .. }
            | Actor::Session { user: name, .. } => f.write_str(name),
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
    /// Issue an API token; its plaintext is in the outcome, once.
    CreateToken {
        name: String,
        role: Role,
    },
    /// Revoke a token; its sessions end too.
    RevokeToken {
        name: String,
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
            Command::CreateToken { .. } => "create_token",
            Command::RevokeToken { .. } => "revoke_token",
        }
    }

    /// The least role that may run this command: configs, tokens and anything that runs
    /// an operator script need an admin, the rest an operator. `job_type_of` names the job
    /// type of a job (a retried script job runs its script again).
    pub fn required_role(&self, job_type_of: impl Fn(i64) -> Option<String>) -> Role {
        let script = |t: &str| t == crate::auth::SCRIPT_JOB_TYPE;
        match self {
            Command::SaveConfig { .. } | Command::CreateToken { .. } | Command::RevokeToken { .. } => Role::Admin,
            Command::Detect { job_type, mode: DetectionMode::Run } if script(job_type) => Role::Admin,
            Command::RetryJob { seq } if job_type_of(*seq).is_some_and(|t| script(&t)) => Role::Admin,
            _ => Role::Operator,
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
    /// `token` is the plaintext, shown this once.
    TokenCreated {
        info: TokenInfo,
        token: String,
    },
    TokenRevoked(TokenInfo),
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
    #[error("{command} needs the {needed} role; {actor} has the {has} role")]
    Forbidden { command: &'static str, needed: Role, actor: String, has: Role },
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("{0}")]
    Internal(String),
}

impl Components {
    /// Executes one operator command on behalf of `actor`.
    pub async fn execute(&self, actor: &Actor, command: Command) -> Result<Outcome, Refusal> {
        let name = command.name();
        let needed = command.required_role(|seq| self.dispatcher.job(seq).map(|j| j.spec.job_type.clone()));
        let result = if actor.role() < needed {
            let refusal = Refusal::Forbidden { command: name, needed, actor: actor.to_string(), has: actor.role() };
            self.journal.record("", "", pb::ActivitySource::Admin, "auth", &refusal.to_string());
            Err(refusal)
        } else {
            self.run_command(actor, command).await
        };
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
            Command::CreateToken { name, role } => {
                let token = self.auth.tokens.create(&name, role, self.clock.now_ms())?;
                let info = self.auth.tokens.verify(&token).ok_or_else(|| Refusal::Internal("token vanished".into()))?;
                Ok(Outcome::TokenCreated { info, token })
            }
            Command::RevokeToken { name } => {
                let info = self.auth.tokens.revoke(&name)?;
                self.auth.sessions.close_user(&name);
                Ok(Outcome::TokenRevoked(info))
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
