//! Builders that make a job type descriptor read like a declaration: `Descriptor`,
//! `Form`, `Section`, `Field` and `Runtime`. Field defaults are collected into their
//! form's `default_values`.
//!
//! ```
//! use worker_sdk::{descriptor::*, value};
//! use std::time::Duration;
//!
//! let d = Descriptor::new("sqlite_vacuum", "SQLite vacuum")
//!     .description("Reclaims free pages in SQLite files")
//!     .version(1)
//!     .admin_form(Form::new("admin", "Scope").section(
//!         Section::new("scan", "What to scan")
//!             .field(Field::string_list("paths", "Directories").required().min_items(1))
//!             .field(Field::double("min_free_ratio", "Free-page ratio").range(0.0, 1.0).default_value(0.3))
//!             .field(Field::duration("min_age", "Older than").default_value(Duration::from_secs(3600))),
//!     ))
//!     .runtime(Runtime::default().interval_minutes(30).retry_limit(2))
//!     .build();
//! assert_eq!(d.admin_config_form.unwrap().default_values["min_free_ratio"], value::double(0.3));
//! ```

use std::collections::HashMap;

use crate::{
    pb::{self, ConfigFieldType as Type, ConfigWidget as Widget, ValidationRuleType as Rule},
    value::IntoValue,
};

/// A job type descriptor under construction.
#[derive(Debug, Clone)]
pub struct Descriptor(pb::JobTypeDescriptor);

impl Descriptor {
    pub fn new(job_type: impl Into<String>, display_name: impl Into<String>) -> Self {
        Descriptor(pb::JobTypeDescriptor {
            job_type: job_type.into(),
            display_name: display_name.into(),
            descriptor_version: 1,
            admin_runtime_defaults: Some(Runtime::default().build()),
            ..Default::default()
        })
    }

    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.0.description = text.into();
        self
    }

    /// An icon name for the admin's pages.
    pub fn icon(mut self, icon: impl Into<String>) -> Self {
        self.0.icon = icon.into();
        self
    }

    /// Raise it when the schema changes; the admin then fetches it again.
    pub fn version(mut self, version: u32) -> Self {
        self.0.descriptor_version = version;
        self
    }

    /// The form the operator fills in for the job type (sent with every request).
    pub fn admin_form(mut self, form: Form) -> Self {
        self.0.admin_config_form = Some(form.build());
        self
    }

    /// The per-worker settings form; its defaults also become `worker_default_values`.
    pub fn worker_form(mut self, form: Form) -> Self {
        let form = form.build();
        self.0.worker_default_values.extend(form.default_values.clone());
        self.0.worker_config_form = Some(form);
        self
    }

    /// The runtime defaults (schedule, concurrency, retries, timeouts).
    pub fn runtime(mut self, runtime: Runtime) -> Self {
        self.0.admin_runtime_defaults = Some(runtime.build());
        self
    }

    /// A worker default value with no field in the worker form.
    pub fn worker_default(mut self, name: impl Into<String>, value: impl IntoValue) -> Self {
        self.0.worker_default_values.insert(name.into(), value.into_value());
        self
    }

    pub fn build(self) -> pb::JobTypeDescriptor {
        self.0
    }
}

impl From<Descriptor> for pb::JobTypeDescriptor {
    fn from(d: Descriptor) -> Self {
        d.build()
    }
}

/// A form: titled sections of fields.
#[derive(Debug, Clone)]
pub struct Form(pb::ConfigForm);

impl Form {
    pub fn new(form_id: impl Into<String>, title: impl Into<String>) -> Self {
        Form(pb::ConfigForm { form_id: form_id.into(), title: title.into(), ..Default::default() })
    }

    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.0.description = text.into();
        self
    }

    /// Adds a section; its fields' defaults join the form's `default_values`.
    pub fn section(mut self, section: Section) -> Self {
        self.0.default_values.extend(section.defaults);
        self.0.sections.push(section.section);
        self
    }

    /// A default for a value that has no field.
    pub fn default_value(mut self, name: impl Into<String>, value: impl IntoValue) -> Self {
        self.0.default_values.insert(name.into(), value.into_value());
        self
    }

    pub fn build(self) -> pb::ConfigForm {
        self.0
    }
}

