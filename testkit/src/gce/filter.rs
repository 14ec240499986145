//! The `filter` query parameter of Compute list calls, evaluated against a resource's JSON.
//! Supports the AIP-160 form (`labels.k = "v"`, `status != RUNNING`, `labels.k:*`, `name:part`,
//! `(a) (b)`, `AND`, `OR`, `NOT`) and the older regex form (`name eq 'runner-.*'`, `ne`). Fields
//! are dotted paths into the rendered resource, so any field Compute shows can be filtered on.

use regex::Regex;
use serde_json::Value;

/// A parsed filter; evaluate with [`Filter::matches`].
#[derive(Debug, Clone)]
pub(crate) enum Filter {
    All,
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    Cmp {
        field: String,
        op: Op,
        value: String,
    },
    Regex {
        field: String,
        negate: bool,
        re: Regex,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Has,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Open,
    Close,
    Eq,
    Ne,
    Colon,
    Word(String),
    Quoted(String),
}

/// Why a filter was rejected (reported as a 400 on field `filter`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid filter expression: {0}")]
pub(crate) struct FilterError(String);

impl Filter {
    /// Parses a filter; an empty string matches everything.
    pub(crate) fn parse(src: &str) -> Result<Self, FilterError> {
        let toks = tokenize(src)?;
        if toks.is_empty() {
            return Ok(Self::All);
        }
        let mut p = Parser { toks, pos: 0 };
        let f = p.seq()?;
        if p.pos != p.toks.len() {
            return Err(FilterError(format!("unexpected token {:?}", p.toks[p.pos])));
        }
        Ok(f)
    }

