//! fail2ban's configuration files as its reader sees them: Python's
//! `configparser` (keys in lower case, `key = value` or `key: value`,
//! indented continuation lines, `#`/`;` comment lines, ` ;` comments after
//! a value), `[INCLUDES] before`/`after`, each file followed by its
//! `.local`, and `%(name)s`, `%(section/name)s`, `%(known/name)s`
//! interpolation.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use super::ImportError;

/// Largest file read: Debian's `jail.conf`, the biggest, is 30 KB.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Most files one configuration may consist of, includes counted.
pub const MAX_FILES: usize = 512;
/// Deepest `%(name)s` nesting, as Python's `MAX_INTERPOLATION_DEPTH`.
pub const MAX_DEPTH: usize = 10;
/// Longest an interpolated value may grow.
pub const MAX_VALUE: usize = 256 * 1024;
/// Most references one value may expand, all levels counted: a value
/// naming another many times over, ten levels deep, ends here rather than
/// after billions of substitutions.
pub const MAX_SUBSTITUTIONS: usize = 10_000;
/// Deepest `[INCLUDES]` chain.
const MAX_INCLUDE_DEPTH: usize = 16;

/// A value with the file and line that set it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub value: String,
    pub file: Arc<PathBuf>,
    pub line: usize,
}

/// One file's sections in order, each with its keys.
pub type Sections = Vec<(String, Vec<(String, Entry)>)>;

/// Parses one file's text. Errors name the file and line.
pub fn parse(path: &Path, text: &str) -> Result<Sections, ImportError> {
    let file = Arc::new(path.to_owned());
    let mut sections: Sections = Vec::new();
    // The key a continuation line adds to: (section, key) indices.
    let mut last: Option<(usize, usize)> = None;
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            last = None;
            continue;
        }
        if trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        let content = strip_inline_comment(trimmed);
        if raw.starts_with([' ', '\t'])
            && let Some((s, k)) = last
        {
            let value = &mut sections[s].1[k].1.value;
            value.push('\n');
            value.push_str(content);
            continue;
        }
        if let Some(header) = content.strip_prefix('[') {
            let Some(end) = header.rfind(']') else {
                return Err(syntax(path, number, "a section header without `]`"));
            };
            let name = header[..end].trim().to_owned();
            if name.is_empty() {
                return Err(syntax(path, number, "a section with no name"));
            }
            sections.push((name, Vec::new()));
            last = None;
            continue;
        }
        let Some(split) = content.find(['=', ':']) else {
            return Err(syntax(
                path,
                number,
                &format!("expected `key = value`, found {content:?}"),
            ));
        };
        let Some(section) = sections.len().checked_sub(1) else {
            return Err(syntax(path, number, "a key before any [section]"));
        };
        let key = content[..split].trim().to_lowercase();
        if key.is_empty() {
            return Err(syntax(path, number, "a value with no key"));
        }
        let entry = Entry {
            value: content[split + 1..].trim().to_owned(),
            file: Arc::clone(&file),
            line: number,
        };
        let keys = &mut sections[section].1;
        let k = if let Some(k) = keys.iter().position(|(name, _)| *name == key) {
            keys[k].1 = entry;
            k
        } else {
            keys.push((key, entry));
            keys.len() - 1
        };
        last = Some((section, k));
    }
    Ok(sections)
}

/// Python's `inline_comment_prefixes = ";"`: a `;` after whitespace starts
/// a comment.
fn strip_inline_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for i in 1..bytes.len() {
        if bytes[i] == b';' && bytes[i - 1].is_ascii_whitespace() {
            return line[..i].trim_end();
        }
    }
    line
}

fn syntax(path: &Path, line: usize, message: &str) -> ImportError {
    ImportError::Syntax {
        path: path.to_owned(),
        line,
        message: message.to_owned(),
    }
}

/// A configuration merged from its files: what fail2ban's reader holds
/// after `read`.
#[derive(Debug, Default)]
pub struct Config {
    pub defaults: HashMap<String, Entry>,
    /// Sections in the order they first appeared.
    pub sections: Vec<(String, HashMap<String, Entry>)>,
    /// Per section, the values a later file replaced (`%(known/name)s`).
    known: HashMap<String, HashMap<String, Entry>>,
    /// Every file read, in order.
    pub files: Vec<PathBuf>,
}

