//! Sensitive config values at rest: which fields of a saved config hold secrets, sealing
//! their values for the files and opening them at load, and the descriptor the admin
//! shows (where a field that holds a secret stays sensitive).
//!
//! **Encoding.** On disk, the value of a secret field is a `ConfigValue` whose
//! `string_value` is [`secret_box`] sealed text, `plughost-enc:v1:<base64>`; the
//! plaintext is the original `ConfigValue` in protobuf encoding (so a value of any kind
//! round-trips), and the associated data is the job type, the form (`admin` or `worker`)
//! and the field name, each length-prefixed, so a ciphertext moved to another field,
//! form or job type does not open. `config.pb` and `config.json` hold the same text.
//!
//! **Invariant:** a value that was saved as a secret stays one. A field holds a secret
//! when its descriptor marks it `sensitive`, or when it held one before and its value is
//! unchanged: a later descriptor that drops the flag does not reveal the saved value;
//! only a new value saved for the field (an operator re-entering it) ends its secrecy.
//! The sealed encoding itself records this, so it survives restarts.
//!
//! **Invariant:** only sealed values start with `plughost-enc:` on disk: a clear string
//! value with that prefix is refused on save, and a descriptor whose defaults have it is
//! refused, so a value that looks sealed and does not open is a wrong key or an altered
//! file, never an operator's text.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use prost::Message;
use proto::pb::{self, config_value::Kind};

use crate::config_value;
use crate::secret_box::{self, OpenError, SealError, SecretBox};
use crate::validator::FieldError;

/// One of a descriptor's two forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Admin,
    Worker,
}

impl Form {
    pub const BOTH: [Form; 2] = [Form::Admin, Form::Worker];

    /// `admin` or `worker`: the prefix of its field names in messages.
    pub fn name(self) -> &'static str {
        match self {
            Form::Admin => "admin",
            Form::Worker => "worker",
        }
    }

    fn values(self, config: &pb::PersistedJobTypeConfig) -> &HashMap<String, pb::ConfigValue> {
        match self {
            Form::Admin => &config.admin_config_values,
            Form::Worker => &config.worker_config_values,
        }
    }

    fn values_mut(self, config: &mut pb::PersistedJobTypeConfig) -> &mut HashMap<String, pb::ConfigValue> {
        match self {
            Form::Admin => &mut config.admin_config_values,
            Form::Worker => &mut config.worker_config_values,
        }
    }

    fn form(self, descriptor: &pb::JobTypeDescriptor) -> Option<&pb::ConfigForm> {
        match self {
            Form::Admin => descriptor.admin_config_form.as_ref(),
            Form::Worker => descriptor.worker_config_form.as_ref(),
        }
    }

    fn form_mut(self, descriptor: &mut pb::JobTypeDescriptor) -> Option<&mut pb::ConfigForm> {
        match self {
            Form::Admin => descriptor.admin_config_form.as_mut(),
            Form::Worker => descriptor.worker_config_form.as_mut(),
        }
    }
}

/// The fields of a config whose values are secrets (sealed on disk, redacted when shown).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretFields {
    admin: BTreeSet<String>,
    worker: BTreeSet<String>,
}

impl SecretFields {
    pub fn contains(&self, form: Form, field: &str) -> bool {
        self.of(form).contains(field)
    }

    pub fn is_empty(&self) -> bool {
        self.admin.is_empty() && self.worker.is_empty()
    }

    fn of(&self, form: Form) -> &BTreeSet<String> {
        match form {
            Form::Admin => &self.admin,
            Form::Worker => &self.worker,
        }
    }

    fn of_mut(&mut self, form: Form) -> &mut BTreeSet<String> {
        match form {
            Form::Admin => &mut self.admin,
            Form::Worker => &mut self.worker,
        }
    }
}

/// A sealed value that did not open, named without its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unopened {
    pub form: Form,
    pub field: String,
    pub error: OpenError,
}

