//! Job type descriptors and saved configs: held in memory, persisted in the data dir
//! ([`ConfigStore::open`]) or, when admins share a PostgreSQL store, in its `job_types`
//! table ([`ConfigStore::open_postgres`]), so that every admin that leads sees the job
//! types and the configs operators saved on the one before. Only the persistence differs
//! (the private `Persistence` seam); what is held in memory, and every method but the
//! opening, is the same for both.
//!
//! Files: the layout SeaweedFS's admin uses, so an existing data dir can be pointed at:
//!
//! ```text
//! <data>/plugin/job_types/<job_type>/descriptor.pb   JobTypeDescriptor (protobuf, authoritative)
//! <data>/plugin/job_types/<job_type>/descriptor.json the same, proto JSON, for humans
//! <data>/plugin/job_types/<job_type>/config.pb       PersistedJobTypeConfig
//! <data>/plugin/job_types/<job_type>/config.json     the same
//! ```
//!
//! **Invariant:** the `.pb` file is authoritative; the `.json` file is read only when the
//! `.pb` file is missing (a hand-written file, or another admin's data dir).
//!
//! PostgreSQL: one row per job type in `job_types` (migration 2 of the job store's schema,
//! see `store::postgres::job_types`) with the bytes the `.pb` files hold: the worker's
//! descriptor and the config with its secrets sealed. A save is one transaction that
//! first checks the leader's lease epoch exactly as every batch of the job store does; a
//! save under an epoch that is no longer the lease's stores nothing and fails
//! ([`ConfigStoreError::is_fenced`]). Saves run on the caller's thread (callers use
//! `spawn_blocking`), on a connection and current-thread runtime the store owns. The
//! first leader to find the table empty imports its own data dir's job types into it, in
//! one fenced transaction, once: a stored job type is never overwritten by an import.
//!
//! **Invariant:** a failed save changes nothing, in memory or on disk (or in the
//! database): everything is validated and encoded first, every file is written
//! atomically, and if a later file of the same save fails, the files already written get
//! their old contents back; a row is written in one transaction.
//!
//! **Invariant:** saved values are never logged or printed by `Debug`, and only
//! [`validator::redact`]ed configs leave the admin.
//!
//! **Invariant:** no config file or row holds a secret in clear. The values of fields that
//! hold secrets are sealed with the admin's key ([`config_secrets`]) in `config.pb` and
//! `config.json` (written owner-only all the same) and in the row's `config`; every admin
//! sharing a database must therefore have the same key. In memory the config holds the
//! plaintext, which the scheduler and dispatcher send to workers. A config written by an
//! older build, with sensitive values in clear, is sealed when the store opens it, and a
//! sealed value that does not open (a wrong key, an altered file) stops the store from
//! opening: [`ConfigStoreError::Secret`] names the file, job type and field.
//!
//! **Invariant:** a field that holds a secret stays sensitive, whatever a later
//! descriptor says, until an operator saves a new value for it: [`ConfigStore::descriptor`]
//! and [`ConfigStore::entry`] give the descriptor the admin shows (the worker's, with such
//! fields marked sensitive); the files and rows keep the worker's own.
//!
//! All methods are synchronous and hold the std locks only briefly; none is held across
//! an `.await` because there is none. Saves are serialised by a writer mutex, so readers
//! keep reading the previous state while files (or the row) are being written.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use prost::Message;
use proto::{ProtoName, pb};
use tracing::{info, warn};

use crate::config_secrets::{self, SecretFields};
use crate::config_value;
use crate::fsutil;
use crate::runtime_config;
use crate::secret_box::{OpenError, SealError, SecretBox};
use crate::store::BackendError;
use crate::store::postgres::{JobTypeRow, JobTypeTable, PgTarget};
use crate::validator::{self, FieldError};

const DESCRIPTOR_PB: &str = "descriptor.pb";
const DESCRIPTOR_JSON: &str = "descriptor.json";
const CONFIG_PB: &str = "config.pb";
const CONFIG_JSON: &str = "config.json";

/// Who a config created from a descriptor's defaults is attributed to.
pub const BOOTSTRAP_USER: &str = "bootstrap";

/// Why a descriptor or config could not be loaded or saved. `InvalidJobType`,
/// `UnknownJobType`, `Invalid` and `BadDescriptor` are the caller's input; `Io`, `Decode`
/// and `Json` are the data dir's; `Database` is PostgreSQL's (a fenced save among them:
/// see [`ConfigStoreError::is_fenced`]).
#[derive(Debug, thiserror::Error)]
pub enum ConfigStoreError {
    #[error("invalid job type name {0:?}")]
    InvalidJobType(String),
    #[error("unknown job type {0:?}")]
    UnknownJobType(String),
    #[error("config is invalid")]
    Invalid(Vec<FieldError>),
    #[error("descriptor for {job_type} is invalid: {message}")]
    BadDescriptor { job_type: String, message: String },
    #[error("cannot access {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot decode {}: {source}", path.display())]
    Decode {
        path: PathBuf,
        #[source]
        source: prost::DecodeError,
    },
    #[error("cannot convert {} to or from proto JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: proto::json::JsonError,
    },
    #[error(
        "cannot decrypt the saved value of {form} field {field:?} of job type {job_type:?} in {} with the {key}: {error}",
        path.display()
    )]
    Secret { path: PathBuf, job_type: String, form: &'static str, field: String, key: String, error: OpenError },
    #[error("cannot encrypt the config of job type {job_type:?}")]
    Seal {
        job_type: String,
        #[source]
        source: SealError,
    },
    /// `database` is the redacted URL.
    #[error("job types in PostgreSQL at {database}: {source}")]
    Database {
        database: String,
        #[source]
        source: BackendError,
    },
}

impl ConfigStoreError {
    /// Whether PostgreSQL refused a save because this admin no longer holds the lease
    /// epoch it writes under: another admin leads, and nothing was saved.
    pub fn is_fenced(&self) -> bool {
        matches!(self, ConfigStoreError::Database { source, .. } if source.is_fenced())
    }
}

/// What the store knows about one job type. Either part may be missing: a config whose
/// descriptor file was unreadable is kept until the worker sends the descriptor again.
/// The descriptor is the one the admin shows (fields holding a saved secret marked
/// sensitive); the config holds sensitive values in clear.
#[derive(Clone, Default)]
pub struct JobTypeEntry {
    pub descriptor: Option<Arc<pb::JobTypeDescriptor>>,
    pub config: Option<Arc<pb::PersistedJobTypeConfig>>,
}

impl fmt::Debug for JobTypeEntry {
    /// Versions only: the config's values may be secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobTypeEntry")
            .field("descriptor_version", &self.descriptor.as_ref().map(|d| d.descriptor_version))
            .field("config_descriptor_version", &self.config.as_ref().map(|c| c.descriptor_version))
            .finish()
    }
}

/// One job type as the store holds it.
#[derive(Clone, Default)]
struct Slot {
    /// What callers get: the descriptor the admin shows, the config with plaintext values.
    entry: JobTypeEntry,
    /// The descriptor as the worker sent it (what the files hold).
    sent: Option<Arc<pb::JobTypeDescriptor>>,
    /// The config's fields whose values are secrets (sealed in the files).
    secrets: SecretFields,
}

impl Slot {
    fn new(
        sent: Option<Arc<pb::JobTypeDescriptor>>,
        config: Option<Arc<pb::PersistedJobTypeConfig>>,
        secrets: SecretFields,
    ) -> Self {
        let descriptor = sent.as_ref().map(|d| config_secrets::shown_descriptor(d, &secrets));
        Slot { entry: JobTypeEntry { descriptor, config }, sent, secrets }
    }
}

/// Descriptors and saved configs of every job type, backed by the data dir or by
/// PostgreSQL.
pub struct ConfigStore {
    persistence: Persistence,
    entries: RwLock<BTreeMap<String, Slot>>,
    /// Serialises saves (the files' or the row's write plus the in-memory swap).
    writer: Mutex<()>,
    /// Seals secret values for the files and rows.
    sealer: SecretBox,
}

impl fmt::Debug for ConfigStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ConfigStore");
        match &self.persistence {
            Persistence::Files { root } => d.field("root", root),
            Persistence::Postgres(table) => d.field("database", &table.redacted()),
        };
        d.field("job_types", &self.job_types()).finish()
    }
}

impl ConfigStore {
    /// Opens (creating it if needed) `<data_dir>/plugin/job_types` and loads every job
    /// type in it, opening sealed values with `sealer` and sealing sensitive values an
    /// older build left in clear. Directories with invalid names and unreadable files are
    /// skipped with a warning: one corrupt file must not keep the admin from starting. A
    /// sealed value that does not open does ([`ConfigStoreError::Secret`]): starting
    /// without it would lose the secret at the next save.
    pub fn open(data_dir: &Path, sealer: SecretBox) -> Result<Self, ConfigStoreError> {
        let root = data_dir.join("plugin").join("job_types");
        fs::create_dir_all(&root).map_err(|source| io_error(&root, source))?;
        let entries = load_dir(&root, &sealer)?;
        info!(root = %root.display(), job_types = entries.len(), "config store loaded");
        Ok(Self::with(Persistence::Files { root }, entries, sealer))
    }

