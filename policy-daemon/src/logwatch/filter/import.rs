//! Importing fail2ban filter files: the INI reader, interpolation,
//! `[INCLUDES]` and `prefregex`.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::LazyLock,
};

use super::FilterError;

/// A fail2ban filter file's `failregex` and `ignoreregex`, interpolated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportedFilter {
    pub failregex: Vec<String>,
    pub ignoreregex: Vec<String>,
}

pub(super) type Sections = Vec<(String, Vec<(String, String)>)>;

pub(super) fn parse_ini(path: &Path, text: &str) -> Result<Sections, FilterError> {
    let mut sections: Sections = Vec::new();
    let mut last_key: Option<(usize, usize)> = None;
    for (number, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if raw.starts_with([' ', '\t']) && !trimmed.is_empty() {
            // Continuation of the previous value.
            if let Some((s, k)) = last_key {
                let value = &mut sections[s].1[k].1;
                if !value.is_empty() {
                    value.push('\n');
                }
                value.push_str(trimmed);
                continue;
            }
        }
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            if trimmed.is_empty() {
                last_key = None;
            }
            continue;
        }
        if let Some(name) = trimmed.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            sections.push((name.trim().to_owned(), Vec::new()));
            last_key = None;
            continue;
        }
        let Some(split) = trimmed.find(['=', ':']) else {
            return Err(FilterError::Syntax {
                path: path.to_owned(),
                line: number + 1,
                message: format!("expected `key = value`, found {trimmed:?}"),
            });
        };
        let Some(section) = sections.len().checked_sub(1) else {
            return Err(FilterError::Syntax {
                path: path.to_owned(),
                line: number + 1,
                message: "key outside any [section]".to_owned(),
            });
        };
        let key = trimmed[..split].trim().to_owned();
        let value = trimmed[split + 1..].trim().to_owned();
        let entries = &mut sections[section].1;
        if let Some(k) = entries.iter().position(|(name, _)| *name == key) {
            entries[k].1 = value;
            last_key = Some((section, k));
        } else {
            entries.push((key, value));
            last_key = Some((section, entries.len() - 1));
        }
    }
    Ok(sections)
}

/// Reads a fail2ban filter file (`[INCLUDES] before`/`after` from the same
/// directory, `[DEFAULT]`, `[Definition]`, `[Init]`, `lt_*` sections),
/// applies `params` (e.g. `mode=aggressive`) and interpolates `%(name)s`
/// (`%(known/name)s` too: the value before this file set it) and `<name>`
/// references; a `%(name)s` nothing defines is an error. A `prefregex` is
/// folded into each failregex.
///
/// As fail2ban does, `NAME.d/*.conf`, `NAME.local` and `NAME.d/*.local`
/// next to `NAME.conf` are read after it, when there.
pub fn import_fail2ban(
    path: &Path,
    params: &[(String, String)],
) -> Result<ImportedFilter, FilterError> {
    let mut vars: HashMap<String, String> = HashMap::new();
    load_text(path, &read_filter_file(path)?, &mut vars, 0)?;
    for overriding in overrides(path) {
        load_file(&overriding, &mut vars, 1)?;
    }
    finish(path, vars, params)
}

/// The files fail2ban reads after the filter `NAME.conf`.
fn overrides(path: &Path) -> Vec<PathBuf> {
    if path.extension().is_none_or(|e| e != "conf") {
        return Vec::new();
    }
    let mut files = fail2ban_files(&path.with_extension(""));
    files.retain(|file| file != path);
    files
}

/// The files fail2ban reads for `base` (e.g. `/etc/fail2ban/jail`), in
/// its order: `base.conf`, `base.d/*.conf`, `base.local`,
/// `base.d/*.local`, those that exist.
pub fn fail2ban_files(base: &Path) -> Vec<PathBuf> {
    let with = |suffix: &str| PathBuf::from(format!("{}{suffix}", base.display()));
    let dir = with(".d");
    let in_dir = |extension: &str| {
        let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|e| e == extension))
            .collect();
        found.sort();
        found
    };
    let mut files = vec![with(".conf")];
    files.extend(in_dir("conf"));
    files.push(with(".local"));
    files.extend(in_dir("local"));
    files.retain(|path| path.is_file());
    files
}

