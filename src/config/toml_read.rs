//! The reading kit every config section is read with: a table being read ([`Scope`]), a value
//! with its line ([`Field`]), typed getters that report a wrong type and go on, and the key check
//! against the compatibility table (`known_keys`) with its "did you mean". Knows no section;
//! the section readers (`reader`, `cache`, `machine`, `gce`) sit above it.

use toml_edit::{Item, TableLike, Value};

use super::diag::Diagnostics;
use super::error::WarningKind;
use super::known_keys::{Section, Written, REGISTER_WRITES};

/// A value and the 1-based line of its key.
pub(super) struct Field<T> {
    /// The value as written.
    pub value: T,
    /// The line of its key.
    pub line: usize,
}

/// A table being read: its contents, its key path and the line of its header.
pub(super) struct Scope<'t> {
    pub table: &'t dyn TableLike,
    pub path: String,
    pub line: usize,
}

impl<'t> Scope<'t> {
    /// Reports that `key` (on `line`) holds `found` where `expected` was wanted.
    pub fn wrong_type(
        &self,
        d: &mut Diagnostics,
        line: usize,
        key: &str,
        expected: &str,
        found: &str,
    ) {
        d.error(
            line,
            &self.child_path(key),
            format!("expected {expected}, found {found}"),
        );
    }

    pub fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub fn key_line(&self, d: &Diagnostics, key: &str) -> usize {
        let span = self
            .table
            .get_key_value(key)
            .and_then(|(k, item)| k.span().or_else(|| item.span()));
        d.line_of(span, self.line)
    }

    /// The sub-table at `key`, if present; an error if `key` holds something else.
    pub fn sub_table(&self, d: &mut Diagnostics, key: &str) -> Option<Scope<'t>> {
        let item = self.table.get(key)?;
        let line = self.key_line(d, key);
        match item.as_table_like() {
            Some(table) => Some(Scope {
                table,
                path: self.child_path(key),
                line,
            }),
            None => {
                self.wrong_type(d, line, key, "a table", item.type_name());
                None
            }
        }
    }

    /// The entries of the array of tables at `key` (`[[header]]` or an array of inline
    /// tables), in order, each with its line and the path `key[i]`; none when `key` is absent,
    /// and an error naming `[[header]]` when it holds something else.
    pub fn table_entries(&self, d: &mut Diagnostics, key: &str, header: &str) -> Vec<Scope<'t>> {
        let Some(item) = self.table.get(key) else {
            return Vec::new();
        };
        let line = self.key_line(d, key);
        let tables: Vec<(&'t dyn TableLike, usize)> = match item {
            Item::ArrayOfTables(entries) => entries
                .iter()
                .map(|t| (t as &dyn TableLike, d.line_of(t.span(), line)))
                .collect(),
            Item::Value(Value::Array(entries)) if entries.iter().all(|v| v.is_inline_table()) => {
                entries
                    .iter()
                    .filter_map(|v| v.as_inline_table())
                    .map(|t| (t as &dyn TableLike, d.line_of(t.span(), line)))
                    .collect()
            }
            other => {
                let expected = format!("[[{header}]] entries");
                self.wrong_type(d, line, key, &expected, other.type_name());
                return Vec::new();
            }
        };
        let path = self.child_path(key);
        tables
            .into_iter()
            .enumerate()
            .map(|(i, (table, line))| Scope {
                table,
                path: format!("{path}[{i}]"),
                line,
            })
            .collect()
    }
}

/// Warns about ignored keys and reports unknown ones.
pub(super) fn check_keys(d: &mut Diagnostics, s: &Scope<'_>, section: &Section) {
    check_keys_with(d, s, section, true);
}

/// Reports unknown keys only (the caller warns about the whole table).
pub(super) fn check_keys_quietly(d: &mut Diagnostics, s: &Scope<'_>, section: &Section) {
    check_keys_with(d, s, section, false);
}

fn check_keys_with(d: &mut Diagnostics, s: &Scope<'_>, section: &Section, warn_ignored: bool) {
    for (key, item) in s.table.iter() {
        if section.is_supported(key) {
            continue;
        }
        let line = s.key_line(d, key);
        let path = s.child_path(key);
        if section.is_ignored(key) {
            if is_default(key, item) {
                continue;
            }
            if section.is_restricting(key) {
                d.error(
                    line,
                    &path,
                    "not supported, and it restricts what jobs may do: Flotilla refuses to start \
                     rather than run jobs without it (remove it, or set GitLab Runner's default)",
                );
            } else if warn_ignored {
                d.warn(line, &path, WarningKind::NotSupported);
            }
            continue;
        }
        d.error(line, &path, unknown("key", key, section));
    }
}

/// "unknown key", with a "did you mean" when a known name is close.
pub(super) fn unknown(what: &str, name: &str, section: &Section) -> String {
    match suggest(name, section.all()) {
        Some(near) => format!("unknown {what}; did you mean \"{near}\"?"),
        None => format!("unknown {what}"),
    }
}

/// The known key closest to `key`, if one is close enough to be a likely typo.
fn suggest(key: &str, known: impl Iterator<Item = &'static str>) -> Option<&'static str> {
    let normalize = |s: &str| s.to_ascii_lowercase().replace('-', "_");
    let wanted = normalize(key);
    let limit = (wanted.chars().count() / 3).max(1);
    known
        .map(|k| (strsim::damerau_levenshtein(&wanted, &normalize(k)), k))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k)
}