/// A file's text, refused when it is not there as a regular file, too big
/// or not UTF-8.
pub fn read_text(path: &Path) -> Result<String, ImportError> {
    let read = |source| ImportError::Read {
        path: path.to_owned(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(read)?;
    if !metadata.is_file() {
        return Err(ImportError::NotAFile(path.to_owned()));
    }
    if metadata.len() > MAX_FILE_BYTES {
        return Err(ImportError::TooLarge {
            path: path.to_owned(),
            limit: MAX_FILE_BYTES,
        });
    }
    let bytes = std::fs::read(path).map_err(read)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(ImportError::TooLarge {
            path: path.to_owned(),
            limit: MAX_FILE_BYTES,
        });
    }
    String::from_utf8(bytes).map_err(|_| ImportError::NotUtf8(path.to_owned()))
}

impl Config {
    /// Reads `files` in order, each with its includes.
    pub fn read(files: &[PathBuf]) -> Result<Self, ImportError> {
        let mut config = Self::default();
        for file in files {
            config.read_with_includes(file, &mut Vec::new())?;
        }
        Ok(config)
    }

    /// Reads `text` as the file `path` (its includes from disk).
    pub fn read_text(path: &Path, text: &str) -> Result<Self, ImportError> {
        let mut config = Self::default();
        config.merge_text(path, text, &mut Vec::new())?;
        Ok(config)
    }

    fn read_with_includes(
        &mut self,
        path: &Path,
        chain: &mut Vec<PathBuf>,
    ) -> Result<(), ImportError> {
        let text = read_text(path)?;
        self.merge_text(path, &text, chain)
    }

    fn merge_text(
        &mut self,
        path: &Path,
        text: &str,
        chain: &mut Vec<PathBuf>,
    ) -> Result<(), ImportError> {
        if chain.len() >= MAX_INCLUDE_DEPTH {
            return Err(ImportError::Includes {
                path: path.to_owned(),
                message: format!("includes nested deeper than {MAX_INCLUDE_DEPTH}"),
            });
        }
        if self.files.len() >= MAX_FILES {
            return Err(ImportError::Includes {
                path: path.to_owned(),
                message: format!("more than {MAX_FILES} files"),
            });
        }
        let sections = parse(path, text)?;
        self.files.push(path.to_owned());
        let includes = |option: &str| -> Vec<PathBuf> {
            let dir = path.parent().unwrap_or_else(|| Path::new("."));
            let mut found = Vec::new();
            for (name, keys) in &sections {
                if name != "INCLUDES" {
                    continue;
                }
                for (key, entry) in keys {
                    if key == option {
                        found.extend(
                            entry
                                .value
                                .lines()
                                .map(str::trim)
                                .filter(|l| !l.is_empty())
                                .map(|f| dir.join(f)),
                        );
                    }
                }
            }
            found
        };
        let (before, after) = (includes("before"), includes("after"));
        chain.push(path.to_owned());
        for include in before {
            self.include(&include, chain)?;
        }
        self.merge(sections);
        for include in after {
            self.include(&include, chain)?;
        }
        chain.pop();
        Ok(())
    }

    /// An included file and its `.local`; a missing one is skipped and a
    /// file already on the chain is not read again, as fail2ban does.
    fn include(&mut self, path: &Path, chain: &mut Vec<PathBuf>) -> Result<(), ImportError> {
        let mut files = vec![path.to_owned()];
        let local = path.with_extension("local");
        if local != path {
            files.push(local);
        }
        for file in files {
            if !file.is_file() || chain.contains(&file) {
                continue;
            }
            self.read_with_includes(&file, chain)?;
        }
        Ok(())
    }

    fn merge(&mut self, sections: Sections) {
        for (name, keys) in sections {
            if name == "INCLUDES" {
                continue;
            }
            if name == "DEFAULT" {
                self.defaults.extend(keys);
                continue;
            }
            let index = if let Some(i) = self.sections.iter().position(|(n, _)| *n == name) {
                i
            } else {
                self.sections.push((name.clone(), HashMap::new()));
                self.sections.len() - 1
            };
            let section = &mut self.sections[index].1;
            let known = self.known.entry(name).or_default();
            for (key, entry) in keys {
                if let Some(previous) = section.insert(key.clone(), entry) {
                    known.insert(key, previous);
                }
            }
        }
    }

    /// The section named `name`, if any.
    pub fn section(&self, name: &str) -> Option<&HashMap<String, Entry>> {
        self.sections
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, keys)| keys)
    }

    /// The raw entry of `key` in `section`, else in `[DEFAULT]`.
    pub fn raw(&self, section: &str, key: &str) -> Option<&Entry> {
        self.section(section)
            .and_then(|keys| keys.get(key))
            .or_else(|| self.defaults.get(key))
    }

    /// `key` of `section` (else of `[DEFAULT]`), interpolated; `None` when
    /// neither sets it.
    pub fn get(&self, section: &str, key: &str) -> Result<Option<String>, ImportError> {
        let Some(entry) = self.raw(section, key) else {
            return Ok(None);
        };
        let mut budget = Budget::default();
        self.interpolate(section, &entry.value, 1, &mut budget)
            .map(Some)
            .map_err(|message| ImportError::Interpolation {
                path: entry.file.as_ref().clone(),
                line: entry.line,
                section: section.to_owned(),
                key: key.to_owned(),
                message,
            })
    }

    /// `%(name)s` in `value` replaced as fail2ban does, in the context of
    /// `section`; `%%` is `%`.
    fn interpolate(
        &self,
        section: &str,
        value: &str,
        depth: usize,
        budget: &mut Budget,
    ) -> Result<String, String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "references nested deeper than {MAX_DEPTH} (a value that refers to itself?)"
            ));
        }
        let mut out = String::with_capacity(value.len());
        let mut rest = value;
        while let Some(at) = rest.find('%') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(tail) = after.strip_prefix('%') {
                out.push('%');
                rest = tail;
                continue;
            }
            let reference = after
                .strip_prefix('(')
                .and_then(|r| r.find(")s").map(|end| (&r[..end], &r[end + 2..])));
            let Some((name, tail)) = reference else {
                return Err(format!(
                    "`%` must be followed by `%` or `(name)s`, found {:?}",
                    rest[at..].chars().take(20).collect::<String>()
                ));
            };
            budget.substitutions += 1;
            if budget.substitutions > MAX_SUBSTITUTIONS {
                return Err(format!("expands more than {MAX_SUBSTITUTIONS} references"));
            }
            let name = name.to_lowercase();
            let replacement = if name == "__name__" {
                section.to_owned()
            } else {
                let raw = self
                    .lookup(section, &name)
                    .ok_or_else(|| format!("refers to %({name})s, which is not set"))?;
                self.interpolate(section, raw, depth + 1, budget)?
            };
            out.push_str(&replacement);
            if out.len() > MAX_VALUE {
                return Err(format!("grows past {MAX_VALUE} bytes"));
            }
            rest = tail;
        }
        out.push_str(rest);
        Ok(out)
    }

    fn lookup(&self, section: &str, name: &str) -> Option<&str> {
        let value = match name.split_once('/') {
            Some(("known", key)) => self
                .known
                .get(section)
                .and_then(|keys| keys.get(key))
                .or_else(|| self.defaults.get(key)),
            Some(("default", key)) => self.defaults.get(key),
            Some((other, key)) => self
                .sections
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(other))
                .and_then(|(_, keys)| keys.get(key))
                .or_else(|| self.defaults.get(key)),
            None => self.raw(section, name),
        };
        value.map(|entry| entry.value.as_str())
    }
}