/// [`import_fail2ban`] of `text`, the contents of the filter file at
/// `path`: only its includes are read, from `path`'s directory. Any text
/// gives the filter or an error naming the file at fault, never a panic.
pub fn import_fail2ban_text(
    path: &Path,
    text: &str,
    params: &[(String, String)],
) -> Result<ImportedFilter, FilterError> {
    let mut vars: HashMap<String, String> = HashMap::new();
    load_text(path, text, &mut vars, 0)?;
    finish(path, vars, params)
}

/// The filter `vars` describe, with `params` applied.
fn finish(
    path: &Path,
    mut vars: HashMap<String, String>,
    params: &[(String, String)],
) -> Result<ImportedFilter, FilterError> {
    for (key, value) in params {
        vars.insert(key.clone(), value.clone());
    }
    let interpolation = |message: String| FilterError::Interpolation {
        path: path.to_owned(),
        message,
    };
    let get = |key: &str| -> Result<String, FilterError> {
        let raw = vars.get(key).cloned().unwrap_or_default();
        interpolate(&raw, &vars).map_err(interpolation)
    };
    let prefregex = get("prefregex")?;
    let mut failregex = Vec::new();
    for line in get("failregex")?.lines().filter(|l| !l.trim().is_empty()) {
        failregex.push(fold_prefregex(&prefregex, line.trim()));
    }
    let ignoreregex = get("ignoreregex")?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| fold_prefregex("", l))
        .collect();
    Ok(ImportedFilter {
        failregex,
        ignoreregex,
    })
}

// The import's own regexes, compiled once: compiling them took most of
// an import's time.
pub(super) static F_TAG: LazyLock<Result<regex::Regex, regex::Error>> =
    LazyLock::new(|| regex::Regex::new(r"</?F-[A-Z0-9_-]+>"));

pub(super) static PERCENT_REFERENCE: LazyLock<Result<regex::Regex, regex::Error>> =
    LazyLock::new(|| regex::Regex::new(r"%\(([^)]+)\)s"));

pub(super) static TAG_REFERENCE: LazyLock<Result<regex::Regex, regex::Error>> =
    LazyLock::new(|| regex::Regex::new(r"<([^<>\s]+)>"));

/// `prefregex` `…<F-CONTENT>.+</F-CONTENT>$` around `failregex`.
pub(super) fn fold_prefregex(prefregex: &str, failregex: &str) -> String {
    let strip_tags = |s: &str| {
        F_TAG
            .as_ref()
            .map_or_else(|_| s.to_owned(), |tag| tag.replace_all(s, "").into_owned())
    };
    if prefregex.is_empty() {
        return strip_tags(failregex);
    }
    let inner = failregex.strip_prefix('^').map_or_else(
        || format!(".*?(?:{})", strip_tags(failregex)),
        |anchored| format!("(?:{})", strip_tags(anchored)),
    );
    let Some(start) = prefregex.find("<F-CONTENT>") else {
        return strip_tags(&format!("{prefregex}{inner}"));
    };
    let end = prefregex
        .find("</F-CONTENT>")
        .map_or(prefregex.len(), |e| e + "</F-CONTENT>".len());
    let after = prefregex[end..]
        .strip_prefix('$')
        .unwrap_or(&prefregex[end..]);
    strip_tags(&format!("{}{inner}{after}", &prefregex[..start]))
}

pub(super) fn read_filter_file(path: &Path) -> Result<String, FilterError> {
    std::fs::read_to_string(path).map_err(|source| FilterError::Read {
        path: path.to_owned(),
        source,
    })
}

pub(super) fn load_file(
    path: &Path,
    vars: &mut HashMap<String, String>,
    depth: usize,
) -> Result<(), FilterError> {
    load_text(path, &read_filter_file(path)?, vars, depth)
}