/// The associated data of one field's value: the job type, form and field, each
/// length-prefixed (so no two different triples give the same bytes).
fn aad(job_type: &str, form: Form, field: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + job_type.len() + field.len());
    out.extend_from_slice(secret_box::SEALED_V1.as_bytes());
    for part in [job_type, form.name(), field] {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

/// The fields that hold secrets in `config` (see the module docs): every present value
/// whose field `descriptor` marks sensitive, or that was a secret in `previous` and is
/// unchanged from `saved`. `descriptor` is the one the worker sent (`None`: unknown, so
/// only previous secrets count).
pub fn secret_fields(
    descriptor: Option<&pb::JobTypeDescriptor>,
    config: &pb::PersistedJobTypeConfig,
    previous: &SecretFields,
    saved: Option<&pb::PersistedJobTypeConfig>,
) -> SecretFields {
    let mut secrets = SecretFields::default();
    for form in Form::BOTH {
        let sensitive = crate::validator::sensitive_fields(descriptor.and_then(|d| form.form(d)));
        let values = form.values(config);
        for (name, value) in values.iter().filter(|(_, v)| v.kind.is_some()) {
            let unchanged = saved.and_then(|s| form.values(s).get(name)) == Some(value);
            if sensitive.contains(name) || (previous.contains(form, name) && unchanged) {
                secrets.of_mut(form).insert(name.clone());
            }
        }
    }
    secrets
}

/// The config as the files hold it: the values of `secrets` sealed.
pub fn seal_config(
    sealer: &SecretBox,
    config: &pb::PersistedJobTypeConfig,
    secrets: &SecretFields,
) -> Result<pb::PersistedJobTypeConfig, SealError> {
    let mut sealed = config.clone();
    for form in Form::BOTH {
        for (name, value) in form.values_mut(&mut sealed) {
            if value.kind.is_some() && secrets.contains(form, name) {
                let text = sealer.seal(&value.encode_to_vec(), &aad(&config.job_type, form, name))?;
                *value = pb::ConfigValue { kind: Some(Kind::StringValue(text)) };
            }
        }
    }
    Ok(sealed)
}

/// The config as the files held it, its sealed values opened, and the fields that were
/// sealed. `config.job_type` must be set (it is part of the associated data).
pub fn open_config(
    sealer: &SecretBox,
    mut config: pb::PersistedJobTypeConfig,
) -> Result<(pb::PersistedJobTypeConfig, SecretFields), Unopened> {
    let job_type = config.job_type.clone();
    let mut secrets = SecretFields::default();
    for form in Form::BOTH {
        for (name, value) in form.values_mut(&mut config) {
            let Some(Kind::StringValue(text)) = &value.kind else {
                continue;
            };
            if !secret_box::is_sealed(text) {
                continue;
            }
            let unopened = |error| Unopened { form, field: name.clone(), error };
            let plain = sealer.open(text, &aad(&job_type, form, name)).map_err(unopened)?;
            *value = pb::ConfigValue::decode(plain.as_slice()).map_err(|_| unopened(OpenError::Malformed))?;
            secrets.of_mut(form).insert(name.clone());
        }
    }
    Ok((config, secrets))
}

/// The descriptor the admin shows and validates against: the worker's, with every field
/// that holds a secret marked sensitive (so it is redacted, rendered as a password and
/// kept when left out). The same `Arc` when nothing needs marking.
pub fn shown_descriptor(sent: &Arc<pb::JobTypeDescriptor>, secrets: &SecretFields) -> Arc<pb::JobTypeDescriptor> {
    let unmarked = |form: Form| {
        config_value::form_fields(form.form(sent)).any(|f| !f.sensitive && secrets.contains(form, &f.name))
    };
    if !Form::BOTH.into_iter().any(unmarked) {
        return Arc::clone(sent);
    }
    let mut shown = (**sent).clone();
    for form in Form::BOTH {
        let fields =
            form.form_mut(&mut shown).into_iter().flat_map(|f| f.sections.iter_mut()).flat_map(|s| s.fields.iter_mut());
        for field in fields {
            if secrets.contains(form, &field.name) {
                field.sensitive = true;
            }
        }
    }
    Arc::new(shown)
}

/// Clear values (not in `secrets`) that would read as sealed text: refused, since only
/// ciphertext may start with `plughost-enc:`.
pub fn reserved_values(config: &pb::PersistedJobTypeConfig, secrets: &SecretFields) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for form in Form::BOTH {
        let mut names: Vec<&String> = form
            .values(config)
            .iter()
            .filter(|(name, value)| !secrets.contains(form, name) && looks_sealed(value))
            .map(|(name, _)| name)
            .collect();
        names.sort();
        for name in names {
            errors.push(FieldError::new(
                format!("{}.{name}", form.name()),
                format!("must not start with {:?} (reserved for encrypted values)", secret_box::SEALED_MARK),
            ));
        }
    }
    errors
}

/// The first default of `descriptor` that would read as sealed text, as "form.field".
pub fn reserved_default(descriptor: &pb::JobTypeDescriptor) -> Option<String> {
    let admin = descriptor.admin_config_form.iter().flat_map(|f| &f.default_values).map(|kv| (Form::Admin, kv));
    let worker = descriptor
        .worker_config_form
        .iter()
        .flat_map(|f| &f.default_values)
        .chain(&descriptor.worker_default_values)
        .map(|kv| (Form::Worker, kv));
    admin
        .chain(worker)
        .find(|(_, (_, value))| looks_sealed(value))
        .map(|(form, (name, _))| format!("{}.{name}", form.name()))
}

