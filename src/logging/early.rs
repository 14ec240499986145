//! What the process prints outside the subscriber, in the shape the logs will have: errors
//! before logging is set up (a bad command line, a configuration that cannot be used) and
//! panics. With `json` chosen (`--log-format`, `LOG_FORMAT`, or `log_format` in the
//! configuration file) each is one logrus JSON line; otherwise plain text as before.

use super::logrus::{line, Level};
use crate::config::LogFormat;
use serde_json::{Map, Value};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Prints `msg` to stderr as the logs will be printed: a JSON line at `level` with `fields`,
/// or the plain text `msg`.
pub fn print_before_logging(format: LogFormat, level: Level, msg: &str, fields: &[(&str, &str)]) {
    match format {
        LogFormat::Json => {
            let fields: Map<String, Value> = fields
                .iter()
                .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
                .collect();
            eprintln!("{}", line(level, msg.trim_end(), fields));
        }
        LogFormat::Text => eprintln!("{}", msg.trim_end()),
    }
}

/// The log format before the command line is parsed or the configuration loaded: the
/// `--log-format` flag among `args` (or `LOG_FORMAT`), else `log_format` of the configuration
/// file the command would read (`-c`/`--config`, `CONFIG_FILE`, `FLOTILLA_CONFIG`,
/// `default_config`), else text.
pub fn format_before_logging(
    args: &[OsString],
    env: impl Fn(&str) -> Option<String>,
    default_config: &Path,
) -> LogFormat {
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let flag = |names: &[&str]| {
        args.iter().enumerate().find_map(|(i, arg)| {
            names.iter().find_map(|name| {
                if arg == name {
                    args.get(i + 1).cloned()
                } else {
                    arg.strip_prefix(&format!("{name}=")).map(str::to_string)
                }
            })
        })
    };
    if let Some(format) = flag(&["--log-format"]).or_else(|| env("LOG_FORMAT")) {
        return super::parse_format(&format).unwrap_or(LogFormat::Text);
    }
    let config = flag(&["-c", "--config"])
        .or_else(|| env("CONFIG_FILE"))
        .or_else(|| env("FLOTILLA_CONFIG"))
        .map_or_else(|| default_config.to_path_buf(), PathBuf::from);
    std::fs::read_to_string(config)
        .ok()
        .and_then(|text| file_format(&text))
        .unwrap_or(LogFormat::Text)
}

/// `log_format` among the top-level keys of a configuration text, read line by line so a file
/// that does not parse still gives it.
fn file_format(text: &str) -> Option<LogFormat> {
    text.lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with('['))
        .find_map(|l| {
            let (key, value) = l.split_once('=')?;
            let value = value.split('#').next()?.trim().trim_matches(['"', '\'']);
            (key.trim() == "log_format").then(|| super::parse_format(value))?
        })
}

/// Prints panics as a JSON line (`level: panic`, `msg`, `location`) while the logs are JSON;
/// the standard hook's text otherwise.
pub fn install_panic_hook() {
    let standard = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !super::json_now() {
            return standard(info);
        }
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_string());
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current().name().unwrap_or("").to_string();
        print_before_logging(
            LogFormat::Json,
            Level::Panic,
            &msg,
            &[("location", &location), ("thread", &thread)],
        );
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_comes_from_the_flag_the_environment_or_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(
            &file,
            "concurrent = 1\nlog_format = \"json\" # for the pipeline\n[[runners]]\nlog_format = 3\n",
        )
        .unwrap();
        let args = |list: &[&str]| -> Vec<OsString> { list.iter().map(OsString::from).collect() };
        let none = |_: &str| None;
        let missing = Path::new("/nonexistent/config.toml");
        assert_eq!(
            format_before_logging(&args(&["flotilla", "--log-format", "json"]), none, missing),
            LogFormat::Json
        );
        assert_eq!(
            format_before_logging(&args(&["flotilla", "--log-format=text"]), none, &file),
            LogFormat::Text
        );
        let path = file.display().to_string();
        assert_eq!(
            format_before_logging(&args(&["flotilla", "run", "-c", &path]), none, missing),
            LogFormat::Json
        );
        let env = |k: &str| (k == "CONFIG_FILE").then(|| path.clone());
        assert_eq!(
            format_before_logging(&args(&["flotilla", "run"]), env, missing),
            LogFormat::Json
        );
        let env = |k: &str| (k == "LOG_FORMAT").then(|| "json".to_string());
        assert_eq!(
            format_before_logging(&args(&["flotilla"]), env, missing),
            LogFormat::Json
        );
        assert_eq!(
            format_before_logging(&args(&["flotilla", "run"]), none, missing),
            LogFormat::Text
        );
    }
}
