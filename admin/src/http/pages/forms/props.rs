//! Property tests of the form parser: any posted pairs for any descriptor parse without a
//! panic into values of each field's type (so the validator never rejects a parsed value
//! for its type), errors only for the form's own editable fields, none that echoes what
//! was posted; and on a form without constraints, every value that parses is accepted by
//! the validator.

use std::collections::HashMap;

use proptest::prelude::*;
use proto::pb;

use super::{Posted, Which, parse_form};
use crate::{
    config_value::{distinct_fields, keep_unchanged_config},
    proptest_support::{Constraints, SECRET_MARK, config, descriptor, posted, value, values_of},
    validator::{validate_config, validate_form},
};

fn which(worker: bool) -> Which {
    if worker { Which::Worker } else { Which::Admin }
}

/// The form with every rule taken out: only the fields and their types remain.
fn types_only(form: &pb::ConfigForm) -> pb::ConfigForm {
    let mut form = form.clone();
    form.default_values.clear();
    for f in form.sections.iter_mut().flat_map(|s| s.fields.iter_mut()) {
        *f = pb::ConfigField { name: f.name.clone(), field_type: f.field_type, widget: f.widget, ..Default::default() };
    }
    form
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn any_posted_pairs_parse_into_values_of_each_fields_type(
        d in descriptor(Constraints::Any),
        worker in any::<bool>(),
        saved in values_of(value()),
        pairs in posted(),
    ) {
        let which = which(worker);
        let (values, errors) = parse_form(which, &d, &saved, Posted(&pairs));
        let Some(form) = which.form(&d) else {
            prop_assert!(values.is_empty() && errors.is_empty());
            return Ok(());
        };
        let fields = distinct_fields(Some(form));
        let editable = |name: &str| fields.iter().any(|f| f.name == name && !f.read_only);
        for name in values.keys() {
            prop_assert!(editable(name), "a value for {} which is not an editable field", name);
        }
        for e in &errors {
            let name = e.field.strip_prefix(&format!("{}.", which.prefix()));
            prop_assert!(name.is_some_and(editable), "an error for {} which is not an editable field", e.field);
        }
        let typed = validate_form(&types_only(form), &values, &HashMap::new());
        prop_assert!(typed.is_ok(), "parsed values of the wrong type: {:?} from {:?}", typed, pairs);
    }

    #[test]
    fn no_parse_error_echoes_what_was_posted(
        d in descriptor(Constraints::Any),
        saved in values_of(value()),
        pairs in posted(),
    ) {
        let marked: Vec<(String, String)> =
            pairs.into_iter().map(|(name, text)| (name, format!("{SECRET_MARK}{text}{SECRET_MARK}"))).collect();
        let (_, errors) = parse_form(Which::Admin, &d, &saved, Posted(&marked));
        for e in &errors {
            prop_assert!(!e.message.contains(SECRET_MARK), "{} echoes the input", e);
        }
    }

    #[test]
    fn on_a_form_without_constraints_every_parsed_value_is_accepted_by_the_validator(
        d in descriptor(Constraints::None),
        worker in any::<bool>(),
        pairs in posted(),
    ) {
        let which = which(worker);
        // A field whose input does not parse gets an error and no value; the others'
        // values must pass.
        let (values, _) = parse_form(which, &d, &HashMap::new(), Posted(&pairs));
        let saved = pb::PersistedJobTypeConfig { job_type: "t".into(), ..Default::default() };
        let mut candidate = pb::PersistedJobTypeConfig { job_type: "t".into(), ..Default::default() };
        match which {
            Which::Admin => candidate.admin_config_values = values,
            Which::Worker => candidate.worker_config_values = values,
        }
        keep_unchanged_config(&d, Some(&saved), &mut candidate);
        let verdict = validate_config(&d, &candidate, Some(&saved));
        prop_assert!(verdict.is_ok(), "{:?} for {:?} posted as {:?}", verdict, candidate, pairs);
    }
}