#[derive(Default)]
struct Budget {
    substitutions: usize,
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;

    fn config(text: &str) -> Config {
        Config::read_text(Path::new("/nonexistent/jail.conf"), text).expect("parses")
    }

    #[test]
    fn reads_values_continuations_and_comments() {
        let c = config(
            "# comment\n[DEFAULT]\nBanTime = 1h ; inline\nurl = a#b\n[postfix]\nport: smtp,\n  465\n; c\n\n[x]\nk=v\n",
        );
        assert_eq!(
            c.get("postfix", "bantime").expect("ok").as_deref(),
            Some("1h")
        );
        assert_eq!(c.get("x", "url").expect("ok").as_deref(), Some("a#b"));
        assert_eq!(
            c.get("postfix", "port").expect("ok").as_deref(),
            Some("smtp,\n465")
        );
        assert_eq!(c.get("x", "missing").expect("ok"), None);
    }

    #[test]
    fn interpolates_names_sections_known_and_percent() {
        let c = config(
            "[DEFAULT]\nlog = /var/log/%(name)s.log\nname = mail\nbackend = auto\n\
             [postfix]\nfilter = %(__name__)s[mode=%(mode)s]\nmode = more\nb = %(default/backend)s\n\
             pct = 100%%\nother = %(postfix/mode)s\n[postfix]\nmode = x-%(known/mode)s\n",
        );
        let get = |s, k| c.get(s, k).expect("interpolates").expect("set");
        assert_eq!(get("postfix", "log"), "/var/log/mail.log");
        assert_eq!(get("postfix", "filter"), "postfix[mode=x-more]");
        assert_eq!(get("postfix", "b"), "auto");
        assert_eq!(get("postfix", "pct"), "100%");
    }