    /// Opens the `job_types` table of the PostgreSQL database `target` names (creating
    /// or migrating the schema, as the job store does) and loads every job type in it.
    /// Every save is then one transaction that first checks that the lease's epoch is
    /// still `fence_epoch`, and fails with a fenced [`ConfigStoreError::Database`]
    /// otherwise. Values are sealed with `sealer` as in the files, so every admin sharing
    /// the database needs the same key.
    ///
    /// When the table is empty, what `<data_dir>/plugin/job_types` holds is imported
    /// first (as [`ConfigStore::open`] would load it), in one fenced transaction that
    /// stores nothing if the table is no longer empty: once per database, never over a
    /// stored job type. Rows that cannot be decoded are skipped with a warning, like
    /// unreadable files; a sealed value that does not open stops the store from opening.
    /// Blocks on a runtime of its own (from inside a runtime, on a scoped thread): call it
    /// from a blocking thread.
    pub fn open_postgres(
        target: &PgTarget,
        fence_epoch: i64,
        data_dir: &Path,
        sealer: SecretBox,
    ) -> Result<Self, ConfigStoreError> {
        let database = |source| ConfigStoreError::Database { database: target.redacted().to_string(), source };
        let table = JobTypeTable::open(target, fence_epoch).map_err(database)?;
        if table.is_empty().map_err(database)? {
            let root = data_dir.join("plugin").join("job_types");
            let found = if root.is_dir() { load_dir(&root, &sealer)? } else { BTreeMap::new() };
            let rows = found
                .iter()
                .map(|(job_type, slot)| slot_row(&sealer, job_type, slot))
                .collect::<Result<Vec<_>, _>>()?;
            let imported = table.import(&rows).map_err(database)?;
            info!(from = %root.display(), store = %table.redacted(), imported, "job types imported from the data dir");
        }
        let entries = load_table(&table, &sealer, true)?;
        Ok(Self::with(Persistence::Postgres(Box::new(table)), entries, sealer))
    }

    /// The job types as the database holds them, for a standby's read-only view: no
    /// migration, no import, and every save refused.
    pub fn open_postgres_view(target: &PgTarget, sealer: SecretBox) -> Result<Self, ConfigStoreError> {
        let database = |source| ConfigStoreError::Database { database: target.redacted().to_string(), source };
        let table = JobTypeTable::open_view(target).map_err(database)?;
        let entries = load_table(&table, &sealer, false)?;
        Ok(Self::with(Persistence::Postgres(Box::new(table)), entries, sealer))
    }

    fn with(persistence: Persistence, entries: BTreeMap<String, Slot>, sealer: SecretBox) -> Self {
        Self { persistence, entries: RwLock::new(entries), writer: Mutex::new(()), sealer }
    }

