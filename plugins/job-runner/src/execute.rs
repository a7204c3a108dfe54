//! One run of a definition: fetch its source, prepare a private run directory, build
//! the command (inside bubblewrap when the worker sandboxes, always under the rlimit
//! wrapper), run it with the secrets on stdin through script-runner's process handling
//! (own process group, timeout, cancel, capped output), then gather the logs, the
//! structured result and the artifacts. The run directory is removed afterwards.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use script_runner::{
    command::ScriptCommand,
    output::{OutputEvent, Stream},
    run::{RunOutcome, RunSpec, run},
};
use tokio::sync::mpsc;
use worker_sdk::CancellationToken;

use crate::{
    artifacts::Collected,
    definition::Definition,
    policy::{RunnerPolicy, SandboxChoice},
    result::StructuredResult,
    runtime::{Interpreters, Runtime, secrets_document, write_helpers},
    sandbox::{Mounts, Sandbox, inside, limits_wrapper},
    sources::{self, Fetched},
};

const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The job runner's machinery, set up once when the worker starts.
#[derive(Debug)]
pub struct Runner {
    pub policy: RunnerPolicy,
    pub interpreters: Interpreters,
    /// The sandbox, or why there is none.
    pub sandbox: Result<Sandbox, String>,
    helpers: PathBuf,
}

/// Who is running and with what.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    pub job_id: String,
    pub attempt: i32,
    /// The secrets the definition names, with their values.
    pub secrets: Vec<(String, String)>,
    /// Extra environment from the job's parameters.
    pub env: Vec<(String, String)>,
}

/// What a run did.
#[derive(Debug)]
pub struct RunReport {
    pub outcome: RunOutcome,
    pub source: Fetched,
    pub sandboxed: bool,
    pub result: Option<StructuredResult>,
    pub artifacts: Collected,
}

static RUNS: AtomicU64 = AtomicU64::new(0);

impl Runner {
    /// Finds the interpreters and the sandbox and writes the helpers. With
    /// `--sandbox on` and no working bubblewrap this is an error.
    pub fn new(policy: RunnerPolicy) -> Result<Runner, String> {
        let sandbox = match policy.sandbox {
            SandboxChoice::Off => Err("the sandbox is off (--sandbox off)".to_string()),
            SandboxChoice::Auto | SandboxChoice::On => Sandbox::detect(),
        };
        if let (SandboxChoice::On, Err(why)) = (policy.sandbox, &sandbox) {
            return Err(format!("--sandbox on, but {why}"));
        }
        let helpers = policy.dir.join("lib");
        if policy.allow {
            write_helpers(&helpers).map_err(|e| format!("job runner helpers in {}: {e}", helpers.display()))?;
        }
        Ok(Runner { interpreters: Interpreters::discover(), sandbox, helpers, policy })
    }

    /// One line for the log and the capability: the runtimes and the sandbox.
    pub fn describe(&self) -> String {
        let sandbox = match &self.sandbox {
            Ok(s) => format!("sandbox: bubblewrap ({})", s.bwrap.display()),
            Err(why) => format!("no sandbox ({why}); definitions that require isolation are refused"),
        };
        format!("runtimes: {}; {sandbox}", self.interpreters.names())
    }

