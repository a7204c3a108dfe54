//! A strict reader of the Prometheus text exposition format (0.0.4), for tests: every
//! sample line is `name{labels} value` with well-formed names and escaped label values,
//! every sample belongs to a family whose `# TYPE` came before it, `# HELP` and `# TYPE`
//! appear once per family, and a histogram's buckets are cumulative with `+Inf` equal to
//! its count. A violation panics with the line.

use std::collections::BTreeMap;

/// A family's `# TYPE` and `# HELP`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Family {
    pub kind: String,
    pub help: String,
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Debug, Default)]
pub struct Exposition {
    pub families: BTreeMap<String, Family>,
    pub samples: Vec<Sample>,
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// `{a="x",b="y"}` (after the name) into labels, and the rest of the line.
fn parse_labels<'a>(line: &str, mut rest: &'a str) -> (BTreeMap<String, String>, &'a str) {
    let mut labels = BTreeMap::new();
    let Some(inner) = rest.strip_prefix('{') else { return (labels, rest) };
    rest = inner;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return (labels, after);
        }
        let (name, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("a label without =\" in {line:?}"));
        assert!(is_label_name(name), "bad label name {name:?} in {line:?}");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => panic!("a bad escape {other:?} in {line:?}"),
                },
                Some((i, '"')) => break i,
                Some((_, '\n')) => panic!("a raw line feed in a label value in {line:?}"),
                Some((_, c)) => value.push(c),
                None => panic!("an unterminated label value in {line:?}"),
            }
        };
        assert!(labels.insert(name.to_string(), value).is_none(), "label {name} twice in {line:?}");
        rest = &after[end + 1..];
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else {
            assert!(rest.starts_with('}'), "labels not closed in {line:?}");
        }
    }
}

/// The family a sample name belongs to: itself, or a histogram's `_bucket`, `_sum` or
/// `_count`.
fn family_of<'a>(families: &BTreeMap<String, Family>, name: &'a str) -> Option<&'a str> {
    if families.contains_key(name) {
        return Some(name);
    }
    ["_bucket", "_sum", "_count"]
        .iter()
        .filter_map(|suffix| name.strip_suffix(suffix))
        .find(|base| families.get(*base).is_some_and(|f| f.kind == "histogram"))
}

/// Parses `text`, panicking at the first line that breaks the format.
pub fn parse(text: &str) -> Exposition {
    let mut e = Exposition::default();
    let mut sampled: Vec<String> = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            assert!(is_metric_name(name), "bad name in {line:?}");
            let f = e.families.entry(name.to_string()).or_default();
            assert!(f.help.is_empty(), "a second HELP for {name}");
            f.help = help.to_string();
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("TYPE without a type: {line:?}"));
            assert!(is_metric_name(name), "bad name in {line:?}");
            assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind), "bad type in {line:?}");
            assert!(!sampled.iter().any(|s| s == name), "TYPE of {name} after its samples");
            let f = e.families.entry(name.to_string()).or_default();
            assert!(f.kind.is_empty(), "a second TYPE for {name}");
            f.kind = kind.to_string();
        } else if line.starts_with('#') {
            continue;
        } else {
            let end = line.find(['{', ' ']).unwrap_or_else(|| panic!("a sample without a value: {line:?}"));
            let name = &line[..end];
            assert!(is_metric_name(name), "bad metric name in {line:?}");
            let (labels, rest) = parse_labels(line, &line[end..]);
            let value = rest.strip_prefix(' ').unwrap_or_else(|| panic!("no space before the value: {line:?}"));
            let value = parse_value(value.trim_end()).unwrap_or_else(|| panic!("a bad value in {line:?}"));
            let family =
                family_of(&e.families, name).unwrap_or_else(|| panic!("a sample of no declared family: {line:?}"));
            assert!(!e.families[family].kind.is_empty(), "a sample before its TYPE: {line:?}");
            if name.ends_with("_bucket") && family != name {
                assert!(labels.contains_key("le"), "a bucket without le: {line:?}");
            }
            sampled.push(family.to_string());
            e.samples.push(Sample { name: name.to_string(), labels, value });
        }
    }
    for (name, f) in &e.families {
        assert!(!f.kind.is_empty(), "{name} has HELP but no TYPE");
    }
    e.check_histograms();
    e
}

impl Exposition {
    /// The value of the one sample with this name and exactly these labels.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.samples.iter().find(|s| s.name == name && s.labels == want).map(|s| s.value)
    }

    /// Samples of `name` whose labels include these.
    pub fn matching(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v)))
            .collect()
    }

    fn check_histograms(&self) {
        for (name, f) in self.families.iter().filter(|(_, f)| f.kind == "histogram") {
            let bucket = format!("{name}_bucket");
            let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
            for s in self.samples.iter().filter(|s| s.name == bucket) {
                let mut key = s.labels.clone();
                let le = parse_value(&key.remove("le").unwrap()).expect("le is a number");
                series.entry(key).or_default().push((le, s.value));
            }
            for (labels, buckets) in series {
                assert!(
                    buckets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
                    "{name}{labels:?}: {buckets:?}"
                );
                let inf = buckets.last().filter(|b| b.0.is_infinite()).unwrap_or_else(|| panic!("{name}: no +Inf"));
                let pairs: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let count = self.value(&format!("{name}_count"), &pairs);
                assert_eq!(count, Some(inf.1), "{name}{labels:?}: +Inf is the count");
                assert!(self.value(&format!("{name}_sum"), &pairs).is_some(), "{name}{labels:?} has no sum");
            }
            let _ = f;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_well_formed_exposition_parses_with_escapes() {
        let text = "# HELP c a counter\n# TYPE c counter\nc{a=\"x\\\"y\\\\z\\n\",b=\"\"} 3\n\
            # TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 1.5\nh_count 2\n";
        let e = parse(text);
        assert_eq!(e.value("c", &[("a", "x\"y\\z\n"), ("b", "")]), Some(3.0));
        assert_eq!(e.value("h_count", &[]), Some(2.0));
    }

    #[test]
    #[should_panic(expected = "no declared family")]
    fn a_sample_without_a_type_is_refused() {
        parse("c 1\n");
    }

    #[test]
    #[should_panic(expected = "+Inf is the count")]
    fn a_histogram_whose_count_is_not_its_inf_bucket_is_refused() {
        parse("# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n");
    }
}