/// Whether an item is at GitLab Runner's default for a key of its type (false, 0, "", empty, or
/// a table holding only such values, as `gitlab-runner register` writes `[runners.cache.s3]`), or
/// at the value `register` writes (`REGISTER_WRITES`): setting an ignored key to it changes
/// nothing, so it is neither a warning nor an error.
fn is_default(key: &str, item: &Item) -> bool {
    let written = REGISTER_WRITES.iter().any(|(k, w)| {
        *k == key
            && match w {
                Written::Str(s) => item.as_str() == Some(*s),
                Written::Int(i) => item.as_integer() == Some(*i),
            }
    });
    written
        || match item {
            Item::Value(v) => is_default_value(v),
            Item::Table(t) => t.iter().all(|(k, i)| is_default(k, i)),
            Item::ArrayOfTables(a) => a.iter().all(|t| t.iter().all(|(k, i)| is_default(k, i))),
            Item::None => true,
        }
}

fn is_default_value(value: &Value) -> bool {
    match value {
        Value::Boolean(b) => !*b.value(),
        Value::Integer(i) => *i.value() == 0,
        Value::Float(f) => *f.value() == 0.0,
        Value::String(s) => s.value().is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::InlineTable(t) => t.iter().all(|(_, v)| is_default_value(v)),
        Value::Datetime(_) => false,
    }
}

/// Whether an item holds no value at all (an empty array, or `[runners.cache]` with only empty
/// sub-tables, as `gitlab-runner register` writes): ignoring it changes nothing, so it earns no
/// warning.
pub(super) fn is_empty(item: &Item) -> bool {
    match item {
        Item::None => true,
        Item::Table(t) => t.iter().all(|(_, i)| is_empty(i)),
        Item::ArrayOfTables(a) => a.iter().all(|t| t.iter().all(|(_, i)| is_empty(i))),
        Item::Value(Value::InlineTable(t)) => t.is_empty(),
        Item::Value(Value::Array(a)) => a.is_empty(),
        Item::Value(_) => false,
    }
}

/// Reads `key` with `convert`; a value `convert` rejects is a type error.
pub(super) fn get<T>(
    d: &mut Diagnostics,
    s: &Scope<'_>,
    key: &str,
    expected: &str,
    convert: impl Fn(&Item) -> Option<T>,
) -> Option<Field<T>> {
    let item = s.table.get(key)?;
    let line = s.key_line(d, key);
    match convert(item) {
        Some(value) => Some(Field { value, line }),
        None => {
            s.wrong_type(d, line, key, expected, item.type_name());
            None
        }
    }
}

pub(super) fn string(d: &mut Diagnostics, s: &Scope<'_>, key: &str) -> Option<Field<String>> {
    get(d, s, key, "a string", |item| {
        item.as_str().map(str::to_string)
    })
}

/// A TOML datetime or a string (GitLab Runner has written both), as text.
pub(super) fn datetime(d: &mut Diagnostics, s: &Scope<'_>, key: &str) -> Option<Field<String>> {
    get(d, s, key, "a datetime or a string", |item| {
        match item.as_str() {
            Some(text) => Some(text.to_string()),
            None => item.as_datetime().map(ToString::to_string),
        }
    })
}

pub(super) fn integer(d: &mut Diagnostics, s: &Scope<'_>, key: &str) -> Option<Field<i64>> {
    get(d, s, key, "an integer", Item::as_integer)
}

pub(super) fn string_list(
    d: &mut Diagnostics,
    s: &Scope<'_>,
    key: &str,
) -> Option<Field<Vec<String>>> {
    get(d, s, key, "an array of strings", strings)
}

pub(super) fn strings(item: &Item) -> Option<Vec<String>> {
    item.as_array()?
        .iter()
        .map(|v| v.as_str().map(str::to_string))
        .collect()
}

pub(super) fn boolean(d: &mut Diagnostics, s: &Scope<'_>, key: &str) -> Option<Field<bool>> {
    get(d, s, key, "a boolean", Item::as_bool)
}

/// A float; an integer is taken as one too (`IdleScaleFactor = 1`).
pub(super) fn float(d: &mut Diagnostics, s: &Scope<'_>, key: &str) -> Option<Field<f64>> {
    get(d, s, key, "a number", |item| {
        item.as_float()
            .or_else(|| item.as_integer().map(|i| i as f64))
    })
}

/// An array of strings, each entry with its own line; a wrong entry is reported and skipped.
pub(super) fn string_items(
    d: &mut Diagnostics,
    s: &Scope<'_>,
    key: &str,
) -> Option<Field<Vec<Field<String>>>> {
    let item = s.table.get(key)?;
    let line = s.key_line(d, key);
    let Some(array) = item.as_array() else {
        s.wrong_type(d, line, key, "an array of strings", item.type_name());
        return None;
    };
    let mut entries = Vec::new();
    for value in array.iter() {
        let entry_line = d.line_of(value.span(), line);
        match value.as_str() {
            Some(text) => entries.push(Field {
                value: text.to_string(),
                line: entry_line,
            }),
            None => {
                s.wrong_type(d, entry_line, key, "a string", value.type_name());
            }
        }
    }
    Some(Field {
        value: entries,
        line,
    })
}

#[cfg(test)]
mod tests {
    use super::suggest;

    #[test]
    fn suggestions_catch_typos_case_and_dashes() {
        let known = ["image", "privileged", "tls-ca-file", "IdleCount"];
        assert_eq!(suggest("imagee", known.into_iter()), Some("image"));
        assert_eq!(
            suggest("priviledged", known.into_iter()),
            Some("privileged")
        );
        assert_eq!(
            suggest("tls_ca_file", known.into_iter()),
            Some("tls-ca-file")
        );
        assert_eq!(suggest("idlecount", known.into_iter()), Some("IdleCount"));
        assert_eq!(suggest("frobnicate", known.into_iter()), None);
    }
}