/// Adds the variables of the filter file `path`, whose contents are `text`,
/// and of its includes to `vars`.
pub(super) fn load_text(
    path: &Path,
    text: &str,
    vars: &mut HashMap<String, String>,
    depth: usize,
) -> Result<(), FilterError> {
    if depth > 8 {
        return Err(FilterError::Interpolation {
            path: path.to_owned(),
            message: "includes nested too deep".to_owned(),
        });
    }
    let sections = parse_ini(path, text)?;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let includes = |key: &str| -> Vec<PathBuf> {
        sections
            .iter()
            .filter(|(name, _)| name == "INCLUDES")
            .flat_map(|(_, entries)| entries.iter())
            .filter(|(k, _)| k == key)
            .flat_map(|(_, v)| {
                v.split_whitespace()
                    .map(|f| dir.join(f))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    for before in includes("before") {
        load_file(&before, vars, depth + 1)?;
    }
    // fail2ban's `%(known/name)s`: the value `name` had before this file
    // set it, as its `before` includes left it.
    let mut known = HashMap::new();
    for (name, entries) in &sections {
        if matches!(name.as_str(), "DEFAULT" | "Init" | "Definition") {
            for (key, _) in entries {
                if let Some(previous) = vars.get(key) {
                    known
                        .entry(format!("known/{key}"))
                        .or_insert_with(|| previous.clone());
                }
            }
        }
    }
    vars.extend(known);
    // DEFAULT first, then the named sections, so Definition overrides.
    for wanted in ["DEFAULT", "Init", "Definition"] {
        for (name, entries) in &sections {
            if name == wanted {
                for (key, value) in entries {
                    vars.insert(key.clone(), value.clone());
                }
            }
        }
    }
    for (name, entries) in &sections {
        if !matches!(
            name.as_str(),
            "DEFAULT" | "Init" | "Definition" | "INCLUDES"
        ) {
            for (key, value) in entries {
                vars.insert(format!("{name}/{key}"), value.clone());
            }
        }
    }
    vars.entry("logtype".to_owned())
        .or_insert_with(|| "file".to_owned());
    for after in includes("after") {
        if after.exists() {
            load_file(&after, vars, depth + 1)?;
        }
    }
    Ok(())
}

/// Longest a value may grow to as its references are substituted. The
/// largest of Debian's filters, sshd in aggressive mode, needs 12 KB; a
/// value that refers to itself twice doubles with every round.
pub(super) const MAX_INTERPOLATED: usize = 256 * 1024;

pub(super) fn interpolate(value: &str, vars: &HashMap<String, String>) -> Result<String, String> {
    let percent = PERCENT_REFERENCE.as_ref().map_err(ToString::to_string)?;
    let tag = TAG_REFERENCE.as_ref().map_err(ToString::to_string)?;
    let mut current = value.to_owned();
    for _ in 0..64 {
        let mut changed = false;
        let mut too_long = false;
        // What the round's result can grow to, checked before it is built.
        let mut size = current.len();
        let mut substitute = |c: &regex::Captures<'_>| match vars.get(&c[1]) {
            Some(v) if size + v.len() <= MAX_INTERPOLATED => {
                changed = true;
                size += v.len();
                v.clone()
            }
            Some(_) => {
                too_long = true;
                c[0].to_owned()
            }
            None => c[0].to_owned(),
        };
        let next = percent.replace_all(&current, &mut substitute);
        let next = tag.replace_all(&next, &mut substitute).into_owned();
        if too_long {
            return Err(format!(
                "interpolation of {value:?} grows past {MAX_INTERPOLATED} bytes (a value that refers to itself?)"
            ));
        }
        current = next;
        if !changed {
            // A `%(name)s` nothing defines would stay in the regex as text
            // and never match: fail2ban refuses it too.
            if let Some(missing) = percent.captures(&current) {
                return Err(format!(
                    "{value:?} refers to {}, which no section of the filter or its includes defines",
                    &missing[0]
                ));
            }
            return Ok(current);
        }
    }
    Err(format!("interpolation of {value:?} does not end (a loop?)"))
}

/// A filter reference as fail2ban writes it: `postfix[mode=aggressive]`.
pub fn split_params(spec: &str) -> (&str, Vec<(String, String)>) {
    let Some(open) = spec.find('[') else {
        return (spec, Vec::new());
    };
    let inner = spec[open + 1..].trim_end_matches(']');
    let params = inner
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        .collect();
    (&spec[..open], params)
}
