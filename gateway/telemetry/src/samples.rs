//! The exposition text read back as samples, for the status page and
//! `nusactl status`: the numbers they show are the ones Prometheus scrapes.

/// One sample of the exposition: a series' name, its labels and value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if the series has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads the samples of an exposition text (Prometheus text or
/// OpenMetrics): comments, `# EOF` and lines it cannot read are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(body) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(body)?;
        labels = parsed;
        rest = after;
    }
    // The value, then an optional timestamp or exemplar.
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// `k="v",k2="v2"}` → the pairs and what follows the `}`.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_string();
        s = s[eq + 1..].strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.push((key, value));
        s = &s[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_labels_values_and_escapes() {
        let text = "# HELP x y\n# TYPE nusa_requests counter\n\
            nusa_requests_total{model=\"a\",outcome=\"ok\",protocol=\"http1\"} 12\n\
            nusa_queue_depth{model=\"q \\\"x\\\"\"} 3\n\
            nusa_up 1 1700000000\n\
            nusa_le_bucket{le=\"+Inf\"} 7\n\
            garbage{ 1\n# EOF\n";
        let s = parse(text);
        assert_eq!(s.len(), 4, "{s:?}");
        assert_eq!(s[0].name, "nusa_requests_total");
        assert_eq!(s[0].label("outcome"), Some("ok"));
        assert_eq!(s[0].value, 12.0);
        assert_eq!(s[1].label("model"), Some("q \"x\""));
        assert_eq!(s[2].value, 1.0);
        assert_eq!(s[3].label("le"), Some("+Inf"));
    }

    #[test]
    fn the_registry_reads_back() {
        let m = crate::Metrics::new();
        m.request("tiny", "ok", "http2");
        m.request("tiny", "ok", "http2");
        let s = parse(&m.encode());
        let hit = s
            .iter()
            .find(|s| s.name == "nusa_requests_total" && s.label("model") == Some("tiny"))
            .expect("requests series");
        assert_eq!(hit.value, 2.0);
    }
}