    /// Runs `def`. `Err` means it could not start (source refused, runtime missing,
    /// sandbox required); a run that started ends in a report whatever its exit.
    pub async fn run(
        &self,
        def: &Definition,
        req: &RunRequest,
        cancel: &CancellationToken,
        forward: Option<mpsc::Sender<OutputEvent>>,
    ) -> Result<RunReport, String> {
        let interpreter = self.interpreters.get(def.runtime).ok_or_else(|| {
            format!(
                "runtime {} is not installed on this worker (it has: {})",
                def.runtime.name(),
                self.interpreters.names()
            )
        })?;
        let sandbox = match (&self.sandbox, def.require_sandbox) {
            (Ok(s), _) => Some(s),
            (Err(_), false) => None,
            (Err(why), true) => {
                return Err(format!(
                    "definition {} requires the sandbox and this worker has none: {why} (set \"require_sandbox\": false to run it unsandboxed)",
                    def.name
                ));
            }
        };
        let source = sources::fetch(&def.source, &self.policy).await?;
        let entry = source.work_dir.join(&def.entry[0]);
        let entry_ok = entry
            .canonicalize()
            .ok()
            .zip(source.root.canonicalize().ok())
            .is_some_and(|(e, r)| e.starts_with(r) && e.is_file());
        if !entry_ok {
            return Err(format!("entry {} is not a file in the source", def.entry[0]));
        }

        let run_dir = self.run_dir(&req.job_id, req.attempt).map_err(|e| format!("run directory: {e}"))?;
        let dirs = RunDirs::create(&run_dir).map_err(|e| format!("run directory {}: {e}", run_dir.display()))?;
        let report = self.run_in(def, req, cancel, forward, interpreter, sandbox, &source, &dirs).await;
        let _ = std::fs::remove_dir_all(&run_dir);
        report.map(|(outcome, result, artifacts)| RunReport {
            outcome,
            source,
            sandboxed: sandbox.is_some(),
            result,
            artifacts,
        })
    }

    fn run_dir(&self, job_id: &str, attempt: i32) -> std::io::Result<PathBuf> {
        let safe: String = job_id.chars().filter(|c| c.is_ascii_alphanumeric() || "_-".contains(*c)).take(64).collect();
        let n = RUNS.fetch_add(1, Ordering::Relaxed);
        let dir = self.policy.runs_dir().join(format!("{safe}-a{attempt}-{}-{n}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_in(
        &self,
        def: &Definition,
        req: &RunRequest,
        cancel: &CancellationToken,
        forward: Option<mpsc::Sender<OutputEvent>>,
        interpreter: &crate::runtime::Interpreter,
        sandbox: Option<&Sandbox>,
        source: &Fetched,
        dirs: &RunDirs,
    ) -> Result<(RunOutcome, Option<StructuredResult>, Collected), String> {
        // Paths as the code sees them.
        let (work, artifacts, out, lib, tmp) = match sandbox {
            Some(_) => (
                PathBuf::from(inside::WORK),
                PathBuf::from(inside::ARTIFACTS),
                PathBuf::from(inside::OUT),
                PathBuf::from(inside::LIB),
                PathBuf::from(inside::TMP),
            ),
            None => {
                (dirs.work.clone(), dirs.artifacts.clone(), dirs.out.clone(), self.helpers.clone(), dirs.tmp.clone())
            }
        };
        let mut path = DEFAULT_PATH.to_string();
        if let Some(bin) = interpreter.program.parent().filter(|b| !DEFAULT_PATH.split(':').any(|d| Path::new(d) == *b))
        {
            path = format!("{}:{path}", bin.display());
        }
        let s = |p: &Path| p.to_string_lossy().into_owned();
        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), path),
            ("HOME".into(), s(&work)),
            ("TMPDIR".into(), s(&tmp)),
            ("LANG".into(), "C.UTF-8".into()),
            ("PLUGHOST_JOB_ID".into(), req.job_id.clone()),
            ("PLUGHOST_ATTEMPT".into(), req.attempt.to_string()),
            ("PLUGHOST_DEFINITION".into(), def.name.clone()),
            ("PLUGHOST_SOURCE".into(), def.source.pin()),
            ("PLUGHOST_SOURCE_RESOLVED".into(), source.resolved.clone()),
            ("PLUGHOST_WORK_DIR".into(), s(&work)),
            ("PLUGHOST_ARTIFACTS".into(), s(&artifacts)),
            ("PLUGHOST_RESULT".into(), s(&out.join("result.json"))),
            ("PLUGHOST_HELPERS".into(), s(&lib)),
            ("PLUGHOST_SANDBOXED".into(), if sandbox.is_some() { "1" } else { "0" }.into()),
        ];
        match def.runtime {
            Runtime::Python => env.push(("PYTHONPATH".into(), s(&lib))),
            Runtime::Node => env.push(("NODE_PATH".into(), s(&lib))),
            Runtime::Shell => {}
        }
        env.extend(def.env.iter().cloned());
        env.extend(req.env.iter().cloned());

