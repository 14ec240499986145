//! The `fields` system parameter (partial responses), as Google's JSON APIs read it on the list
//! routes: a comma-separated list of paths, `/` descending one level, `*` standing for every key
//! of a map (`items/*/instances`), and `a(b,c)` selecting sub-fields of `a`; an array applies the
//! selection to each element. A mask that does not parse is a 400, as Compute answers it. Pure.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// A parsed selection: each field kept, with what to keep of it (`None`: all of it).
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct FieldMask(BTreeMap<String, Option<FieldMask>>);

impl FieldMask {
    /// Parses a `fields` value.
    pub(crate) fn parse(raw: &str) -> Result<FieldMask, String> {
        let mut parser = Parser {
            bytes: raw.as_bytes(),
            at: 0,
        };
        let mask = parser.list()?;
        match parser.peek() {
            None => Ok(mask),
            Some(c) => Err(format!(
                "unexpected '{}' at position {}",
                c as char, parser.at
            )),
        }
    }

    /// The parts of `value` this mask selects.
    pub(crate) fn apply(&self, value: &Value) -> Value {
        match value {
            Value::Array(items) => Value::Array(items.iter().map(|v| self.apply(v)).collect()),
            Value::Object(object) => {
                let mut out = Map::new();
                for (name, sub) in &self.0 {
                    let keep = |v: &Value| sub.as_ref().map_or_else(|| v.clone(), |m| m.apply(v));
                    if name == "*" {
                        for (key, v) in object {
                            out.insert(key.clone(), keep(v));
                        }
                    } else if let Some(v) = object.get(name) {
                        out.insert(name.clone(), keep(v));
                    }
                }
                Value::Object(out)
            }
            scalar => scalar.clone(),
        }
    }

    /// Adds the path `names` with `leaf` (what to keep at its end), merging with what is there.
    fn add(&mut self, names: &[String], leaf: Option<FieldMask>) {
        let Some((first, rest)) = names.split_first() else {
            return;
        };
        let wanted = if rest.is_empty() {
            leaf
        } else {
            let mut sub = FieldMask::default();
            sub.add(rest, leaf);
            Some(sub)
        };
        match self.0.get_mut(first) {
            None => {
                self.0.insert(first.clone(), wanted);
            }
            Some(had) => *had = union(had.take(), wanted),
        }
    }
}

/// Both selections of one field: all of it when either wants all of it.
fn union(a: Option<FieldMask>, b: Option<FieldMask>) -> Option<FieldMask> {
    match (a, b) {
        (Some(mut a), Some(b)) => {
            for (name, sub) in b.0 {
                a.add(&[name], sub);
            }
            Some(a)
        }
        _ => None,
    }
}

struct Parser<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    /// `path ("," path)*`
    fn list(&mut self) -> Result<FieldMask, String> {
        let mut mask = FieldMask::default();
        loop {
            self.path(&mut mask)?;
            if self.peek() == Some(b',') {
                self.at += 1;
            } else {
                return Ok(mask);
            }
        }
    }

    /// `name ("/" name)* ["(" list ")"]`
    fn path(&mut self, mask: &mut FieldMask) -> Result<(), String> {
        let mut names = vec![self.name()?];
        while self.peek() == Some(b'/') {
            self.at += 1;
            names.push(self.name()?);
        }
        let leaf = if self.peek() == Some(b'(') {
            self.at += 1;
            let inner = self.list()?;
            if self.peek() != Some(b')') {
                return Err(format!("missing ')' at position {}", self.at));
            }
            self.at += 1;
            Some(inner)
        } else {
            None
        };
        mask.add(&names, leaf);
        Ok(())
    }

    /// A field name or `*`.
    fn name(&mut self) -> Result<String, String> {
        let start = self.at;
        if self.peek() == Some(b'*') {
            self.at += 1;
        } else {
            while self
                .peek()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
            {
                self.at += 1;
            }
        }
        if self.at == start {
            return Err(format!("a field name is expected at position {start}"));
        }
        Ok(String::from_utf8_lossy(&self.bytes[start..self.at]).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_map_wildcard_and_sub_selections_keep_only_what_is_named() {
        let mask = FieldMask::parse(
            "nextPageToken,items/*/warning,items/*/instances(name,networkInterfaces(networkIP))",
        )
        .unwrap();
        let page = json!({
            "kind": "compute#instanceAggregatedList",
            "nextPageToken": "t",
            "items": {
                "zones/a": {"instances": [
                    {"name": "vm", "metadata": {"items": []},
                     "networkInterfaces": [{"networkIP": "10.0.0.2", "network": "n"}]}
                ]},
                "zones/b": {"warning": {"code": "UNREACHABLE", "message": "m"}}
            }
        });
        assert_eq!(
            mask.apply(&page),
            json!({
                "nextPageToken": "t",
                "items": {
                    "zones/a": {"instances": [
                        {"name": "vm", "networkInterfaces": [{"networkIP": "10.0.0.2"}]}
                    ]},
                    "zones/b": {"warning": {"code": "UNREACHABLE", "message": "m"}}
                }
            })
        );
    }

    #[test]
    fn a_whole_field_wins_over_a_part_of_it_and_bad_masks_are_refused() {
        let mask = FieldMask::parse("a(b),a").unwrap();
        assert_eq!(
            mask.apply(&json!({"a": {"b": 1, "c": 2}, "d": 3})),
            json!({"a": {"b": 1, "c": 2}})
        );
        for bad in ["", "a(b", "a//b", "a,", "a)b", "a b"] {
            assert!(FieldMask::parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
