//! Property tests of the validator: any values against any descriptor (broken ones
//! included) are judged without a panic, the same way every time, and no error message
//! echoes a submitted or saved value (it may be a secret).

use std::collections::HashMap;

use proptest::prelude::*;
use proto::pb::{self, config_value::Kind};

use super::{FieldError, redact, sensitive_fields, validate_config, validate_form};
use crate::proptest_support::{
    Constraints, SECRET_MARK, SECRET_NUMBERS, config, descriptor, form, secret_value, secret_values_for, values_of,
};

/// The whole numbers of a value, for the echo check.
fn numbers(kind: &Kind, out: &mut Vec<i64>) {
    match kind {
        Kind::Int64Value(i) => out.push(*i),
        Kind::Int64List(l) => out.extend(&l.values),
        Kind::ListValue(l) => l.values.iter().filter_map(|v| v.kind.as_ref()).for_each(|k| numbers(k, out)),
        Kind::MapValue(m) => m.fields.values().filter_map(|v| v.kind.as_ref()).for_each(|k| numbers(k, out)),
        _ => {}
    }
}

fn echoes(errors: &[FieldError], values: &[&HashMap<String, pb::ConfigValue>]) -> Option<String> {
    let mut secret_numbers = Vec::new();
    for v in values.iter().flat_map(|m| m.values()).filter_map(|v| v.kind.as_ref()) {
        numbers(v, &mut secret_numbers);
    }
    secret_numbers.retain(|n| SECRET_NUMBERS.contains(n));
    errors
        .iter()
        .find(|e| e.message.contains(SECRET_MARK) || secret_numbers.iter().any(|n| e.message.contains(&n.to_string())))
        .map(|e| e.to_string())
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn any_config_against_any_descriptor_is_judged_without_echoing_a_value(
        (d, admin, worker, saved_admin, saved_worker) in descriptor(Constraints::Any).prop_flat_map(|d| {
            let admin = secret_values_for(d.admin_config_form.as_ref());
            let worker = secret_values_for(d.worker_config_form.as_ref());
            (Just(d), admin.clone(), worker.clone(), admin, worker)
        }),
    ) {
        let config = pb::PersistedJobTypeConfig {
            job_type: "t".into(),
            admin_config_values: admin.clone(),
            worker_config_values: worker.clone(),
            ..Default::default()
        };
        let saved = pb::PersistedJobTypeConfig {
            job_type: "t".into(),
            admin_config_values: saved_admin.clone(),
            worker_config_values: saved_worker.clone(),
            ..Default::default()
        };
        let verdict = validate_config(&d, &config, Some(&saved));
        prop_assert_eq!(&verdict, &validate_config(&d, &config, Some(&saved)), "the same verdict every time");
        if let Err(errors) = &verdict {
            prop_assert!(!errors.is_empty());
            let echo = echoes(errors, &[&admin, &worker, &saved_admin, &saved_worker]);
            prop_assert!(echo.is_none(), "a message echoes a value: {:?}", echo);
        }
        let _ = validate_config(&d, &config, None);
        let redacted = redact(&d, &config);
        let sensitive = sensitive_fields(d.admin_config_form.as_ref());
        prop_assert!(redacted.admin_config_values.keys().all(|name| !sensitive.contains(name)));
    }

    #[test]
    fn any_values_against_any_form_are_judged_without_echoing_a_value(
        (form, values, current) in form(Constraints::Any).prop_flat_map(|form| {
            let values = secret_values_for(Some(&form));
            (Just(form), values.clone(), prop_oneof![values, values_of(secret_value()).boxed()])
        }),
    ) {
        if let Err(errors) = validate_form(&form, &values, &current) {
            let echo = echoes(&errors, &[&values, &current]);
            prop_assert!(echo.is_none(), "a message echoes a value: {:?}", echo);
        }
    }
}