    /// Whether a resource's JSON satisfies the filter.
    pub(crate) fn matches(&self, resource: &Value) -> bool {
        match self {
            Self::All => true,
            Self::And(fs) => fs.iter().all(|f| f.matches(resource)),
            Self::Or(fs) => fs.iter().any(|f| f.matches(resource)),
            Self::Not(f) => !f.matches(resource),
            Self::Cmp { field, op, value } => {
                let actual = lookup(resource, field);
                match op {
                    Op::Eq => actual.as_deref() == Some(value.as_str()),
                    Op::Ne => actual.as_deref() != Some(value.as_str()),
                    Op::Has if value == "*" => actual.is_some(),
                    Op::Has => actual.is_some_and(|a| a.contains(value.as_str())),
                }
            }
            Self::Regex { field, negate, re } => {
                let hit = lookup(resource, field).is_some_and(|a| re.is_match(&a));
                hit != *negate
            }
        }
    }
}

/// The string form of a dotted field, if present and scalar.
fn lookup(resource: &Value, field: &str) -> Option<String> {
    let mut cur = resource;
    for part in field.split('.') {
        cur = cur.get(part)?;
    }
    match cur {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn tokenize(src: &str) -> Result<Vec<Tok>, FilterError> {
    let mut out = Vec::new();
    let mut chars = src.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' => {
                chars.next();
                out.push(Tok::Open);
            }
            ')' => {
                chars.next();
                out.push(Tok::Close);
            }
            '=' => {
                chars.next();
                out.push(Tok::Eq);
            }
            ':' => {
                chars.next();
                out.push(Tok::Colon);
            }
            '!' => {
                chars.next();
                if chars.next() != Some('=') {
                    return Err(FilterError("'!' must be followed by '='".into()));
                }
                out.push(Tok::Ne);
            }
            '"' | '\'' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => return Err(FilterError("unterminated string".into())),
                        Some('\\') => s.extend(chars.next()),
                        Some(q) if q == c => break,
                        Some(x) => s.push(x),
                    }
                }
                out.push(Tok::Quoted(s));
            }
            _ => {
                let mut s = String::new();
                while let Some(&x) = chars.peek() {
                    if x.is_whitespace() || "()=:!\"'".contains(x) {
                        break;
                    }
                    s.push(x);
                    chars.next();
                }
                out.push(Tok::Word(s));
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(x)) if x == w)
    }

    /// Terms joined by `AND` or juxtaposition (AIP-160: OR binds tighter than AND).
    fn seq(&mut self) -> Result<Filter, FilterError> {
        let mut terms = vec![self.or()?];
        loop {
            match self.peek() {
                None | Some(Tok::Close) => break,
                _ if self.is_word("AND") => {
                    self.pos += 1;
                    terms.push(self.or()?);
                }
                _ => terms.push(self.or()?),
            }
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Filter::And(terms)
        })
    }

    fn or(&mut self) -> Result<Filter, FilterError> {
        let mut terms = vec![self.unary()?];
        while self.is_word("OR") {
            self.pos += 1;
            terms.push(self.unary()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Filter::Or(terms)
        })
    }

    fn unary(&mut self) -> Result<Filter, FilterError> {
        if self.is_word("NOT") {
            self.pos += 1;
            return Ok(Filter::Not(Box::new(self.unary()?)));
        }
        if self.peek() == Some(&Tok::Open) {
            self.pos += 1;
            let inner = self.seq()?;
            if self.next() != Some(Tok::Close) {
                return Err(FilterError("missing ')'".into()));
            }
            return Ok(inner);
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Filter, FilterError> {
        let field = match self.next() {
            Some(Tok::Word(w)) => w,
            other => return Err(FilterError(format!("expected a field name, got {other:?}"))),
        };
        let op = match self.next() {
            Some(Tok::Eq) => Op::Eq,
            Some(Tok::Ne) => Op::Ne,
            Some(Tok::Colon) => Op::Has,
            Some(Tok::Word(w)) if w == "eq" || w == "ne" => {
                let pattern = self.value()?;
                let re = Regex::new(&format!("^(?:{pattern})$"))
                    .map_err(|e| FilterError(format!("bad regular expression {pattern:?}: {e}")))?;
                return Ok(Filter::Regex {
                    field,
                    negate: w == "ne",
                    re,
                });
            }
            other => {
                return Err(FilterError(format!(
                    "expected an operator after {field}, got {other:?}"
                )))
            }
        };
        let value = self.value()?;
        Ok(Filter::Cmp { field, op, value })
    }

    fn value(&mut self) -> Result<String, FilterError> {
        match self.next() {
            Some(Tok::Word(w)) | Some(Tok::Quoted(w)) => Ok(w),
            other => Err(FilterError(format!("expected a value, got {other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vm() -> Value {
        json!({"name": "runner-1", "status": "RUNNING",
               "labels": {"flotilla-manager": "m1", "pool": "a"},
               "scheduling": {"automaticRestart": false}})
    }

    fn check(filter: &str) -> bool {
        Filter::parse(filter)
            .map(|f| f.matches(&vm()))
            .unwrap_or_else(|e| panic!("{filter}: {e}"))
    }

    #[test]
    fn table() {
        let cases = [
            ("", true),
            ("labels.flotilla-manager=m1", true),
            ("labels.flotilla-manager = \"m1\"", true),
            ("labels.flotilla-manager = \"m2\"", false),
            ("status=RUNNING", true),
            ("status != RUNNING", false),
            ("name=runner-1", true),
            ("(labels.pool=a) (status=RUNNING)", true),
            ("(labels.pool=a) (status=STOPPING)", false),
            ("labels.pool=a AND name=runner-1", true),
            ("labels.pool=b OR name=runner-1", true),
            ("labels.pool:*", true),
            ("labels.owner:*", false),
            ("NOT labels.owner:*", true),
            ("name eq 'runner-.*'", true),
            ("name eq 'runner'", false),
            ("name ne 'x.*'", true),
            ("scheduling.automaticRestart = false", true),
            ("labels.missing != x", true),
            ("operationType=\"compute.instances.preempted\"", false),
        ];
        for (f, want) in cases {
            assert_eq!(check(f), want, "{f}");
        }
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["(status=RUNNING", "status", "= x", "name eq '('", "a ! b"] {
            assert!(Filter::parse(bad).is_err(), "{bad}");
        }
    }
}
