//! Interactive questions for `register` (dialoguer), asked only with a terminal on stdin and
//! without `--non-interactive`; otherwise a missing value is an error naming it.

use super::error::CommandError;

/// Whether questions may be asked.
pub fn interactive(non_interactive: bool) -> bool {
    !non_interactive && std::io::IsTerminal::is_terminal(&std::io::stdin())
}

/// `given`, else the answer to `question` (with `default`), else an error naming `what`.
pub fn text(
    ask: bool,
    given: Option<String>,
    question: &str,
    default: Option<&str>,
    what: &'static str,
) -> Result<String, CommandError> {
    if let Some(value) = given.filter(|v| !v.trim().is_empty()) {
        return Ok(value.trim().to_string());
    }
    if !ask {
        return default
            .map(str::to_string)
            .ok_or(CommandError::Missing(what));
    }
    let mut input = dialoguer::Input::<String>::new().with_prompt(question);
    if let Some(default) = default {
        input = input.default(default.to_string());
    }
    let answer = input
        .interact_text()
        .map_err(|e| CommandError::Prompt(e.to_string()))?;
    match answer.trim() {
        "" => Err(CommandError::Missing(what)),
        answer => Ok(answer.to_string()),
    }
}

/// `given`, else a hidden answer to `question`, else an error naming `what`.
pub fn secret(
    ask: bool,
    given: Option<String>,
    question: &str,
    what: &'static str,
) -> Result<String, CommandError> {
    if let Some(value) = given.filter(|v| !v.trim().is_empty()) {
        return Ok(value.trim().to_string());
    }
    if !ask {
        return Err(CommandError::Missing(what));
    }
    let answer = dialoguer::Password::new()
        .with_prompt(question)
        .interact()
        .map_err(|e| CommandError::Prompt(e.to_string()))?;
    match answer.trim() {
        "" => Err(CommandError::Missing(what)),
        answer => Ok(answer.to_string()),
    }
}

/// `given`, else one of `choices` picked, else an error naming `what`.
pub fn choose(
    ask: bool,
    given: Option<String>,
    question: &str,
    choices: &[&str],
    what: &'static str,
) -> Result<String, CommandError> {
    if let Some(value) = given.filter(|v| !v.trim().is_empty()) {
        return Ok(value.trim().to_string());
    }
    if !ask {
        return Err(CommandError::Missing(what));
    }
    let at = dialoguer::Select::new()
        .with_prompt(question)
        .items(choices)
        .default(0)
        .interact()
        .map_err(|e| CommandError::Prompt(e.to_string()))?;
    Ok(choices.get(at).copied().unwrap_or(choices[0]).to_string())
}