    #[test]
    fn loops_missing_names_and_blowups_are_errors_with_their_place() {
        let c = config("[a]\nx = %(y)s\ny = %(x)s\nm = %(nope)s\nbad = 5%\n");
        for (key, needle) in [
            ("x", "deeper"),
            ("m", "not set"),
            ("bad", "must be followed"),
        ] {
            let e = c.get("a", key).expect_err(key).to_string();
            assert!(e.contains(needle) && e.contains("jail.conf:"), "{e}");
        }
        let mut text = String::from("[a]\nv0 = x\n");
        for i in 1..10 {
            let p = format!("%(v{})s", i - 1);
            let _ = writeln!(text, "v{i} = {}", p.repeat(40));
        }
        let e = config(&text)
            .get("a", "v9")
            .expect_err("blows up")
            .to_string();
        assert!(e.contains("more than") || e.contains("grows past"), "{e}");
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        let e = Config::read_text(Path::new("/x/jail.local"), "[a]\nok = 1\nnot a pair\n")
            .expect_err("refused")
            .to_string();
        assert!(e.contains("/x/jail.local:3"), "{e}");
        let e = Config::read_text(Path::new("/x/jail.local"), "k = v\n")
            .expect_err("refused")
            .to_string();
        assert!(e.contains(":1") && e.contains("before any"), "{e}");
    }

    #[test]
    fn later_files_override_and_keep_known_values() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().join("jail");
        std::fs::write(
            dir.path().join("jail.conf"),
            "[INCLUDES]\nbefore = paths.conf\n[j]\nmaxretry = 5\n",
        )
        .expect("write");
        std::fs::write(dir.path().join("paths.conf"), "[DEFAULT]\nlog = /a\n").expect("write");
        std::fs::write(dir.path().join("paths.local"), "[DEFAULT]\nlog = /b\n").expect("write");
        std::fs::create_dir(dir.path().join("jail.d")).expect("mkdir");
        std::fs::write(dir.path().join("jail.d/1.conf"), "[j]\nmaxretry = 3\n").expect("write");
        std::fs::write(
            dir.path().join("jail.local"),
            "[j]\nmaxretry = %(known/maxretry)s0\n",
        )
        .expect("write");
        let files = crate::logwatch::filter::fail2ban_files(&base);
        assert_eq!(files.len(), 3, "{files:?}");
        let c = Config::read(&files).expect("reads");
        assert_eq!(c.get("j", "maxretry").expect("ok").as_deref(), Some("30"));
        assert_eq!(c.get("j", "log").expect("ok").as_deref(), Some("/b"));
        assert_eq!(c.files.len(), 5);
    }

    #[test]
    fn an_include_loop_is_read_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("a.conf"),
            "[INCLUDES]\nbefore = b.conf\n[DEFAULT]\nx = 1\n",
        )
        .expect("write");
        std::fs::write(
            dir.path().join("b.conf"),
            "[INCLUDES]\nbefore = a.conf\n[DEFAULT]\ny = 2\n",
        )
        .expect("write");
        let c = Config::read(&[dir.path().join("a.conf")]).expect("reads");
        assert_eq!(c.files.len(), 2);
    }

    #[test]
    fn a_huge_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jail.conf");
        let file = std::fs::File::create(&path).expect("create");
        file.set_len(MAX_FILE_BYTES + 1).expect("grow");
        let e = Config::read(&[path]).expect_err("refused").to_string();
        assert!(e.contains("larger than"), "{e}");
    }
}
