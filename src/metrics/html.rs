//! The status page as HTML: plain tables, no script, refreshed by the browser every 10 s.
//! Every value is escaped (runner names and zones come from the configuration, VM names from
//! the cloud).

use super::status::StatusReport;
use std::fmt::Write;

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `1h02m03s`-style age.
fn age(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m:02}m{s:02}s")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

fn table(out: &mut String, id: &str, title: &str, headers: &[&str], rows: &[Vec<String>]) {
    let _ = write!(out, "<h2>{}</h2>", escape(title));
    if rows.is_empty() {
        let _ = write!(out, "<p id=\"{id}-empty\">none</p>");
        return;
    }
    let _ = write!(out, "<table id=\"{id}\"><thead><tr>");
    for h in headers {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{}</td>", escape(cell));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
}

/// Renders the page.
pub fn render(r: &StatusReport) -> String {
    let mut out = String::from(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"10\"><title>Flotilla status</title>\
         <style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}\
         td,th{border:1px solid #999;padding:.2em .6em;text-align:left}th{background:#eee}</style>\
         </head><body><h1>Flotilla status</h1>",
    );
    let _ = write!(
        out,
        "<p>version <span id=\"version\">{}</span> ({}) · system id {} · state <b id=\"process-state\">{}</b> · \
         concurrent {} · jobs running <span id=\"jobs-running\">{}</span> · VMs <span id=\"vm-count\">{}</span></p>",
        escape(&r.version),
        escape(&r.revision),
        escape(&r.system_id),
        escape(&r.process_state),
        r.concurrent,
        r.jobs.len(),
        r.vms.len(),
    );
    let runners: Vec<Vec<String>> = r
        .runners
        .iter()
        .map(|x| {
            vec![
                x.name.clone(),
                x.runner.clone(),
                x.url.clone(),
                x.executor.clone(),
                if x.limit == 0 {
                    "none".into()
                } else {
                    x.limit.to_string()
                },
                x.running_jobs.to_string(),
            ]
        })
        .collect();
    table(
        &mut out,
        "runners",
        "Runners",
        &["name", "runner", "url", "executor", "limit", "jobs running"],
        &runners,
    );
    let vms: Vec<Vec<String>> = r
        .vms
        .iter()
        .map(|v| {
            vec![
                v.name.clone(),
                v.runner.clone(),
                v.zone.clone(),
                v.state.clone(),
                age(v.age_seconds),
                v.jobs_run.to_string(),
            ]
        })
        .collect();
    table(
        &mut out,
        "vms",
        "VMs",
        &["name", "runner", "zone", "state", "age", "jobs run"],
        &vms,
    );
    let jobs: Vec<Vec<String>> = r
        .jobs
        .iter()
        .map(|j| {
            vec![
                j.id.to_string(),
                j.runner_name.clone(),
                j.runner.clone(),
                age(j.duration_seconds),
            ]
        })
        .collect();
    table(
        &mut out,
        "jobs",
        "Running jobs",
        &["job", "runner name", "runner", "duration"],
        &jobs,
    );
    out.push_str("<p><a href=\"status.json\">status.json</a> · <a href=\"metrics\">metrics</a></p></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::status::{JobStatus, RunnerStatus, VmStatus};

    #[test]
    fn escapes_everything_it_prints() {
        assert_eq!(
            escape("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
        let report = StatusReport {
            version: "1".into(),
            revision: "abc".into(),
            system_id: "s_1".into(),
            process_state: "running".into(),
            concurrent: 2,
            runners: vec![RunnerStatus {
                name: "<script>alert(1)</script>".into(),
                runner: "abcdefghi".into(),
                url: "https://g/".into(),
                executor: "docker".into(),
                limit: 0,
                running_jobs: 1,
            }],
            vms: vec![VmStatus {
                runner: "abcdefghi".into(),
                name: "vm-1".into(),
                zone: "us-central1-a".into(),
                state: "used".into(),
                age_seconds: 3725,
                jobs_run: 1,
            }],
            jobs: vec![JobStatus {
                id: 7,
                runner: "abcdefghi".into(),
                runner_name: "r".into(),
                duration_seconds: 61,
            }],
        };
        let html = render(&report);
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("<td>1h02m05s</td>"));
        assert!(html.contains("<td>1m01s</td>"));
    }
}