/// A group of fields under a heading.
#[derive(Debug, Clone)]
pub struct Section {
    section: pb::ConfigSection,
    defaults: HashMap<String, pb::ConfigValue>,
}

impl Section {
    pub fn new(section_id: impl Into<String>, title: impl Into<String>) -> Self {
        Section {
            section: pb::ConfigSection { section_id: section_id.into(), title: title.into(), ..Default::default() },
            defaults: HashMap::new(),
        }
    }

    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.section.description = text.into();
        self
    }

    pub fn field(mut self, field: Field) -> Self {
        if let Some(default) = field.default {
            self.defaults.insert(field.field.name.clone(), default);
        }
        self.section.fields.push(field.field);
        self
    }

    pub fn build(self) -> pb::ConfigSection {
        self.section
    }
}

/// One form field. The constructor picks the type and a fitting widget; every
/// `ConfigFieldType` and `ConfigWidget` has one.
#[derive(Debug, Clone)]
pub struct Field {
    field: pb::ConfigField,
    default: Option<pb::ConfigValue>,
}

impl Field {
    /// A field of any type with any widget.
    pub fn new(name: impl Into<String>, label: impl Into<String>, field_type: Type, widget: Widget) -> Self {
        Field {
            field: pb::ConfigField {
                name: name.into(),
                label: label.into(),
                field_type: field_type as i32,
                widget: widget as i32,
                ..Default::default()
            },
            default: None,
        }
    }

    /// A checkbox (BOOL, TOGGLE).
    pub fn boolean(name: impl Into<String>, label: impl Into<String>) -> Self {
        Field::new(name, label, Type::Bool, Widget::Toggle)
    }

    /// A whole number (INT64, NUMBER).
    pub fn int(name: impl Into<String>, label: impl Into<String>) -> Self {
        Field::new(name, label, Type::Int64, Widget::Number)
    }

    /// A number (DOUBLE, NUMBER).
    pub fn double(name: impl Into<String>, label: impl Into<String>) -> Self {
        Field::new(name, label, Type::Double, Widget::Number)
    }

    /// One line of text (STRING, TEXT).
    pub fn string(name: impl Into<String>, label: impl Into<String>) -> Self {
        Field::new(name, label, Type::String, Widget::Text)
    }

    /// Several lines of text (STRING, TEXTAREA).
    pub fn text(name: impl Into<String>, label: impl Into<String>) -> Self {
        Field::new(name, label, Type::String, Widget::Textarea)
    }

    /// Binary data, entered as text (BYTES, TEXTAREA).
    pub fn bytes(name: impl Into<String>, label: impl Into<String>) -> Self {
        Field::new(name, label, Type::Bytes, Widget::Textarea)
    }

    /// A duration such as `90s` or `1h` (DURATION, DURATION).
    pub fn duration(name: impl Into<String>, label: impl Into<String>) -> Self {
        Field::new(name, label, Type::Duration, Widget::Duration)
    }

    /// One of fixed `(value, label)` options (ENUM, SELECT).
    pub fn select(name: impl Into<String>, label: impl Into<String>, options: &[(&str, &str)]) -> Self {
        Field::new(name, label, Type::Enum, Widget::Select).options(options)
    }

    /// Any number of fixed options (LIST, MULTI_SELECT).
    pub fn multi_select(name: impl Into<String>, label: impl Into<String>, options: &[(&str, &str)]) -> Self {
        Field::new(name, label, Type::List, Widget::MultiSelect).options(options)
    }

    /// A list of strings, one per line (LIST, TEXTAREA).
    pub fn string_list(name: impl Into<String>, label: impl Into<String>) -> Self {
        Field::new(name, label, Type::List, Widget::Textarea)
    }

    /// Named values, entered as JSON (OBJECT, TEXTAREA).
    pub fn object(name: impl Into<String>, label: impl Into<String>) -> Self {
        Field::new(name, label, Type::Object, Widget::Textarea)
    }