        let mut program_args: Vec<String> = limits_wrapper(def.memory_mb, def.cpu_seconds);
        program_args.push(s(&interpreter.program));
        program_args.extend(def.entry.iter().cloned());
        let (program, args, host_cwd) = match sandbox {
            Some(sb) => {
                let mounts = Mounts {
                    source_root: &source.root,
                    source_path: def.source.path(),
                    helpers: &self.helpers,
                    work: &dirs.work,
                    artifacts: &dirs.artifacts,
                    out: &dirs.out,
                };
                let mut args = sb.args(&mounts, &self.interpreters, def.network);
                args.extend(program_args);
                (s(&sb.bwrap), args, dirs.root.clone())
            }
            None => {
                let program = program_args.remove(0);
                (program, program_args, source.work_dir.clone())
            }
        };
        let spec = RunSpec {
            command: ScriptCommand {
                program,
                args: args.into_iter().map(Into::into).collect(),
                work_dir: host_cwd,
                env,
            },
            stdin: secrets_document(&req.secrets).into_bytes(),
            timeout: def.timeout,
            output_limit: def.output_limit,
        };

        let (tx, mut rx) = mpsc::channel(64);
        let running = run(&spec, cancel, tx);
        tokio::pin!(running);
        let mut logs = Logs::default();
        let outcome = loop {
            tokio::select! {
                outcome = &mut running => break outcome,
                Some(event) = rx.recv() => logs.take(event, forward.as_ref()).await,
            }
        };
        while let Ok(event) = rx.try_recv() {
            logs.take(event, forward.as_ref()).await;
        }
        let outcome = outcome.map_err(|e| format!("cannot start definition {}: {e}", def.name))?;

        let result_text = read_capped(&dirs.out.join("result.json"), crate::result::MAX_RESULT_BYTES);
        let result = StructuredResult::find(result_text.as_deref(), logs.last_stdout.as_deref());
        let mut collected = Collected::default();
        let max = self.policy.artifacts_max_bytes;
        let marker = outcome
            .truncated
            .then(|| format!("\n[output truncated at {} bytes; the rest was dropped]\n", def.output_limit));
        for (name, mut text) in [("stdout.log", logs.stdout), ("stderr.log", logs.stderr)] {
            if let Some(m) = &marker {
                text.push_str(m);
            }
            collected.add(name, text.into_bytes(), max);
        }
        if let Some(r) = &result {
            let json = serde_json::Value::Object(r.fields.clone()).to_string();
            collected.add("result.json", json.into_bytes(), max);
        }
        collected.add_dir(&dirs.artifacts, self.policy.artifacts_max_count, max);
        Ok((outcome, result, collected))
    }
}

/// The text of a small file, or `None` when it is absent or too large.
fn read_capped(path: &Path, max: usize) -> Option<String> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_file() || meta.len() as usize > max {
        return None;
    }
    std::fs::read_to_string(path).ok()
}

/// A run's directories on the host.
struct RunDirs {
    root: PathBuf,
    work: PathBuf,
    artifacts: PathBuf,
    out: PathBuf,
    tmp: PathBuf,
}

impl RunDirs {
    fn create(root: &Path) -> std::io::Result<RunDirs> {
        let d = RunDirs {
            root: root.to_path_buf(),
            work: root.join("work"),
            artifacts: root.join("artifacts"),
            out: root.join("out"),
            tmp: root.join("tmp"),
        };
        for dir in [&d.work, &d.artifacts, &d.out, &d.tmp] {
            std::fs::create_dir_all(dir)?;
        }
        Ok(d)
    }
}

/// The output as it went by: both logs (within the output cap) and the last stdout line.
#[derive(Default)]
struct Logs {
    stdout: String,
    stderr: String,
    last_stdout: Option<String>,
}

impl Logs {
    async fn take(&mut self, event: OutputEvent, forward: Option<&mpsc::Sender<OutputEvent>>) {
        if let OutputEvent::Line { stream, text } = &event {
            let log = match stream {
                Stream::Stdout => &mut self.stdout,
                Stream::Stderr => &mut self.stderr,
            };
            log.push_str(text);
            log.push('\n');
            if *stream == Stream::Stdout && !text.trim().is_empty() {
                self.last_stdout = Some(text.clone());
            }
        }
        if let Some(f) = forward {
            let _ = f.send(event).await;
        }
    }
}
