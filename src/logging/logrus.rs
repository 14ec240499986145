//! GitLab Runner's JSON log line (logrus's `JSONFormatter` with `TimestampFormat:
//! time.RFC3339Nano`): one object per line with `level` (lowercase, `warning` not `warn`),
//! `msg` and `time` (RFC 3339, local time), and every field flat beside them, the enclosing
//! spans' fields included; keys sorted as Go's `encoding/json` writes a map. A field named
//! `level`, `msg` or `time` is renamed `fields.level` (…), as logrus does.

use serde_json::{Map, Value};
use std::fmt;
use tracing::field::{Field, Visit};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// A logrus level name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `trace`.
    Trace,
    /// `debug`.
    Debug,
    /// `info`.
    Info,
    /// `warning`.
    Warning,
    /// `error`.
    Error,
    /// `fatal`: the process stops (GitLab Runner's `logrus.Fatal` on a command's error).
    Fatal,
    /// `panic`: a panic, printed by the panic hook.
    Panic,
}

impl Level {
    /// The name logrus writes.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
            Level::Fatal => "fatal",
            Level::Panic => "panic",
        }
    }

    fn of(level: &tracing::Level) -> Level {
        match *level {
            tracing::Level::TRACE => Level::Trace,
            tracing::Level::DEBUG => Level::Debug,
            tracing::Level::INFO => Level::Info,
            tracing::Level::WARN => Level::Warning,
            tracing::Level::ERROR => Level::Error,
        }
    }
}

/// One JSON line (without its newline) for `level`, `msg` and `fields`, time now.
pub(super) fn line(level: Level, msg: &str, mut fields: Map<String, Value>) -> String {
    for key in ["level", "msg", "time"] {
        if let Some(value) = fields.remove(key) {
            fields.insert(format!("fields.{key}"), value);
        }
    }
    fields.insert("level".into(), level.as_str().into());
    fields.insert("msg".into(), msg.into());
    fields.insert(
        "time".into(),
        chrono::Local::now()
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            .into(),
    );
    // serde_json's map is ordered by key here (no `preserve_order`), as Go's json.Marshal.
    Value::Object(fields).to_string()
}

/// The `tracing-subscriber` event format writing [`line`]s. Span fields must be recorded with
/// `JsonFields` (the layer's `fmt_fields`), so they can be read back as a JSON object.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogrusJson;

impl<S, N> FormatEvent<S, N> for LogrusJson
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let mut fields = Map::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let Some(recorded) = extensions.get::<FormattedFields<N>>() else {
                    continue;
                };
                if let Ok(Value::Object(span_fields)) =
                    serde_json::from_str::<Value>(&recorded.fields)
                {
                    fields.extend(span_fields);
                }
            }
        }
        let mut visitor = Fields {
            fields,
            msg: String::new(),
        };
        event.record(&mut visitor);
        let level = Level::of(event.metadata().level());
        writeln!(writer, "{}", line(level, &visitor.msg, visitor.fields))
    }
}

/// Collects an event's fields as JSON values; `message` becomes `msg`.
struct Fields {
    fields: Map<String, Value>,
    msg: String,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.msg = match value {
                Value::String(s) => s,
                other => other.to_string(),
            };
        } else {
            self.fields.insert(field.name().to_string(), value);
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(crate::error_chain::chain(value)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn events_are_logrus_lines_with_flat_fields() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || writer.clone())
                .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                .event_format(LogrusJson),
        );
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("job", job = 42);
            let _entered = span.enter();
            tracing::warn!(runner = "abc", count = 3, level = "x", "job request failed");
            tracing::debug!("a debug line");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect(l))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        let first = &lines[0];
        assert_eq!(first["level"], "warning");
        assert_eq!(first["msg"], "job request failed");
        assert_eq!(first["runner"], "abc");
        assert_eq!(first["count"], 3);
        assert_eq!(first["job"], 42);
        assert_eq!(first["fields.level"], "x");
        let time = first["time"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(time).is_ok(), "{time}");
        assert!(first.get("fields").is_none() && first.get("span").is_none());
        assert_eq!(lines[1]["level"], "debug");
        let keys: Vec<&String> = first.as_object().unwrap().keys().collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "keys in Go's order");
    }
}
