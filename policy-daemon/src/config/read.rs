//! Reading configuration text so that every mistake is reported at once:
//! a key with an unknown name, a wrong type or a bad value is set aside
//! (its default stands in) and the rest read again, each problem named
//! with its key and line.

use std::fmt;

use serde::Deserialize;

use super::Config;

impl Config {
    /// [`Self::parse`] that keeps what it could read: the configuration
    /// with defaults in place of refused keys (none if reading gave up)
    /// next to every problem, for `check-config` to judge the rest too.
    /// `Err` is text that is not TOML.
    pub fn read(text: &str) -> Result<Reading, String> {
        let mut root = toml::de::DeTable::parse(text).map_err(|e| toml_message(&e, text))?;
        // Each with where it is in the file, to be told in the file's order.
        let mut read_problems = Vec::new();
        let mut dropped = DroppedElements::default();
        let config = loop {
            match Self::deserialize(toml::de::Deserializer::from(root.clone())) {
                Ok(config) => break Some(config),
                Err(error) => {
                    let at = error.span().map_or(usize::MAX, |span| span.start);
                    let key = error
                        .span()
                        .and_then(|span| drop_culprit(root.get_mut(), &span, "", &mut dropped));
                    let message = toml_message(&error, text);
                    match key {
                        Some(key) if read_problems.len() < MAX_READ_PROBLEMS => {
                            read_problems.push((at, format!("{key}: {message}")));
                        }
                        // Nothing left to set aside: report it and stop.
                        _ => {
                            read_problems.push((at, message));
                            break None;
                        }
                    }
                }
            }
        };
        read_problems.sort_by_key(|(at, _)| *at);
        let mut problems: Vec<String> = read_problems.into_iter().map(|(_, p)| p).collect();
        if let Some(config) = &config {
            problems.extend(config.problems().iter().map(|p| dropped.original_keys(p)));
        }
        Ok(Reading { config, problems })
    }
}

/// A configuration read as far as it goes, with every problem found.
#[derive(Debug)]
pub struct Reading {
    /// What was read, defaults standing in for refused keys; `None` when
    /// reading gave up.
    pub config: Option<Config>,
    /// Every problem, as [`ParseError::Invalid`] lists them.
    pub problems: Vec<String>,
}

/// Why configuration text was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    /// The text is not TOML, with line and column: reading stops there.
    Syntax(String),
    /// Every problem, one per key: unknown keys, wrong types and bad values
    /// (with line and column), then what validation found.
    Invalid(Vec<String>),
}

/// Keys set aside before reading gives up: a bound on the passes over a
/// hostile file.
const MAX_READ_PROBLEMS: usize = 100;

/// Elements of arrays of tables dropped while reading, by array key and
/// original index: later elements move up, and validation names them by
/// their new index, which [`Self::original_keys`] turns back.
#[derive(Debug, Default)]
struct DroppedElements {
    by_array: std::collections::BTreeMap<String, Vec<usize>>,
}

impl DroppedElements {
    /// The index in the file of what is now element `index` of `array`.
    fn original(&self, array: &str, index: usize) -> usize {
        let mut original = index;
        if let Some(dropped) = self.by_array.get(array) {
            for &gone in dropped {
                if gone <= original {
                    original += 1;
                }
            }
        }
        original
    }

    fn note(&mut self, array: &str, original: usize) {
        let dropped = self.by_array.entry(array.to_owned()).or_default();
        dropped.push(original);
        dropped.sort_unstable();
    }

    /// `problem` with every `array[i]` it starts with numbered as in the
    /// file; outer arrays first, since inner ones are named by them.
    fn original_keys(&self, problem: &str) -> String {
        let mut problem = problem.to_owned();
        let mut arrays: Vec<&String> = self.by_array.keys().collect();
        arrays.sort_by_key(|array| array.len());
        for array in arrays {
            let Some(rest) = problem
                .strip_prefix(array.as_str())
                .and_then(|rest| rest.strip_prefix('['))
            else {
                continue;
            };
            let Some((index, rest)) = rest.split_once(']') else {
                continue;
            };
            let Ok(index) = index.parse::<usize>() else {
                continue;
            };
            problem = format!("{array}[{}]{rest}", self.original(array, index));
        }
        problem
    }
}

/// Removes from `table` the entry an error at `span` is about: the
/// innermost key, or the element of an array of tables that is wrong as a
/// whole (a required key missing). Returns its key as validation names
/// keys (`policy.check[2].zone`), or `None` if no entry holds `span`.
/// Tables are searched whatever their own span: a `[section]`'s covers
/// its header only.
fn drop_culprit(
    table: &mut toml::de::DeTable<'_>,
    span: &std::ops::Range<usize>,
    prefix: &str,
    dropped: &mut DroppedElements,
) -> Option<String> {
    let holds = |outer: std::ops::Range<usize>| outer.start <= span.start && span.end <= outer.end;
    let keys: Vec<_> = table.keys().cloned().collect();
    for key in keys {
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        let Some(value) = table.get_mut(&key) else {
            continue;
        };
        let culprit = holds(key.span()) || holds(value.span());
        match value.get_mut() {
            _ if holds(key.span()) => {}
            toml::de::DeValue::Table(inner) => {
                if let Some(inner_key) = drop_culprit(inner, span, &path, dropped) {
                    return Some(inner_key);
                }
            }
            toml::de::DeValue::Array(items) => {
                for index in 0..items.len() {
                    let item = &mut items.as_mut()[index];
                    let item_holds = holds(item.span());
                    let toml::de::DeValue::Table(element) = item.get_mut() else {
                        continue;
                    };
                    let original = dropped.original(&path, index);
                    let element_key = format!("{path}[{original}]");
                    if let Some(inner_key) = drop_culprit(element, span, &element_key, dropped) {
                        return Some(inner_key);
                    }
                    if item_holds {
                        let mut kept = toml::de::DeArray::new();
                        for (i, item) in items.iter().enumerate() {
                            if i != index {
                                kept.push(item.clone());
                            }
                        }
                        *items = kept;
                        dropped.note(&path, original);
                        return Some(element_key);
                    }
                }
            }
            _ => {}
        }
        if culprit {
            table.remove(&key);
            return Some(path);
        }
    }
    None
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax(message) => f.write_str(message),
            Self::Invalid(problems) => f.write_str(&problems.join("; ")),
        }
    }
}

/// toml's message with the line and column first and the source excerpt
/// dropped, e.g. `line 3, column 1: unknown field `colour`, expected …`.
fn toml_message(error: &toml::de::Error, input: &str) -> String {
    let message = error.message().trim_end();
    match error.span() {
        Some(span) => {
            let before = &input[..span.start.min(input.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message.to_owned(),
    }
}
