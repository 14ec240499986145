//! Booleans as GitLab Runner's command line reads them: Go's `strconv.ParseBool` spellings
//! ([`parse_go_bool`]), and [`flag`], which makes a clap argument a boolean flag in the style of
//! GitLab Runner's CLI library (`--flag`, `--flag=true`, `--flag=0`, …). Shared by the
//! `register` family's flags and the artifacts helper's.

use clap::{Arg, ArgAction};

/// A value Go's `strconv.ParseBool` refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a boolean (true or false)")]
pub struct NotABool(pub String);

/// A boolean as Go's `strconv.ParseBool` reads it (how GitLab Runner reads flags and feature
/// flags).
pub fn parse_go_bool(value: &str) -> Result<bool, NotABool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        other => Err(NotABool(other.to_string())),
    }
}

/// Makes `arg` a Go-style boolean flag: `--flag` alone means true, a value needs `=`
/// (`--flag=false`, so a following word is never taken as its value), read by
/// [`parse_go_bool`]. A `bool` field (not `Option<bool>`) also needs `default_value = "false"`.
pub fn flag(arg: Arg) -> Arg {
    arg.num_args(0..=1)
        .require_equals(true)
        .default_missing_value("true")
        .action(ArgAction::Set)
        .value_parser(parse_go_bool)
}

/// [`flag`] for the arguments whose ids (field names) are `ids`, the others untouched: for
/// `#[command(mut_args(go_bool::flags(&["field", …])))]` on a clap `Args` struct.
pub fn flags(ids: &'static [&'static str]) -> impl FnMut(Arg) -> Arg {
    move |arg| {
        if ids.contains(&arg.get_id().as_str()) {
            flag(arg)
        } else {
            arg
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    #[command(mut_args(flags(&["on", "maybe"])))]
    struct Cli {
        #[arg(long, default_value = "false")]
        on: bool,
        #[arg(long)]
        maybe: Option<bool>,
        rest: Vec<String>,
    }

    fn parse(argv: &[&str]) -> Result<(bool, Option<bool>, Vec<String>), clap::Error> {
        let mut full = vec!["x"];
        full.extend_from_slice(argv);
        Cli::try_parse_from(full).map(|c| (c.on, c.maybe, c.rest))
    }

    #[test]
    fn flags_read_go_booleans_and_need_equals_for_a_value() {
        assert_eq!(parse(&[]).unwrap(), (false, None, vec![]));
        assert_eq!(parse(&["--on"]).unwrap(), (true, None, vec![]));
        assert_eq!(
            parse(&["--on=false", "--maybe"]).unwrap(),
            (false, Some(true), vec![])
        );
        assert_eq!(
            parse(&["--on=1", "--maybe=F"]).unwrap(),
            (true, Some(false), vec![])
        );
        assert_eq!(
            parse(&["--on", "false"]).unwrap(),
            (true, None, vec!["false".to_string()]),
            "without = the next word is not the flag's value"
        );
        assert!(parse(&["--on=maybe"]).is_err());
    }

    #[test]
    fn go_spellings() {
        for (value, want) in [
            ("1", true),
            ("t", true),
            ("True", true),
            ("f", false),
            ("FALSE", false),
        ] {
            assert_eq!(parse_go_bool(value), Ok(want), "{value}");
        }
        for value in ["yes", "", "tRuE"] {
            assert_eq!(parse_go_bool(value), Err(NotABool(value.to_string())));
        }
    }
}