    /// Overrides the widget the constructor chose.
    pub fn widget(mut self, widget: Widget) -> Self {
        self.field.widget = widget as i32;
        self
    }

    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.field.description = text.into();
        self
    }

    /// A hint shown beside the field.
    pub fn help(mut self, text: impl Into<String>) -> Self {
        self.field.help_text = text.into();
        self
    }

    pub fn placeholder(mut self, text: impl Into<String>) -> Self {
        self.field.placeholder = text.into();
        self
    }

    pub fn required(mut self) -> Self {
        self.field.required = true;
        self
    }

    pub fn read_only(mut self) -> Self {
        self.field.read_only = true;
        self
    }

    /// A secret: shown as a password input, and never sent back out of the admin once
    /// saved.
    pub fn sensitive(mut self) -> Self {
        self.field.sensitive = true;
        self.field.widget = Widget::Password as i32;
        self
    }

    /// Inclusive bounds, e.g. `.range(0.0, 1.0)` or `.range(1, 64)`.
    pub fn range(self, min: impl IntoValue, max: impl IntoValue) -> Self {
        self.min(min).max(max)
    }

    pub fn min(mut self, min: impl IntoValue) -> Self {
        self.field.min_value = Some(min.into_value());
        self
    }

    pub fn max(mut self, max: impl IntoValue) -> Self {
        self.field.max_value = Some(max.into_value());
        self
    }

    /// Adds one option.
    pub fn option(mut self, value: impl Into<String>, label: impl Into<String>) -> Self {
        self.field.options.push(pb::ConfigOption { value: value.into(), label: label.into(), ..Default::default() });
        self
    }

    /// Adds `(value, label)` options.
    pub fn options(self, options: &[(&str, &str)]) -> Self {
        options.iter().fold(self, |f, (value, label)| f.option(*value, *label))
    }

    /// The value must match `pattern`; `message` tells the operator what is wrong.
    pub fn regex(self, pattern: impl Into<String>, message: impl Into<String>) -> Self {
        self.rule(Rule::Regex, pattern, message)
    }

    pub fn min_length(self, n: u32) -> Self {
        self.rule(Rule::MinLength, n.to_string(), format!("at least {n} characters"))
    }

    pub fn max_length(self, n: u32) -> Self {
        self.rule(Rule::MaxLength, n.to_string(), format!("at most {n} characters"))
    }

    pub fn min_items(self, n: u32) -> Self {
        self.rule(Rule::MinItems, n.to_string(), format!("at least {n} items"))
    }

    pub fn max_items(self, n: u32) -> Self {
        self.rule(Rule::MaxItems, n.to_string(), format!("at most {n} items"))
    }

    /// A rule the admin does not know how to check itself; the worker checks it.
    pub fn custom(self, expression: impl Into<String>, message: impl Into<String>) -> Self {
        self.rule(Rule::Custom, expression, message)
    }

    /// Any validation rule.
    pub fn rule(mut self, kind: Rule, expression: impl Into<String>, message: impl Into<String>) -> Self {
        self.field.validation_rules.push(pb::ValidationRule {
            r#type: kind as i32,
            expression: expression.into(),
            error_message: message.into(),
        });
        self
    }

    /// Shows (and validates) this field only while `field` equals `value`.
    pub fn visible_when(mut self, field: impl Into<String>, value: impl IntoValue) -> Self {
        self.field.visible_when_field = field.into();
        self.field.visible_when_equals = Some(value.into_value());
        self
    }

    /// The field's default; it goes into the form's `default_values`.
    pub fn default_value(mut self, value: impl IntoValue) -> Self {
        self.default = Some(value.into_value());
        self
    }

    pub fn build(self) -> pb::ConfigField {
        self.field
    }
}

/// Runtime defaults: schedule, concurrency, retries and timeouts. `default()` is a
/// sensible starting point: enabled, detect every 10 minutes, 3 retries.
#[derive(Debug, Clone)]
pub struct Runtime(pb::AdminRuntimeDefaults);