    /// The known job types, sorted.
    pub fn job_types(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    /// Everything stored about one job type.
    pub fn entry(&self, job_type: &str) -> Option<JobTypeEntry> {
        self.read().get(job_type).map(|slot| slot.entry.clone())
    }

    /// The descriptor the admin shows and validates against: the worker's, with fields
    /// that hold a saved secret marked sensitive.
    pub fn descriptor(&self, job_type: &str) -> Option<Arc<pb::JobTypeDescriptor>> {
        self.read().get(job_type)?.entry.descriptor.clone()
    }

    /// The saved config, sensitive values included (in clear: only the files hold them
    /// sealed): redact it ([`validator::redact`]) before it leaves the admin.
    pub fn config(&self, job_type: &str) -> Option<Arc<pb::PersistedJobTypeConfig>> {
        self.read().get(job_type)?.entry.config.clone()
    }

    fn slot(&self, job_type: &str) -> Option<Slot> {
        self.read().get(job_type).cloned()
    }

    /// Whether the admin should ask a worker for this job type's descriptor: none is
    /// stored, or the worker offers a newer version.
    pub fn needs_descriptor(&self, job_type: &str, offered_version: Option<u32>) -> bool {
        match self.descriptor(job_type) {
            None => true,
            Some(stored) => offered_version.is_some_and(|v| v > stored.descriptor_version),
        }
    }

    /// Persists a descriptor and returns the job type's config, which is bootstrapped
    /// from the descriptor's defaults if there was none, or migrated to the descriptor's
    /// fields if there was one: values of fields that no longer exist are dropped, fields
    /// that are new get their default, all other saved values are kept (and saved secrets
    /// stay secrets, even if the new descriptor no longer marks their field sensitive).
    pub fn save_descriptor(
        &self,
        descriptor: pb::JobTypeDescriptor,
    ) -> Result<Arc<pb::PersistedJobTypeConfig>, ConfigStoreError> {
        let job_type = descriptor.job_type.clone();
        if !validator::is_valid_job_type(&job_type) {
            return Err(ConfigStoreError::InvalidJobType(job_type));
        }
        check_descriptor(&descriptor)?;

        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let old = self.slot(&job_type).unwrap_or_default();
        let saved = old.entry.config.as_deref();
        let config = match saved {
            None => bootstrap(&descriptor),
            Some(saved) => migrate(old.sent.as_deref(), &descriptor, saved),
        };
        let secrets = config_secrets::secret_fields(Some(&descriptor), &config, &old.secrets, saved);

        let config_changed = saved != Some(&config) || secrets != old.secrets;
        self.persistence.save(
            &self.sealer,
            &job_type,
            Some(&descriptor),
            config_changed.then_some((&config, &secrets)),
        )?;

        let config = Arc::new(config);
        info!(job_type, descriptor_version = descriptor.descriptor_version, "descriptor saved");
        self.write().insert(job_type, Slot::new(Some(Arc::new(descriptor)), Some(Arc::clone(&config)), secrets));
        Ok(config)
    }

    /// Validates and persists a config submitted by `updated_by`.
    ///
    /// A sensitive or read-only field absent from the submission keeps its saved value
    /// ("unchanged": the API and pages never show sensitive values, and browsers do not
    /// submit disabled inputs); an absent `admin_runtime` keeps the saved one. Values
    /// whose oneof is unset count as absent and are not stored. A new value for a field
    /// that held a secret ends its secrecy if the worker's descriptor no longer marks it
    /// sensitive.
    pub fn save_config(
        &self,
        mut config: pb::PersistedJobTypeConfig,
        updated_by: &str,
    ) -> Result<Arc<pb::PersistedJobTypeConfig>, ConfigStoreError> {
        let job_type = config.job_type.clone();
        if !validator::is_valid_job_type(&job_type) {
            return Err(ConfigStoreError::InvalidJobType(job_type));
        }

        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = self.slot(&job_type).unwrap_or_default();
        let Some(descriptor) = slot.entry.descriptor.as_deref() else {
            return Err(ConfigStoreError::UnknownJobType(job_type));
        };
        let saved = slot.entry.config.as_deref();

        config_value::keep_unchanged_config(descriptor, saved, &mut config);
        let mut errors = validator::validate_config(descriptor, &config, saved).err().unwrap_or_default();
        let secrets = config_secrets::secret_fields(slot.sent.as_deref(), &config, &slot.secrets, saved);
        errors.extend(config_secrets::reserved_values(&config, &secrets));
        if !errors.is_empty() {
            return Err(ConfigStoreError::Invalid(errors));
        }

        config.descriptor_version = descriptor.descriptor_version;
        config.updated_at = Some(proto::now());
        config.updated_by = updated_by.to_string();

        self.persistence.save(&self.sealer, &job_type, None, Some((&config, &secrets)))?;

        let config = Arc::new(config);
        info!(job_type, updated_by, "config saved");
        self.write().insert(job_type, Slot::new(slot.sent.clone(), Some(Arc::clone(&config)), secrets));
        Ok(config)
    }

    /// The effective runtime settings of a job type (see [`runtime_config::effective`]).
    pub fn runtime(&self, job_type: &str) -> pb::AdminRuntimeConfig {
        let entry = self.entry(job_type).unwrap_or_default();
        runtime_config::effective(entry.descriptor.as_deref(), entry.config.as_deref())
    }

    /// Whether the job type is off only until an operator enables it (its worker declared
    /// no runtime defaults; see [`runtime_config::awaits_operator`]).
    pub fn awaits_operator(&self, job_type: &str) -> bool {
        let entry = self.entry(job_type).unwrap_or_default();
        entry.descriptor.as_deref().is_some_and(|d| runtime_config::awaits_operator(d, entry.config.as_deref()))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Slot>> {
        self.entries.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Slot>> {
        self.entries.write().unwrap_or_else(PoisonError::into_inner)
    }
}

fn io_error(path: &Path, source: io::Error) -> ConfigStoreError {
    ConfigStoreError::Io { path: path.to_path_buf(), source }
}

fn json_bytes<M: Message + ProtoName>(path: &Path, msg: &M) -> Result<Vec<u8>, ConfigStoreError> {
    proto::json::to_string_pretty(msg)
        .map(String::into_bytes)
        .map_err(|source| ConfigStoreError::Json { path: path.to_path_buf(), source })
}

// ---- loading ------------------------------------------------------------------------

/// Loads every job type in `root` (`<data>/plugin/job_types`). Directories with invalid
/// names and unreadable files are skipped with a warning; a sealed value that does not
/// open is an error.
fn load_dir(root: &Path, sealer: &SecretBox) -> Result<BTreeMap<String, Slot>, ConfigStoreError> {
    let mut entries = BTreeMap::new();
    for dirent in fs::read_dir(root).map_err(|source| io_error(root, source))? {
        let dirent = match dirent {
            Ok(dirent) => dirent,
            Err(error) => {
                warn!(dir = %root.display(), %error, "cannot list a job type directory");
                continue;
            }
        };
        let path = dirent.path();
        if !path.is_dir() {
            continue;
        }
        let name = dirent.file_name().to_string_lossy().into_owned();
        if !validator::is_valid_job_type(&name) {
            warn!(dir = %path.display(), "skipping a job type directory with an invalid name");
            continue;
        }
        if let Some(slot) = load_entry(&name, &path, sealer)? {
            entries.insert(name, slot);
        }
    }
    Ok(entries)
}

/// Loads one job type directory; `None` when there is nothing usable in it. Sealed
/// values are opened; sensitive values found in clear are sealed in the files now.
fn load_entry(job_type: &str, dir: &Path, sealer: &SecretBox) -> Result<Option<Slot>, ConfigStoreError> {
    remove_temp_files(dir);

    let descriptor =
        load_logged::<pb::JobTypeDescriptor>(job_type, dir, DESCRIPTOR_PB, DESCRIPTOR_JSON).map(|(d, _)| d);
    let config = load_logged::<pb::PersistedJobTypeConfig>(job_type, dir, CONFIG_PB, CONFIG_JSON);
    make_slot(job_type, descriptor, config, sealer, |config, secrets| {
        write_all_or_nothing(&config_files(sealer, dir, config, secrets)?)
    })
}

/// One job type's slot from what was stored (`config` with where it was read, for
/// errors); `None` when there is nothing usable. A descriptor or config that names
/// another job type is skipped with a warning. Sealed values are opened; when sensitive
/// values were found in clear, `reseal` stores the config again with them sealed.
fn make_slot(
    job_type: &str,
    descriptor: Option<pb::JobTypeDescriptor>,
    config: Option<(pb::PersistedJobTypeConfig, PathBuf)>,
    sealer: &SecretBox,
    reseal: impl FnOnce(&pb::PersistedJobTypeConfig, &SecretFields) -> Result<(), ConfigStoreError>,
) -> Result<Option<Slot>, ConfigStoreError> {
    let descriptor = descriptor.filter(|d| {
        let matches = d.job_type == job_type;
        if !matches {
            warn!(job_type, "skipping a descriptor that names another job type");
        }
        matches
    });
    let config = config.and_then(|(mut c, path)| {
        if c.job_type.is_empty() {
            c.job_type = job_type.to_string();
        }
        if c.job_type == job_type {
            Some((c, path))
        } else {
            warn!(job_type, "skipping a config that names another job type");
            None
        }
    });
    let (config, secrets) = match config {
        None => (None, SecretFields::default()),
        Some((config, path)) => {
            let (config, sealed) =
                config_secrets::open_config(sealer, config).map_err(|u| ConfigStoreError::Secret {
                    path,
                    job_type: job_type.to_string(),
                    form: u.form.name(),
                    field: u.field,
                    key: sealer.origin().to_string(),
                    error: u.error,
                })?;
            let secrets = config_secrets::secret_fields(descriptor.as_ref(), &config, &sealed, Some(&config));
            if secrets != sealed {
                reseal(&config, &secrets)?;
                info!(job_type, "sensitive values saved in clear by an older build are now encrypted");
            }
            (Some(Arc::new(config)), secrets)
        }
    };
    if descriptor.is_none() && config.is_none() {
        return Ok(None);
    }
    Ok(Some(Slot::new(descriptor.map(Arc::new), config, secrets)))
}

/// A message decoded from a stored row, or `None` with a warning (like an unreadable file).
fn decode_logged<M: Message + Default>(job_type: &str, bytes: &[u8]) -> Option<M> {
    match M::decode(bytes) {
        Ok(msg) => Some(msg),
        Err(error) => {
            warn!(job_type, %error, "skipping an undecodable stored part of a job type");
            None
        }
    }
}

/// The message and the file it came from, or `None` (with a warning if it was unreadable).
fn load_logged<M: Message + Default + ProtoName>(
    job_type: &str,
    dir: &Path,
    pb_name: &str,
    json_name: &str,
) -> Option<(M, PathBuf)> {
    match load::<M>(dir, pb_name, json_name) {
        Ok(msg) => msg,
        Err(error) => {
            warn!(job_type, %error, "skipping an unreadable file");
            None
        }
    }
}

/// The message from `<dir>/<pb_name>`, else from `<dir>/<json_name>`, else `None`; with
/// the path it was read from.
fn load<M: Message + Default + ProtoName>(
    dir: &Path,
    pb_name: &str,
    json_name: &str,
) -> Result<Option<(M, PathBuf)>, ConfigStoreError> {
    let pb_path = dir.join(pb_name);
    match fs::read(&pb_path) {
        Ok(bytes) => {
            return match M::decode(bytes.as_slice()) {
                Ok(msg) => Ok(Some((msg, pb_path))),
                Err(source) => Err(ConfigStoreError::Decode { path: pb_path, source }),
            };
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(io_error(&pb_path, source)),
    }
    let json_path = dir.join(json_name);
    match fs::read_to_string(&json_path) {
        Ok(text) => match proto::json::from_str(&text) {
            Ok(msg) => Ok(Some((msg, json_path))),
            Err(source) => Err(ConfigStoreError::Json { path: json_path, source }),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(io_error(&json_path, source)),
    }
}

/// Removes temp files of atomic writes that a crash interrupted.
fn remove_temp_files(dir: &Path) {
    let Ok(listing) = fs::read_dir(dir) else {
        return;
    };
    for dirent in listing.flatten() {
        if fsutil::is_temp_file(&dirent.file_name().to_string_lossy())
            && let Err(error) = fs::remove_file(dirent.path())
        {
            warn!(path = %dirent.path().display(), %error, "cannot remove a leftover temp file");
        }
    }
}

// ---- descriptors and configs ----------------------------------------------------------

/// Rejects descriptors the admin could not render or validate against: fields without a
/// name, a name declared twice in one form, or a default that would read as sealed text.
fn check_descriptor(d: &pb::JobTypeDescriptor) -> Result<(), ConfigStoreError> {
    let forms = [("admin", d.admin_config_form.as_ref()), ("worker", d.worker_config_form.as_ref())];
    for (which, form) in forms {
        let mut names = HashSet::new();
        for field in config_value::form_fields(form) {
            let message = if field.name.is_empty() {
                format!("the {which} form has a field without a name")
            } else if !names.insert(field.name.as_str()) {
                format!("the {which} form declares field {:?} twice", field.name)
            } else {
                continue;
            };
            return Err(ConfigStoreError::BadDescriptor { job_type: d.job_type.clone(), message });
        }
    }
    if let Some(field) = config_secrets::reserved_default(d) {
        let message = format!(
            "the default of {field} starts with {:?}, which is reserved for encrypted values",
            crate::secret_box::SEALED_MARK
        );
        return Err(ConfigStoreError::BadDescriptor { job_type: d.job_type.clone(), message });
    }
    Ok(())
}

fn field_names(form: Option<&pb::ConfigForm>) -> HashSet<&str> {
    config_value::form_fields(form).map(|f| f.name.as_str()).collect()
}

/// The admin form's defaults, limited to fields the form declares (anything else would
/// make the bootstrapped config fail validation on its first save).
fn admin_defaults(d: &pb::JobTypeDescriptor) -> HashMap<String, pb::ConfigValue> {
    let form = d.admin_config_form.as_ref();
    declared(form, form.into_iter().flat_map(|f| &f.default_values))
}

/// The worker form's defaults overridden by the descriptor's `worker_default_values`,
/// limited to fields the worker form declares.
fn worker_defaults(d: &pb::JobTypeDescriptor) -> HashMap<String, pb::ConfigValue> {
    let form = d.worker_config_form.as_ref();
    declared(form, form.into_iter().flat_map(|f| &f.default_values).chain(&d.worker_default_values))
}

fn declared<'a>(
    form: Option<&pb::ConfigForm>,
    values: impl Iterator<Item = (&'a String, &'a pb::ConfigValue)>,
) -> HashMap<String, pb::ConfigValue> {
    let names = field_names(form);
    values
        .filter(|(name, value)| names.contains(name.as_str()) && value.kind.is_some())
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

fn bootstrap(d: &pb::JobTypeDescriptor) -> pb::PersistedJobTypeConfig {
    pb::PersistedJobTypeConfig {
        job_type: d.job_type.clone(),
        descriptor_version: d.descriptor_version,
        admin_config_values: admin_defaults(d),
        worker_config_values: worker_defaults(d),
        admin_runtime: Some(runtime_config::defaults_from_descriptor(d)),
        updated_at: Some(proto::now()),
        updated_by: BOOTSTRAP_USER.to_string(),
    }
}

/// The saved config fitted to a new descriptor. `updated_at`/`updated_by` stay as they
/// were: they record the operator's last save, not the worker's upgrade.
fn migrate(
    old: Option<&pb::JobTypeDescriptor>,
    new: &pb::JobTypeDescriptor,
    saved: &pb::PersistedJobTypeConfig,
) -> pb::PersistedJobTypeConfig {
    let mut config = saved.clone();
    migrate_values(
        &mut config.admin_config_values,
        old.map(|d| d.admin_config_form.as_ref()),
        new.admin_config_form.as_ref(),
        admin_defaults(new),
    );
    migrate_values(
        &mut config.worker_config_values,
        old.map(|d| d.worker_config_form.as_ref()),
        new.worker_config_form.as_ref(),
        worker_defaults(new),
    );
    config.job_type = new.job_type.clone();
    config.descriptor_version = new.descriptor_version;
    config
}

/// `old_form` is `None` when the previous descriptor is unknown: then every field counts
/// as new, and only fields without a saved value get their default.
fn migrate_values(
    values: &mut HashMap<String, pb::ConfigValue>,
    old_form: Option<Option<&pb::ConfigForm>>,
    new_form: Option<&pb::ConfigForm>,
    defaults: HashMap<String, pb::ConfigValue>,
) {
    let new_fields = field_names(new_form);
    let old_fields = old_form.map(field_names);
    values.retain(|name, _| new_fields.contains(name.as_str()));
    for (name, default) in defaults {
        let is_new = old_fields.as_ref().is_none_or(|old| !old.contains(name.as_str()));
        if is_new {
            values.entry(name).or_insert(default);
        }
    }
}

// ---- writing --------------------------------------------------------------------------

/// Where the store keeps what it holds: the seam between the in-memory state and its
/// persistence. Both keep the same encodings: the worker's descriptor, and the config
/// with the values of its secret fields sealed.
/// The job types stored in `table`. A config with a secret in clear is sealed and saved
/// back when `reseal` (the leader); a view leaves the row as it is.
fn load_table(
    table: &JobTypeTable,
    sealer: &SecretBox,
    write_back: bool,
) -> Result<BTreeMap<String, Slot>, ConfigStoreError> {
    let database = |source| ConfigStoreError::Database { database: table.redacted().to_string(), source };
    // Named in the errors of a sealed value that does not open.
    let at = PathBuf::from(format!("{} (table job_types)", table.redacted()));
    let mut entries = BTreeMap::new();
    for row in table.load().map_err(database)? {
        let job_type = row.job_type;
        if !validator::is_valid_job_type(&job_type) {
            warn!(job_type, "skipping a stored job type with an invalid name");
            continue;
        }
        let descriptor = row.descriptor.and_then(|bytes| decode_logged::<pb::JobTypeDescriptor>(&job_type, &bytes));
        let config = row
            .config
            .and_then(|bytes| decode_logged::<pb::PersistedJobTypeConfig>(&job_type, &bytes))
            .map(|config| (config, at.clone()));
        let reseal = |config: &pb::PersistedJobTypeConfig, secrets: &SecretFields| {
            if !write_back {
                return Ok(());
            }
            let sealed = seal(sealer, config, secrets)?;
            table.save(&job_type, None, Some(&sealed)).map_err(database)
        };
        if let Some(slot) = make_slot(&job_type, descriptor, config, sealer, reseal)? {
            entries.insert(job_type, slot);
        }
    }
    info!(store = %table.redacted(), job_types = entries.len(), "config store loaded");
    Ok(entries)
}

enum Persistence {
    /// Files in `root` (`<data>/plugin/job_types`), one directory per job type.
    Files { root: PathBuf },
    /// The `job_types` table of a PostgreSQL database; every save fenced by the lease
    /// epoch the table was opened under.
    Postgres(Box<JobTypeTable>),
}

impl Persistence {
    /// Stores a job type's new descriptor and/or config (`None`: unchanged), all of it
    /// or nothing.
    fn save(
        &self,
        sealer: &SecretBox,
        job_type: &str,
        descriptor: Option<&pb::JobTypeDescriptor>,
        config: Option<(&pb::PersistedJobTypeConfig, &SecretFields)>,
    ) -> Result<(), ConfigStoreError> {
        match self {
            Persistence::Files { root } => {
                let dir = root.join(job_type);
                let mut files = Vec::new();
                if let Some((config, secrets)) = config {
                    files.extend(config_files(sealer, &dir, config, secrets)?);
                }
                if let Some(descriptor) = descriptor {
                    files.push(PendingFile::new(dir.join(DESCRIPTOR_PB), descriptor.encode_to_vec(), false));
                    files.push(PendingFile::new(
                        dir.join(DESCRIPTOR_JSON),
                        json_bytes(&dir.join(DESCRIPTOR_JSON), descriptor)?,
                        false,
                    ));
                }
                write_all_or_nothing(&files)
            }
            Persistence::Postgres(table) => {
                let config = config.map(|(config, secrets)| seal(sealer, config, secrets)).transpose()?;
                let descriptor = descriptor.map(Message::encode_to_vec);
                table
                    .save(job_type, descriptor.as_deref(), config.as_deref())
                    .map_err(|source| ConfigStoreError::Database { database: table.redacted().to_string(), source })
            }
        }
    }
}

/// `config` encoded with the values of `secrets` sealed: the bytes of `config.pb`.
fn seal(
    sealer: &SecretBox,
    config: &pb::PersistedJobTypeConfig,
    secrets: &SecretFields,
) -> Result<Vec<u8>, ConfigStoreError> {
    config_secrets::seal_config(sealer, config, secrets)
        .map(|sealed| sealed.encode_to_vec())
        .map_err(|source| ConfigStoreError::Seal { job_type: config.job_type.clone(), source })
}

/// A loaded job type as a `job_types` row: the worker's descriptor and the sealed config.
fn slot_row(sealer: &SecretBox, job_type: &str, slot: &Slot) -> Result<JobTypeRow, ConfigStoreError> {
    Ok(JobTypeRow {
        job_type: job_type.to_string(),
        descriptor: slot.sent.as_ref().map(|d| d.encode_to_vec()),
        config: slot.entry.config.as_ref().map(|c| seal(sealer, c, &slot.secrets)).transpose()?,
    })
}

/// One file of a save: its new contents, and whether it may hold secrets.
struct PendingFile {
    path: PathBuf,
    bytes: Vec<u8>,
    private: bool,
}

impl PendingFile {
    fn new(path: PathBuf, bytes: Vec<u8>, private: bool) -> Self {
        Self { path, bytes, private }
    }
}

/// `config.pb` and `config.json` for `config`, the values of `secrets` sealed.
fn config_files(
    sealer: &SecretBox,
    dir: &Path,
    config: &pb::PersistedJobTypeConfig,
    secrets: &SecretFields,
) -> Result<Vec<PendingFile>, ConfigStoreError> {
    let sealed = config_secrets::seal_config(sealer, config, secrets)
        .map_err(|source| ConfigStoreError::Seal { job_type: config.job_type.clone(), source })?;
    let json_path = dir.join(CONFIG_JSON);
    Ok(vec![
        PendingFile::new(dir.join(CONFIG_PB), sealed.encode_to_vec(), true),
        PendingFile::new(json_path.clone(), json_bytes(&json_path, &sealed)?, true),
    ])
}

fn write_file(path: &Path, bytes: &[u8], private: bool) -> io::Result<()> {
    if private { fsutil::write_atomic_private(path, bytes) } else { fsutil::write_atomic(path, bytes) }
}

/// Writes each file atomically, in order. If one fails, the files already written get
/// their previous contents back (or are removed if they did not exist), best effort.
fn write_all_or_nothing(files: &[PendingFile]) -> Result<(), ConfigStoreError> {
    let mut previous = Vec::with_capacity(files.len());
    for file in files {
        match fs::read(&file.path) {
            Ok(bytes) => previous.push(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => previous.push(None),
            Err(source) => return Err(io_error(&file.path, source)),
        }
    }
    for (i, file) in files.iter().enumerate() {
        if let Err(source) = write_file(&file.path, &file.bytes, file.private) {
            for (done, old) in files[..i].iter().zip(&previous).rev() {
                let restored = match old {
                    Some(bytes) => write_file(&done.path, bytes, done.private),
                    None => fs::remove_file(&done.path),
                };
                if let Err(error) = restored {
                    warn!(path = %done.path.display(), %error, "cannot roll back a partly failed save");
                }
            }
            return Err(io_error(&file.path, source));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::config_value::Kind;

    use crate::secret_box::SecretBox;
    use crate::test_support::{
        TempDir,
        cv::{i, s},
        sealer,
    };

    fn field(name: &str, t: pb::ConfigFieldType) -> pb::ConfigField {
        pb::ConfigField { name: name.into(), field_type: t as i32, ..Default::default() }
    }
    fn form(fields: Vec<pb::ConfigField>, defaults: &[(&str, pb::ConfigValue)]) -> pb::ConfigForm {
        pb::ConfigForm {
            form_id: "form".into(),
            sections: vec![pb::ConfigSection { section_id: "main".into(), fields, ..Default::default() }],
            default_values: defaults.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            ..Default::default()
        }
    }

    /// Admin form: `limit` (int, 1..=100, default 10), `api_key` (sensitive string).
    /// Worker form: `region` (string, default "eu" from the form, "us" from the
    /// descriptor's worker defaults), `password` (sensitive), `node_id` (read-only).
    fn descriptor(job_type: &str, version: u32) -> pb::JobTypeDescriptor {
        let mut limit = field("limit", pb::ConfigFieldType::Int64);
        limit.min_value = Some(i(1));
        limit.max_value = Some(i(100));
        let mut api_key = field("api_key", pb::ConfigFieldType::String);
        api_key.sensitive = true;
        let mut password = field("password", pb::ConfigFieldType::String);
        password.sensitive = true;
        let mut node_id = field("node_id", pb::ConfigFieldType::String);
        node_id.read_only = true;
        pb::JobTypeDescriptor {
            job_type: job_type.into(),
            display_name: "Test job".into(),
            descriptor_version: version,
            admin_config_form: Some(form(
                vec![limit, api_key],
                &[("limit", i(10)), ("api_key", s("default-key")), ("not_a_field", i(1))],
            )),
            worker_config_form: Some(form(
                vec![field("region", pb::ConfigFieldType::String), password, node_id],
                &[("region", s("eu")), ("node_id", s("n1"))],
            )),
            admin_runtime_defaults: Some(pb::AdminRuntimeDefaults {
                enabled: true,
                detection_interval_minutes: 30,
                ..Default::default()
            }),
            worker_default_values: [("region".to_string(), s("us"))].into(),
            ..Default::default()
        }
    }

    fn read_all(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name().to_string_lossy().into_owned(), fs::read(e.path()).unwrap())
            })
            .collect();
        files.sort();
        files
    }

    #[test]
    fn save_descriptor_writes_the_four_files_and_bootstraps_the_config_from_defaults() {
        let tmp = TempDir::new("bootstrap");
        let store = ConfigStore::open(&tmp.0, sealer()).unwrap();
        let config = store.save_descriptor(descriptor("vacuum", 1)).unwrap();

        let dir = tmp.job_dir("vacuum");
        let names: Vec<String> = read_all(&dir).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["config.json", "config.pb", "descriptor.json", "descriptor.pb"]);

        let on_disk = pb::JobTypeDescriptor::decode(fs::read(dir.join("descriptor.pb")).unwrap().as_slice()).unwrap();
        assert_eq!(on_disk, descriptor("vacuum", 1));
        let json: pb::JobTypeDescriptor =
            proto::json::from_str(&fs::read_to_string(dir.join("descriptor.json")).unwrap()).unwrap();
        assert_eq!(json, on_disk);
        let saved = pb::PersistedJobTypeConfig::decode(fs::read(dir.join("config.pb")).unwrap().as_slice()).unwrap();
        let Some(Kind::StringValue(sealed)) = &saved.admin_config_values["api_key"].kind else {
            panic!("the sensitive default is sealed on disk");
        };
        assert!(sealed.starts_with("plughost-enc:v1:"));
        assert_eq!(&config_secrets::open_config(&sealer(), saved.clone()).unwrap().0, config.as_ref());
        let json: pb::PersistedJobTypeConfig =
            proto::json::from_str(&fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
        assert_eq!(json, saved);

        assert_eq!(config.job_type, "vacuum");
        assert_eq!(config.descriptor_version, 1);
        assert_eq!(config.updated_by, "bootstrap");
        assert!(config.updated_at.is_some());
        assert_eq!(
            config.admin_config_values,
            [("limit".to_string(), i(10)), ("api_key".to_string(), s("default-key"))].into()
        );
        // The descriptor's worker_default_values win over the form's defaults.
        assert_eq!(
            config.worker_config_values,
            [("region".to_string(), s("us")), ("node_id".to_string(), s("n1"))].into()
        );
        let runtime = config.admin_runtime.unwrap();
        assert_eq!(runtime.detection_interval_minutes, 30);
        assert_eq!(runtime.execution_timeout_seconds, 3600);
        assert_eq!(store.job_types(), vec!["vacuum".to_string()]);
        assert_eq!(store.runtime("vacuum"), runtime);
    }

    #[test]
    fn reopening_the_store_loads_descriptors_and_configs() {
        let tmp = TempDir::new("reopen");
        let (saved, descriptor_arc) = {
            let store = ConfigStore::open(&tmp.0, sealer()).unwrap();
            store.save_descriptor(descriptor("vacuum", 2)).unwrap();
            store.save_descriptor(descriptor("balance", 1)).unwrap();
            let mut c = (*store.config("vacuum").unwrap()).clone();
            c.admin_config_values.insert("limit".into(), i(42));
            (store.save_config(c, "alice").unwrap(), store.descriptor("vacuum").unwrap())
        };
        let store = ConfigStore::open(&tmp.0, sealer()).unwrap();
        assert_eq!(store.job_types(), vec!["balance".to_string(), "vacuum".to_string()]);
        assert_eq!(store.config("vacuum").unwrap(), saved);
        assert_eq!(store.descriptor("vacuum").unwrap(), descriptor_arc);
        assert_eq!(store.config("vacuum").unwrap().updated_by, "alice");
    }

    #[test]
    fn an_invalid_config_returns_field_errors_and_changes_nothing() {
        let tmp = TempDir::new("invalid");
        let store = ConfigStore::open(&tmp.0, sealer()).unwrap();
        store.save_descriptor(descriptor("vacuum", 1)).unwrap();
        let dir = tmp.job_dir("vacuum");
        let before = read_all(&dir);
        let in_memory = store.config("vacuum").unwrap();

        let mut c = (*in_memory).clone();
        c.admin_config_values.insert("limit".into(), i(1000));
        c.worker_config_values.insert("region".into(), i(3));
        c.worker_config_values.insert("node_id".into(), s("n2"));
        c.admin_runtime = Some(pb::AdminRuntimeConfig { retry_limit: 500, ..runtime_config::fallback() });
        let Err(ConfigStoreError::Invalid(errors)) = store.save_config(c, "alice") else {
            panic!("the config should be rejected");
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["admin.limit", "worker.region", "worker.node_id", "runtime.retry_limit"]);
        assert_eq!(errors[0].message, "must be at most 100");

        assert_eq!(read_all(&dir), before);
        assert_eq!(store.config("vacuum").unwrap(), in_memory);
    }

    #[test]
    fn a_sensitive_value_absent_from_a_submission_keeps_its_saved_value() {
        let tmp = TempDir::new("sensitive");
        let store = ConfigStore::open(&tmp.0, sealer()).unwrap();
        store.save_descriptor(descriptor("vacuum", 1)).unwrap();
        let mut c = (*store.config("vacuum").unwrap()).clone();
        c.admin_config_values.insert("api_key".into(), s("secret-1"));
        c.worker_config_values.insert("password".into(), s("pw-1"));
        store.save_config(c, "alice").unwrap();

        // What the API hands out, edited and sent back.
        let d = store.descriptor("vacuum").unwrap();
        let mut shown = validator::redact(&d, &store.config("vacuum").unwrap());
        assert!(!shown.admin_config_values.contains_key("api_key"));
        shown.admin_config_values.insert("limit".into(), i(20));
        let saved = store.save_config(shown, "bob").unwrap();

        assert_eq!(saved.admin_config_values["api_key"], s("secret-1"));
        assert_eq!(saved.worker_config_values["password"], s("pw-1"));
        assert_eq!(saved.admin_config_values["limit"], i(20));
        assert_eq!(saved.updated_by, "bob");

        // An explicit new value replaces it.
        let mut c = (*saved).clone();
        c.admin_config_values.insert("api_key".into(), s("secret-2"));
        assert_eq!(store.save_config(c, "bob").unwrap().admin_config_values["api_key"], s("secret-2"));
    }

    #[test]
    fn a_read_only_value_absent_from_a_submission_is_kept() {
        let tmp = TempDir::new("read-only");
        let store = ConfigStore::open(&tmp.0, sealer()).unwrap();
        store.save_descriptor(descriptor("vacuum", 1)).unwrap();
        let mut c = (*store.config("vacuum").unwrap()).clone();
        c.worker_config_values.remove("node_id");
        let saved = store.save_config(c, "alice").unwrap();
        assert_eq!(saved.worker_config_values["node_id"], s("n1"));
    }

    #[test]
    fn save_config_stamps_the_config_and_keeps_the_saved_runtime_when_none_is_given() {
        let tmp = TempDir::new("stamp");
        let store = ConfigStore::open(&tmp.0, sealer()).unwrap();
        store.save_descriptor(descriptor("vacuum", 7)).unwrap();
        let mut c = (*store.config("vacuum").unwrap()).clone();
        c.admin_runtime = Some(pb::AdminRuntimeConfig { retry_limit: 9, ..runtime_config::fallback() });
        store.save_config(c, "alice").unwrap();

        let partial = pb::PersistedJobTypeConfig {
            job_type: "vacuum".into(),
            admin_config_values: [("limit".to_string(), i(5))].into(),
            ..Default::default()
        };
        let saved = store.save_config(partial, "bob").unwrap();
        assert_eq!(saved.descriptor_version, 7);
        assert_eq!(saved.updated_by, "bob");
        assert!(saved.updated_at.is_some());
        assert_eq!(saved.admin_runtime.unwrap().retry_limit, 9);
        assert_eq!(store.runtime("vacuum").retry_limit, 9);
    }

    #[test]
    fn save_config_rejects_unknown_and_invalid_job_types() {
        let tmp = TempDir::new("unknown");
        let store = ConfigStore::open(&tmp.0, sealer()).unwrap();
        let config = |job_type: &str| pb::PersistedJobTypeConfig { job_type: job_type.into(), ..Default::default() };
        assert!(matches!(
            store.save_config(config("nope"), "alice"),
            Err(ConfigStoreError::UnknownJobType(t)) if t == "nope"
        ));
        for bad in ["", "..", "a/b"] {
            assert!(matches!(store.save_config(config(bad), "alice"), Err(ConfigStoreError::InvalidJobType(_))));
        }
    }

    #[test]
    fn save_descriptor_rejects_invalid_names_and_malformed_forms() {
        let tmp = TempDir::new("bad-descriptor");
        let store = ConfigStore::open(&tmp.0, sealer()).unwrap();
        for bad in ["..", "a/b", ""] {
            assert!(matches!(store.save_descriptor(descriptor(bad, 1)), Err(ConfigStoreError::InvalidJobType(_))));
        }
        let mut twice = descriptor("vacuum", 1);
        let f = twice.admin_config_form.as_mut().unwrap();
        f.sections[0].fields.push(field("limit", pb::ConfigFieldType::Int64));
        let err = store.save_descriptor(twice).unwrap_err();
        assert_eq!(err.to_string(), "descriptor for vacuum is invalid: the admin form declares field \"limit\" twice");
        let mut nameless = descriptor("vacuum", 1);
        let f = nameless.worker_config_form.as_mut().unwrap();
        f.sections[0].fields.push(field("", pb::ConfigFieldType::Int64));
        assert!(matches!(store.save_descriptor(nameless), Err(ConfigStoreError::BadDescriptor { .. })));
        assert!(store.job_types().is_empty());
        assert!(fs::read_dir(tmp.0.join("plugin/job_types")).unwrap().next().is_none());
    }

    #[test]
    fn a_newer_descriptor_version_migrates_the_saved_config() {
        let tmp = TempDir::new("migrate");
        let store = ConfigStore::open(&tmp.0, sealer()).unwrap();
        store.save_descriptor(descriptor("vacuum", 1)).unwrap();
        let mut c = (*store.config("vacuum").unwrap()).clone();
        c.admin_config_values.insert("api_key".into(), s("secret"));
        c.admin_config_values.remove("limit");
        store.save_config(c, "alice").unwrap();

        // Version 2 drops `region` and adds `batch` (default 8).
        let mut v2 = descriptor("vacuum", 2);
        v2.admin_config_form.as_mut().unwrap().sections[0].fields.push(field("batch", pb::ConfigFieldType::Int64));
        v2.admin_config_form.as_mut().unwrap().default_values.insert("batch".into(), i(8));
        v2.worker_config_form.as_mut().unwrap().sections[0].fields.retain(|f| f.name != "region");
        assert!(store.needs_descriptor("vacuum", Some(2)));
        let migrated = store.save_descriptor(v2.clone()).unwrap();

        assert_eq!(migrated.descriptor_version, 2);
        assert_eq!(migrated.updated_by, "alice");
        assert_eq!(migrated.admin_config_values["api_key"], s("secret"));
        assert_eq!(migrated.admin_config_values["batch"], i(8));
        // Not a new field: the operator's choice to leave it empty stands.
        assert!(!migrated.admin_config_values.contains_key("limit"));
        assert!(!migrated.worker_config_values.contains_key("region"));
        assert_eq!(migrated.worker_config_values["node_id"], s("n1"));
        assert!(!store.needs_descriptor("vacuum", Some(2)));

        let reopened = ConfigStore::open(&tmp.0, sealer()).unwrap();
        assert_eq!(reopened.config("vacuum").unwrap(), migrated);
        assert_eq!(*reopened.descriptor("vacuum").unwrap(), v2);
    }

    #[test]
    fn resaving_the_same_descriptor_leaves_the_config_untouched() {
        let tmp = TempDir::new("same");
        let store = ConfigStore::open(&tmp.0, sealer()).unwrap();
        let first = store.save_descriptor(descriptor("vacuum", 1)).unwrap();
        let config_pb = fs::read(tmp.job_dir("vacuum").join("config.pb")).unwrap();
        let second = store.save_descriptor(descriptor("vacuum", 1)).unwrap();
        assert_eq!(first, second);
        assert_eq!(fs::read(tmp.job_dir("vacuum").join("config.pb")).unwrap(), config_pb);
    }

    #[test]
    fn needs_descriptor_is_true_only_without_one_or_for_a_newer_version() {
        let tmp = TempDir::new("needs");
        let store = ConfigStore::open(&tmp.0, sealer()).unwrap();
        assert!(store.needs_descriptor("vacuum", None));
        assert!(store.needs_descriptor("vacuum", Some(1)));
        store.save_descriptor(descriptor("vacuum", 3)).unwrap();
        assert!(!store.needs_descriptor("vacuum", None));
        assert!(!store.needs_descriptor("vacuum", Some(2)));
        assert!(!store.needs_descriptor("vacuum", Some(3)));
        assert!(store.needs_descriptor("vacuum", Some(4)));
    }

    #[test]
    fn a_corrupt_descriptor_is_skipped_and_the_other_job_types_still_load() {
        let tmp = TempDir::new("corrupt");
        {
            let store = ConfigStore::open(&tmp.0, sealer()).unwrap();
            store.save_descriptor(descriptor("good", 1)).unwrap();
            store.save_descriptor(descriptor("broken", 1)).unwrap();
        }
        fs::write(tmp.job_dir("broken").join("descriptor.pb"), b"\xff\xff\xff not protobuf").unwrap();
        fs::create_dir_all(tmp.0.join("plugin/job_types/bad name")).unwrap();
        fs::write(tmp.0.join("plugin/job_types/stray-file"), b"x").unwrap();
        fs::create_dir_all(tmp.job_dir("empty")).unwrap();

        let store = ConfigStore::open(&tmp.0, sealer()).unwrap();
        assert!(store.descriptor("good").is_some());
        assert!(store.config("good").is_some());
        // The saved config survives; the worker will be asked for the descriptor again.
        assert!(store.descriptor("broken").is_none());
        assert!(store.config("broken").is_some());
        assert!(store.needs_descriptor("broken", Some(1)));
        assert_eq!(store.job_types(), vec!["broken".to_string(), "good".to_string()]);

        // Re-sending the descriptor repairs the job type and keeps the saved values.
        let config = store.save_descriptor(descriptor("broken", 1)).unwrap();
        assert_eq!(config.admin_config_values["limit"], i(10));
        assert!(ConfigStore::open(&tmp.0, sealer()).unwrap().descriptor("broken").is_some());
    }

    #[test]
    fn a_descriptor_naming_another_job_type_is_skipped_on_load() {
        let tmp = TempDir::new("mismatch");
        let dir = tmp.job_dir("vacuum");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("descriptor.pb"), descriptor("balance", 1).encode_to_vec()).unwrap();
        let store = ConfigStore::open(&tmp.0, sealer()).unwrap();
        assert!(store.job_types().is_empty());
    }

    #[test]
    fn json_files_are_read_when_the_protobuf_files_are_missing() {
        let tmp = TempDir::new("json-only");
        let dir = tmp.job_dir("vacuum");
        fs::create_dir_all(&dir).unwrap();
        let d = descriptor("vacuum", 4);
        fs::write(dir.join("descriptor.json"), proto::json::to_string_pretty(&d).unwrap()).unwrap();
        let store = ConfigStore::open(&tmp.0, sealer()).unwrap();
        assert_eq!(*store.descriptor("vacuum").unwrap(), d);
        assert!(store.config("vacuum").is_none());
    }

    #[test]
    fn saves_leave_no_temp_files_and_leftovers_are_removed_on_open() {
        let tmp = TempDir::new("temp-files");
        let store = ConfigStore::open(&tmp.0, sealer()).unwrap();
        store.save_descriptor(descriptor("vacuum", 1)).unwrap();
        let c = (*store.config("vacuum").unwrap()).clone();
        store.save_config(c, "alice").unwrap();
        let dir = tmp.job_dir("vacuum");
        let names = || -> Vec<String> { read_all(&dir).into_iter().map(|(n, _)| n).collect() };
        assert_eq!(names(), ["config.json", "config.pb", "descriptor.json", "descriptor.pb"]);

        fs::write(dir.join(".config.pb.plughost-tmp-1-1"), b"half written").unwrap();
        ConfigStore::open(&tmp.0, sealer()).unwrap();
        assert_eq!(names(), ["config.json", "config.pb", "descriptor.json", "descriptor.pb"]);
    }

    #[test]
    fn a_save_whose_target_cannot_be_read_fails_before_anything_is_written() {
        let tmp = TempDir::new("unreadable");
        let store = ConfigStore::open(&tmp.0, sealer()).unwrap();
        store.save_descriptor(descriptor("vacuum", 1)).unwrap();
        let dir = tmp.job_dir("vacuum");
        // config.json cannot be replaced while a non-empty directory sits in its place.
        fs::remove_file(dir.join("config.json")).unwrap();
        fs::create_dir_all(dir.join("config.json/blocker")).unwrap();
        let before = fs::read(dir.join("config.pb")).unwrap();
        let in_memory = store.config("vacuum").unwrap();

        let mut c = (*in_memory).clone();
        c.admin_config_values.insert("limit".into(), i(77));
        assert!(matches!(store.save_config(c, "alice"), Err(ConfigStoreError::Io { .. })));
        assert_eq!(fs::read(dir.join("config.pb")).unwrap(), before);
        assert_eq!(store.config("vacuum").unwrap(), in_memory);
    }

    #[cfg(unix)]
    #[test]
    fn a_failed_write_rolls_back_the_files_already_written() {
        let tmp = TempDir::new("rollback");
        let existing = tmp.0.join("existing");
        let created = tmp.0.join("created");
        fs::write(&existing, b"old").unwrap();
        // A dangling symlink as parent: reading says "not found", writing cannot create it.
        std::os::unix::fs::symlink(tmp.0.join("nowhere/at/all"), tmp.0.join("link")).unwrap();
        let files = [
            PendingFile::new(existing.clone(), b"new".to_vec(), false),
            PendingFile::new(created.clone(), b"new".to_vec(), true),
            PendingFile::new(tmp.0.join("link/file"), b"new".to_vec(), false),
        ];
        assert!(matches!(write_all_or_nothing(&files), Err(ConfigStoreError::Io { .. })));
        assert_eq!(fs::read(&existing).unwrap(), b"old");
        assert!(!created.exists());
    }

    #[cfg(unix)]
    #[test]
    fn config_files_are_readable_by_the_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = TempDir::new("private");
        let store = ConfigStore::open(&tmp.0, sealer()).unwrap();
        store.save_descriptor(descriptor("vacuum", 1)).unwrap();
        for name in ["config.pb", "config.json"] {
            let mode = fs::metadata(tmp.job_dir("vacuum").join(name)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
    }

    #[test]
    fn debug_output_never_shows_config_values() {
        let tmp = TempDir::new("debug");
        let store = ConfigStore::open(&tmp.0, sealer()).unwrap();
        store.save_descriptor(descriptor("vacuum", 1)).unwrap();
        let mut c = (*store.config("vacuum").unwrap()).clone();
        c.admin_config_values.insert("api_key".into(), s("top-secret-value"));
        store.save_config(c, "alice").unwrap();
        let printed = format!("{store:?} {:?}", store.entry("vacuum").unwrap());
        assert!(printed.contains("vacuum"));
        assert!(!printed.contains("top-secret-value"));
    }

    #[test]
    fn runtime_falls_back_for_unknown_job_types() {
        let tmp = TempDir::new("runtime");
        let store = ConfigStore::open(&tmp.0, sealer()).unwrap();
        assert_eq!(store.runtime("nope"), runtime_config::fallback());
    }

    // ---- secrets at rest ----------------------------------------------------------------

    fn files_contain(dir: &Path, needle: &str) -> Vec<String> {
        read_all(dir)
            .into_iter()
            .filter(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
            .map(|(name, _)| name)
            .collect()
    }

    fn field_of<'a>(d: &'a pb::JobTypeDescriptor, name: &str) -> &'a pb::ConfigField {
        config_value::form_fields(d.admin_config_form.as_ref())
            .chain(config_value::form_fields(d.worker_config_form.as_ref()))
            .find(|f| f.name == name)
            .unwrap()
    }

    #[test]
    fn no_config_file_holds_a_sensitive_value_in_clear() {
        let tmp = TempDir::new("sealed");
        let store = ConfigStore::open(&tmp.0, sealer()).unwrap();
        store.save_descriptor(descriptor("vacuum", 1)).unwrap();
        let mut c = (*store.config("vacuum").unwrap()).clone();
        c.admin_config_values.insert("api_key".into(), s("canary-api-key"));
        c.worker_config_values.insert("password".into(), s("canary-password"));
        let saved = store.save_config(c, "alice").unwrap();
        assert_eq!(saved.admin_config_values["api_key"], s("canary-api-key"), "in memory: plaintext");

        let dir = tmp.job_dir("vacuum");
        assert!(files_contain(&dir, "canary-").is_empty());
        assert!(files_contain(&dir, "default-key").iter().all(|f| f.starts_with("descriptor")));
        assert_eq!(files_contain(&dir, "plughost-enc:v1:"), ["config.json", "config.pb"]);

        let reopened = ConfigStore::open(&tmp.0, sealer()).unwrap();
        assert_eq!(reopened.config("vacuum").unwrap(), saved);
    }

    #[test]
    fn a_config_written_in_clear_by_an_older_build_is_sealed_when_the_store_opens() {
        let tmp = TempDir::new("clear");
        let dir = tmp.job_dir("vacuum");
        fs::create_dir_all(&dir).unwrap();
        let d = descriptor("vacuum", 1);
        let clear = pb::PersistedJobTypeConfig {
            job_type: "vacuum".into(),
            descriptor_version: 1,
            admin_config_values: [("api_key".to_string(), s("old-clear-secret")), ("limit".to_string(), i(7))].into(),
            ..Default::default()
        };
        fs::write(dir.join("descriptor.pb"), d.encode_to_vec()).unwrap();
        fs::write(dir.join("config.pb"), clear.encode_to_vec()).unwrap();
        fs::write(dir.join("config.json"), proto::json::to_string_pretty(&clear).unwrap()).unwrap();

        let store = ConfigStore::open(&tmp.0, sealer()).unwrap();
        assert_eq!(*store.config("vacuum").unwrap(), clear);
        assert!(files_contain(&dir, "old-clear-secret").is_empty());
        assert_eq!(files_contain(&dir, "plughost-enc:v1:"), ["config.json", "config.pb"]);
        // Sealed once: the next open finds nothing to do.
        let config_pb = fs::read(dir.join("config.pb")).unwrap();
        let again = ConfigStore::open(&tmp.0, sealer()).unwrap();
        assert_eq!(*again.config("vacuum").unwrap(), clear);
        assert_eq!(fs::read(dir.join("config.pb")).unwrap(), config_pb);
    }

    #[test]
    fn a_store_opened_with_another_key_refuses_and_names_the_file_and_field() {
        let tmp = TempDir::new("wrong-key");
        let store = ConfigStore::open(&tmp.0, sealer()).unwrap();
        store.save_descriptor(descriptor("vacuum", 1)).unwrap();
        let mut c = (*store.config("vacuum").unwrap()).clone();
        c.worker_config_values.insert("password".into(), s("canary-password"));
        store.save_config(c, "alice").unwrap();
        drop(store);

        let other = SecretBox::from_key(&[9; 32], "other key");
        let err = ConfigStore::open(&tmp.0, other).unwrap_err();
        assert!(matches!(err, ConfigStoreError::Secret { error: OpenError::Unauthentic, .. }), "{err:?}");
        let message = err.to_string();
        let path = tmp.job_dir("vacuum").join("config.pb");
        for part in [path.display().to_string().as_str(), "\"vacuum\"", "other key", "wrong secret key"] {
            assert!(message.contains(part), "{part:?} in {message}");
        }
        assert!(!message.contains("canary"));
    }

    #[test]
    fn a_field_that_held_a_secret_stays_sensitive_when_a_new_descriptor_drops_the_flag() {
        let tmp = TempDir::new("dropped-flag");
        let store = ConfigStore::open(&tmp.0, sealer()).unwrap();
        store.save_descriptor(descriptor("vacuum", 1)).unwrap();
        let mut c = (*store.config("vacuum").unwrap()).clone();
        c.admin_config_values.insert("api_key".into(), s("canary-api-key"));
        c.worker_config_values.insert("password".into(), s("canary-password"));
        store.save_config(c, "alice").unwrap();

        let mut v2 = descriptor("vacuum", 2);
        v2.admin_config_form.as_mut().unwrap().sections[0].fields[1].sensitive = false;
        store.save_descriptor(v2.clone()).unwrap();
        let dir = tmp.job_dir("vacuum");
        let on_disk = pb::JobTypeDescriptor::decode(fs::read(dir.join("descriptor.pb")).unwrap().as_slice()).unwrap();
        assert_eq!(on_disk, v2, "the files keep the worker's descriptor");
        let check = |store: &ConfigStore| {
            let shown = store.descriptor("vacuum").unwrap();
            assert!(field_of(&shown, "api_key").sensitive);
            let redacted = validator::redact(&shown, &store.config("vacuum").unwrap());
            assert!(!redacted.admin_config_values.contains_key("api_key"));
            assert!(files_contain(&dir, "canary-api-key").is_empty());
        };
        check(&store);
        let store = ConfigStore::open(&tmp.0, sealer()).unwrap();
        check(&store);

        // Left out of a submission, or resubmitted unchanged: still a secret.
        let shown = validator::redact(&store.descriptor("vacuum").unwrap(), &store.config("vacuum").unwrap());
        store.save_config(shown, "bob").unwrap();
        store.save_config((*store.config("vacuum").unwrap()).clone(), "bob").unwrap();
        check(&store);

        // Re-entered: the field follows the worker's descriptor again.
        let mut c = (*store.config("vacuum").unwrap()).clone();
        c.admin_config_values.insert("api_key".into(), s("new-clear-key"));
        store.save_config(c, "bob").unwrap();
        assert!(!field_of(&store.descriptor("vacuum").unwrap(), "api_key").sensitive);
        assert_eq!(files_contain(&dir, "new-clear-key"), ["config.json", "config.pb"]);
        assert!(files_contain(&dir, "canary-").is_empty(), "the password is still sealed");
        assert_eq!(files_contain(&dir, "plughost-enc:"), ["config.json", "config.pb"]);
    }

    #[test]
    fn clear_values_and_defaults_that_look_encrypted_are_refused() {
        let tmp = TempDir::new("reserved");
        let store = ConfigStore::open(&tmp.0, sealer()).unwrap();
        store.save_descriptor(descriptor("vacuum", 1)).unwrap();
        let mut c = (*store.config("vacuum").unwrap()).clone();
        c.worker_config_values.insert("region".into(), s("plughost-enc:v1:AAAA"));
        let Err(ConfigStoreError::Invalid(errors)) = store.save_config(c.clone(), "alice") else {
            panic!("a clear value that looks sealed is refused");
        };
        assert_eq!(errors[0].field, "worker.region");
        // In a sensitive field it is just a secret like any other.
        c.worker_config_values.insert("region".into(), s("us"));
        c.worker_config_values.insert("password".into(), s("plughost-enc:v1:AAAA"));
        store.save_config(c, "alice").unwrap();
        let reopened = ConfigStore::open(&tmp.0, sealer()).unwrap();
        assert_eq!(reopened.config("vacuum").unwrap().worker_config_values["password"], s("plughost-enc:v1:AAAA"));

        let mut d = descriptor("other", 1);
        d.worker_default_values.insert("region".into(), s("plughost-enc:v1:AAAA"));
        assert!(matches!(store.save_descriptor(d), Err(ConfigStoreError::BadDescriptor { .. })));
    }

    // ---- PostgreSQL -----------------------------------------------------------------------

    /// A fresh database whose lease is held at `epoch` (the lease table as the election
    /// creates it), and its target.
    fn leased_database(tag: &str, epoch: i64) -> (String, PgTarget) {
        let url = crate::test_support::postgres_database(tag);
        crate::store::tests::pg_side(url.clone(), move |client| async move {
            crate::store::postgres::ensure_lease_table(&client).await.unwrap();
            client
                .execute(
                    "INSERT INTO plughost_lease (id, holder, epoch, expires_at) \
                     VALUES (1, 'me', $1, now() + interval '1 minute')",
                    &[&epoch],
                )
                .await
                .unwrap();
        });
        let target = PgTarget::parse(&url, None).unwrap();
        (url, target)
    }

    /// Another admin takes over: the lease's epoch becomes `epoch`.
    fn take_over(url: &str, epoch: i64) {
        crate::store::tests::pg_side(url.to_string(), move |client| async move {
            client.execute("UPDATE plughost_lease SET epoch = $1 WHERE id = 1", &[&epoch]).await.unwrap();
        });
    }

    /// Every row of `job_types`, by name: (job type, descriptor, config, updated_at).
    type Row = (String, Option<Vec<u8>>, Option<Vec<u8>>, i64);
    fn rows(url: &str) -> Vec<Row> {
        crate::store::tests::pg_side(url.to_string(), |client| async move {
            let rows = client
                .query("SELECT job_type, descriptor, config, updated_at FROM job_types ORDER BY job_type", &[])
                .await
                .unwrap();
            rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect()
        })
    }

    fn contains(bytes: &[u8], needle: &str) -> bool {
        bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
    }

    /// A config with secrets in both forms and a changed limit, saved by alice.
    fn save_secrets(store: &ConfigStore, limit: i64) -> Arc<pb::PersistedJobTypeConfig> {
        let mut c = (*store.config("vacuum").unwrap()).clone();
        c.admin_config_values.insert("limit".into(), i(limit));
        c.admin_config_values.insert("api_key".into(), s("canary-api-key"));
        c.worker_config_values.insert("password".into(), s("canary-password"));
        store.save_config(c, "alice").unwrap()
    }

    #[test]
    fn a_new_leader_sees_the_descriptors_and_configs_saved_on_the_old_one() {
        let (url, target) = leased_database("configs-shared", 1);
        let (dir_a, dir_b) = (TempDir::new("pg-leader-a"), TempDir::new("pg-leader-b"));
        let a = ConfigStore::open_postgres(&target, 1, &dir_a.0, sealer()).unwrap();
        assert!(a.job_types().is_empty());
        a.save_descriptor(descriptor("vacuum", 1)).unwrap();
        let saved = save_secrets(&a, 42);
        assert_eq!(saved.admin_config_values["api_key"], s("canary-api-key"), "in memory: plaintext");
        assert!(!dir_a.0.join("plugin/job_types/vacuum").exists(), "nothing is written to the data dir");

        // In the row: the worker's descriptor, the config with its secrets sealed.
        let stored = rows(&url);
        assert_eq!(stored.len(), 1);
        let (job_type, descriptor_bytes, config_bytes, _) = &stored[0];
        assert_eq!(job_type, "vacuum");
        let descriptor_bytes = descriptor_bytes.as_deref().unwrap();
        assert_eq!(pb::JobTypeDescriptor::decode(descriptor_bytes).unwrap(), descriptor("vacuum", 1));
        let config_bytes = config_bytes.as_deref().unwrap();
        assert!(!contains(config_bytes, "canary-"), "no secret in clear in the row");
        assert!(contains(config_bytes, "plughost-enc:v1:"));
        let sealed = pb::PersistedJobTypeConfig::decode(config_bytes).unwrap();
        assert_eq!(sealed.admin_config_values["limit"], i(42));
        assert_eq!(sealed.updated_by, "alice");

        // Another admin takes over, with its own (empty) data dir and the same key.
        take_over(&url, 2);
        let b = ConfigStore::open_postgres(&target, 2, &dir_b.0, sealer()).unwrap();
        assert_eq!(b.job_types(), ["vacuum"]);
        assert_eq!(b.descriptor("vacuum"), a.descriptor("vacuum"));
        assert_eq!(b.config("vacuum").unwrap(), saved, "secrets opened again");
        assert!(field_of(&b.descriptor("vacuum").unwrap(), "api_key").sensitive);
        assert!(!b.needs_descriptor("vacuum", Some(1)));
        // And goes on saving under its epoch.
        let again = save_secrets(&b, 43);
        assert_eq!(again.admin_config_values["limit"], i(43));
        let printed = format!("{b:?}");
        assert!(printed.contains("vacuum") && !printed.contains("canary"), "{printed}");

        // An admin with another key refuses to start, naming the table, never the secret.
        let other = SecretBox::from_key(&[9; 32], "other key");
        let err = ConfigStore::open_postgres(&target, 2, &dir_b.0, other).unwrap_err();
        assert!(matches!(err, ConfigStoreError::Secret { error: OpenError::Unauthentic, .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("(table job_types)") && message.contains("\"vacuum\""), "{message}");
        assert!(!message.contains("canary"));
    }

    #[test]
    fn a_save_under_a_stale_epoch_is_refused_and_changes_nothing() {
        let (url, target) = leased_database("configs-fenced", 1);
        let dir = TempDir::new("pg-fenced");
        let store = ConfigStore::open_postgres(&target, 1, &dir.0, sealer()).unwrap();
        store.save_descriptor(descriptor("vacuum", 1)).unwrap();
        let saved = save_secrets(&store, 20);
        let before = rows(&url);

        take_over(&url, 2);
        let mut c = (*saved).clone();
        c.admin_config_values.insert("limit".into(), i(77));
        let err = store.save_config(c, "mallory").unwrap_err();
        assert!(err.is_fenced(), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("fenced") && message.contains("epoch 1") && message.contains("now 2"), "{message}");
        assert!(matches!(crate::http::ApiError::from(err), crate::http::ApiError::Unavailable(_)));
        let err = store.save_descriptor(descriptor("vacuum", 2)).unwrap_err();
        assert!(err.is_fenced(), "{err:?}");
        let err = store.save_descriptor(descriptor("balance", 1)).unwrap_err();
        assert!(err.is_fenced(), "{err:?}");

        assert_eq!(rows(&url), before, "nothing is written");
        assert_eq!(store.config("vacuum").unwrap(), saved, "nor changed in memory");
        assert_eq!(store.descriptor("vacuum").unwrap().descriptor_version, 1);
        assert_eq!(store.job_types(), ["vacuum"]);
        // Opening under the old epoch is refused too (the migrations check it first).
        let err = ConfigStore::open_postgres(&target, 1, &dir.0, sealer()).unwrap_err();
        assert!(err.is_fenced(), "{err:?}");
    }

    #[test]
    fn the_data_dir_is_imported_once_into_an_empty_table_and_never_over_stored_job_types() {
        let (url, target) = leased_database("configs-import", 1);
        let dir = TempDir::new("pg-import");
        let files = ConfigStore::open(&dir.0, sealer()).unwrap();
        files.save_descriptor(descriptor("vacuum", 1)).unwrap();
        files.save_descriptor(descriptor("balance", 3)).unwrap();
        let from_files = save_secrets(&files, 30);
        drop(files);

        let store = ConfigStore::open_postgres(&target, 1, &dir.0, sealer()).unwrap();
        assert_eq!(store.job_types(), ["balance", "vacuum"]);
        assert_eq!(store.config("vacuum").unwrap(), from_files);
        assert_eq!(store.descriptor("balance").unwrap().descriptor_version, 3);
        let imported = rows(&url);
        assert_eq!(imported.len(), 2);
        assert!(imported.iter().all(|(_, _, config, _)| !contains(config.as_deref().unwrap(), "canary-")));
        // The leader saves on; the data dir changes behind it (another job type, a config).
        let saved = save_secrets(&store, 55);
        drop(store);
        let files = ConfigStore::open(&dir.0, sealer()).unwrap();
        files.save_descriptor(descriptor("ec", 1)).unwrap();
        save_secrets(&files, 99);
        drop(files);
        let stored = rows(&url);

        // The next term (a restart, or another admin with this data dir) imports nothing.
        take_over(&url, 2);
        let store = ConfigStore::open_postgres(&target, 2, &dir.0, sealer()).unwrap();
        assert_eq!(store.job_types(), ["balance", "vacuum"], "no second import");
        assert_eq!(store.config("vacuum").unwrap(), saved, "the stored config stands");
        assert_eq!(rows(&url), stored);

        // An import into a table that holds a job type stores nothing, whatever it brings.
        let table = JobTypeTable::open(&target, 2).unwrap();
        let row = JobTypeRow {
            job_type: "vacuum".into(),
            descriptor: Some(descriptor("vacuum", 9).encode_to_vec()),
            config: None,
        };
        let other = JobTypeRow { job_type: "ec".into(), ..row.clone() };
        assert_eq!(table.import(&[row.clone(), other.clone()]).unwrap(), 0);
        assert_eq!(rows(&url), stored);

        // On an empty table it is one fenced transaction: under a stale epoch, nothing.
        let (url, target) = leased_database("configs-import-fenced", 1);
        let table = JobTypeTable::open(&target, 1).unwrap();
        assert!(table.is_empty().unwrap());
        take_over(&url, 2);
        let err = table.import(&[row.clone(), other.clone()]).unwrap_err();
        assert!(err.is_fenced(), "{err}");
        assert!(rows(&url).is_empty());
        let table = JobTypeTable::open(&target, 2).unwrap();
        assert_eq!(table.import(&[row, other]).unwrap(), 2);
        assert_eq!(rows(&url).len(), 2);
    }

    #[test]
    fn a_row_with_secrets_in_clear_is_sealed_when_the_store_opens_it() {
        let (url, target) = leased_database("configs-clear-row", 1);
        let dir = TempDir::new("pg-clear");
        let clear = pb::PersistedJobTypeConfig {
            job_type: "vacuum".into(),
            descriptor_version: 1,
            admin_config_values: [("api_key".to_string(), s("old-clear-secret")), ("limit".to_string(), i(7))].into(),
            ..Default::default()
        };
        let table = JobTypeTable::open(&target, 1).unwrap();
        table.save("vacuum", Some(&descriptor("vacuum", 1).encode_to_vec()), Some(&clear.encode_to_vec())).unwrap();
        drop(table);

        let store = ConfigStore::open_postgres(&target, 1, &dir.0, sealer()).unwrap();
        assert_eq!(*store.config("vacuum").unwrap(), clear);
        let stored = rows(&url);
        let config = stored[0].2.as_deref().unwrap();
        assert!(!contains(config, "old-clear-secret") && contains(config, "plughost-enc:v1:"));
        assert!(stored[0].1.is_some(), "the descriptor is kept");
        let again = ConfigStore::open_postgres(&target, 1, &dir.0, sealer()).unwrap();
        assert_eq!(*again.config("vacuum").unwrap(), clear);
        assert_eq!(rows(&url), stored, "sealed once");
    }

    /// Callers save from `spawn_blocking` threads, which are inside the admin's runtime.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn saves_work_from_blocking_threads_of_a_runtime() {
        let (url, target) = leased_database("configs-runtime", 1);
        let dir = TempDir::new("pg-runtime");
        let store = Arc::new(
            tokio::task::spawn_blocking(move || ConfigStore::open_postgres(&target, 1, &dir.0, sealer()).unwrap())
                .await
                .unwrap(),
        );
        let saves: Vec<_> = ["a", "b", "c", "d"]
            .into_iter()
            .map(|t| {
                let store = store.clone();
                tokio::task::spawn_blocking(move || store.save_descriptor(descriptor(t, 1)).map(|_| ()))
            })
            .collect();
        for save in saves {
            save.await.unwrap().unwrap();
        }
        assert_eq!(store.job_types(), ["a", "b", "c", "d"]);
        let url2 = url.clone();
        let names = tokio::task::spawn_blocking(move || rows(&url2)).await.unwrap();
        assert_eq!(names.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(), ["a", "b", "c", "d"]);
        drop(url);
    }
}