fn looks_sealed(value: &pb::ConfigValue) -> bool {
    matches!(&value.kind, Some(Kind::StringValue(text)) if secret_box::is_sealed(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{
        cv::{i, s},
        sealer,
    };

    fn field(name: &str, sensitive: bool) -> pb::ConfigField {
        pb::ConfigField { name: name.into(), sensitive, ..Default::default() }
    }
    fn form(fields: Vec<pb::ConfigField>) -> Option<pb::ConfigForm> {
        Some(pb::ConfigForm {
            sections: vec![pb::ConfigSection { fields, ..Default::default() }],
            ..Default::default()
        })
    }
    /// Admin: `token` (sensitive unless `dropped`), `limit`. Worker: `password` (sensitive).
    fn descriptor(dropped: bool) -> pb::JobTypeDescriptor {
        pb::JobTypeDescriptor {
            job_type: "vacuum".into(),
            admin_config_form: form(vec![field("token", !dropped), field("limit", false)]),
            worker_config_form: form(vec![field("password", true)]),
            ..Default::default()
        }
    }
    fn config() -> pb::PersistedJobTypeConfig {
        pb::PersistedJobTypeConfig {
            job_type: "vacuum".into(),
            admin_config_values: [("token".to_string(), s("tok-1")), ("limit".to_string(), i(5))].into(),
            worker_config_values: [("password".to_string(), i(1234))].into(),
            ..Default::default()
        }
    }

    #[test]
    fn sealed_values_open_to_the_saved_config_and_name_their_fields() {
        let c = config();
        let secrets = secret_fields(Some(&descriptor(false)), &c, &SecretFields::default(), None);
        assert!(secrets.contains(Form::Admin, "token") && secrets.contains(Form::Worker, "password"));
        assert!(!secrets.contains(Form::Admin, "limit"));

        let sealed = seal_config(&sealer(), &c, &secrets).unwrap();
        let printed = format!("{sealed:?}");
        assert!(!printed.contains("tok-1"));
        assert_eq!(sealed.admin_config_values["limit"], i(5), "clear values stay clear");
        let Some(Kind::StringValue(text)) = &sealed.worker_config_values["password"].kind else {
            panic!("an int secret is sealed as text");
        };
        assert!(text.starts_with(secret_box::SEALED_V1));

        let (opened, found) = open_config(&sealer(), sealed).unwrap();
        assert_eq!(opened, c);
        assert_eq!(found, secrets);
    }

    #[test]
    fn a_sealed_value_moved_to_another_field_or_job_type_does_not_open() {
        let c = config();
        let secrets = secret_fields(Some(&descriptor(false)), &c, &SecretFields::default(), None);
        let sealed = seal_config(&sealer(), &c, &secrets).unwrap();

        let mut moved = sealed.clone();
        let token = moved.admin_config_values["token"].clone();
        moved.worker_config_values.insert("password".into(), token);
        let err = open_config(&sealer(), moved).unwrap_err();
        assert_eq!((err.form, err.field.as_str(), err.error), (Form::Worker, "password", OpenError::Unauthentic));

        let mut renamed = sealed;
        renamed.job_type = "other".into();
        assert!(open_config(&sealer(), renamed).is_err());
    }

    #[test]
    fn a_dropped_sensitive_flag_keeps_an_unchanged_secret_until_it_is_re_entered() {
        let saved = config();
        let before = secret_fields(Some(&descriptor(false)), &saved, &SecretFields::default(), None);
        // The worker drops the flag: the value is unchanged, so it stays a secret.
        let after = secret_fields(Some(&descriptor(true)), &saved, &before, Some(&saved));
        assert!(after.contains(Form::Admin, "token"));
        let shown = shown_descriptor(&Arc::new(descriptor(true)), &after);
        assert!(shown.admin_config_form.as_ref().unwrap().sections[0].fields[0].sensitive);
        assert!(!shown.admin_config_form.as_ref().unwrap().sections[0].fields[1].sensitive);

        // A new value is re-entered: no longer a secret.
        let mut next = saved.clone();
        next.admin_config_values.insert("token".into(), s("tok-2"));
        let re_entered = secret_fields(Some(&descriptor(true)), &next, &after, Some(&saved));
        assert!(!re_entered.contains(Form::Admin, "token"));
        assert!(re_entered.contains(Form::Worker, "password"));
        let plain = Arc::new(descriptor(true));
        assert!(Arc::ptr_eq(&shown_descriptor(&plain, &re_entered), &plain), "nothing to mark");
    }

    #[test]
    fn clear_values_that_look_sealed_are_reserved() {
        let mut c = config();
        c.admin_config_values.insert("limit".into(), s("plughost-enc:v1:AAAA"));
        let none = SecretFields::default();
        let errors = reserved_values(&c, &none);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "admin.limit");
        let mut d = descriptor(false);
        assert_eq!(reserved_default(&d), None);
        d.worker_default_values.insert("password".into(), s("plughost-enc:v2:x"));
        assert_eq!(reserved_default(&d).as_deref(), Some("worker.password"));
    }
}