impl Default for Runtime {
    fn default() -> Self {
        Runtime(pb::AdminRuntimeDefaults {
            enabled: true,
            detection_interval_minutes: 10,
            detection_timeout_seconds: 60,
            max_jobs_per_detection: 100,
            global_execution_concurrency: 4,
            per_worker_execution_concurrency: 1,
            retry_limit: 3,
            retry_backoff_seconds: 30,
            job_type_max_runtime_seconds: 3600,
            execution_timeout_seconds: 600,
        })
    }
}

macro_rules! runtime_setters {
    ($($(#[$doc:meta])* $name:ident => $field:ident),* $(,)?) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, v: i32) -> Self {
                self.0.$field = v;
                self
            }
        )*
    };
}

impl Runtime {
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.0.enabled = enabled;
        self
    }

    runtime_setters! {
        /// How often detection runs.
        interval_minutes => detection_interval_minutes,
        detection_timeout_seconds => detection_timeout_seconds,
        max_jobs_per_detection => max_jobs_per_detection,
        /// Jobs of this type running at once across all workers.
        global_concurrency => global_execution_concurrency,
        /// Jobs of this type running at once on one worker.
        per_worker_concurrency => per_worker_execution_concurrency,
        /// Attempts after the first before a job is dead-lettered.
        retry_limit => retry_limit,
        retry_backoff_seconds => retry_backoff_seconds,
        max_runtime_seconds => job_type_max_runtime_seconds,
        /// Per attempt.
        execution_timeout_seconds => execution_timeout_seconds,
    }

    pub fn build(self) -> pb::AdminRuntimeDefaults {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value;

    #[test]
    fn a_declaration_builds_the_descriptor_with_defaults_collected() {
        let d =
            Descriptor::new("t", "T")
                .version(3)
                .admin_form(
                    Form::new("admin", "Scope").section(
                        Section::new("s", "S")
                            .field(Field::string("api_key", "API key").sensitive())
                            .field(Field::select("format", "Format", &[("zst", "Zstandard"), ("gz", "gzip")]))
                            .field(
                                Field::string("x", "X")
                                    .regex("^[a-z]+$", "lowercase only")
                                    .visible_when("mode", value::string("advanced"))
                                    .default_value("abc"),
                            ),
                    ),
                )
                .worker_form(Form::new("worker", "W").section(
                    Section::new("w", "W").field(Field::int("threads", "Threads").range(1, 64).default_value(4)),
                ))
                .build();
        assert_eq!(d.descriptor_version, 3);
        let admin = d.admin_config_form.unwrap();
        let fields = &admin.sections[0].fields;
        assert_eq!(fields[0].widget, Widget::Password as i32);
        assert!(fields[0].sensitive);
        assert_eq!(fields[1].options.len(), 2);
        assert_eq!(fields[1].field_type, Type::Enum as i32);
        assert_eq!(fields[2].validation_rules[0].r#type, Rule::Regex as i32);
        assert_eq!(fields[2].visible_when_field, "mode");
        assert_eq!(admin.default_values["x"], value::string("abc"));
        assert_eq!(d.worker_default_values["threads"], value::int(4));
        assert_eq!(d.worker_config_form.unwrap().sections[0].fields[0].min_value, Some(value::int(1)));
    }

    #[test]
    fn every_field_type_and_widget_has_a_constructor() {
        let fields = [
            Field::boolean("a", "A"),
            Field::int("b", "B"),
            Field::double("c", "C"),
            Field::string("d", "D"),
            Field::text("e", "E"),
            Field::bytes("f", "F"),
            Field::duration("g", "G"),
            Field::select("h", "H", &[]),
            Field::multi_select("i", "I", &[]),
            Field::string_list("j", "J"),
            Field::object("k", "K"),
            Field::string("l", "L").sensitive(),
        ]
        .map(Field::build);
        let types: std::collections::HashSet<_> = fields.iter().map(|f| f.field_type).collect();
        let widgets: std::collections::HashSet<_> = fields.iter().map(|f| f.widget).collect();
        assert_eq!(types.len(), 9, "every type but UNSPECIFIED");
        assert_eq!(widgets.len(), 8, "every widget but UNSPECIFIED");
    }
}
