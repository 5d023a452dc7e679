//! mtpolicyd's configuration syntax: `Config::General`'s Apache-style text
//! as mtpolicyd 2.05 reads it.
//!
//! `key = value` and `key value` lines, `"quoted"` values, `#` comments
//! (`\#` is a literal `#`), `/* … */` comment lines, a trailing `\` joining
//! the next line, `key <<EOF` heredocs, `<Kind name>` … `</Kind>` blocks
//! (nested) and `<<include FILE>>` or `include FILE`. A key set twice in
//! one block, or a block of the same kind and name given twice, is an
//! error, as `AllowMultiOptions => 'no'` makes it in mtpolicyd.
//!
//! Adversarial input gets an error with `file:line`, never a hang: a file
//! is at most [`MAX_FILE_SIZE`] bytes and all files together
//! [`MAX_TOTAL_SIZE`]; includes nest at most [`MAX_INCLUDE_DEPTH`] deep and
//! may not loop; blocks nest at most [`MAX_BLOCK_DEPTH`] deep. An include
//! is read relative to the including file and only when it is a regular
//! file below the directory of the first file (after resolving symbolic
//! links), so a configuration cannot make the importer read, say,
//! `/etc/shadow` or block on a FIFO.

use std::{
    collections::HashMap,
    fmt,
    io::Read as _,
    path::{Path, PathBuf},
    sync::Arc,
};

/// Largest file read, top-level or included.
pub const MAX_FILE_SIZE: usize = 1 << 20;
/// Largest sum of all files read for one configuration.
pub const MAX_TOTAL_SIZE: usize = 4 << 20;
/// Deepest chain of includes below the first file.
pub const MAX_INCLUDE_DEPTH: usize = 8;
/// Deepest nesting of blocks.
pub const MAX_BLOCK_DEPTH: usize = 16;

/// Where something was written: file and line (1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub file: Arc<Path>,
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// A malformed or unreadable configuration: where and what.
#[derive(Debug, thiserror::Error)]
#[error("{at}: {message}")]
pub struct ParseError {
    /// `file:line`, or the file alone when it cannot be read.
    pub at: String,
    pub message: String,
}

impl ParseError {
    fn at(at: &Location, message: impl Into<String>) -> Self {
        Self {
            at: at.to_string(),
            message: message.into(),
        }
    }
}

/// One `key = value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    pub key: String,
    pub value: String,
    pub at: Location,
}

/// A block: `<Kind name>` … `</Kind>`; the file itself is the block of
/// kind `""`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub kind: String,
    pub name: String,
    pub at: Location,
    pub items: Vec<Item>,
}

/// What a block holds, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    Setting(Setting),
    Block(Block),
}

impl Block {
    /// The setting `key` of this block (not of nested ones).
    pub fn setting(&self, key: &str) -> Option<&Setting> {
        self.items.iter().find_map(|item| match item {
            Item::Setting(s) if s.key == key => Some(s),
            _ => None,
        })
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.setting(key).map(|s| s.value.as_str())
    }

    /// The settings of this block, in order.
    pub fn settings(&self) -> impl Iterator<Item = &Setting> {
        self.items.iter().filter_map(|item| match item {
            Item::Setting(s) => Some(s),
            Item::Block(_) => None,
        })
    }

    /// The nested blocks, in order.
    pub fn blocks(&self) -> impl Iterator<Item = &Block> {
        self.items.iter().filter_map(|item| match item {
            Item::Block(b) => Some(b),
            Item::Setting(_) => None,
        })
    }

    /// `<Kind name>` or `<Kind>`, for messages.
    pub fn title(&self) -> String {
        if self.name.is_empty() {
            format!("<{}>", self.kind)
        } else {
            format!("<{} {}>", self.kind, self.name)
        }
    }
}

/// Reads the configuration at `path` with its includes.
///
/// # Errors
/// A file that cannot be read, is too big or not UTF-8, and any syntax
/// error, each with its file and line.
pub fn read_file(path: &Path) -> Result<Block, ParseError> {
    let canonical = path.canonicalize().map_err(|e| ParseError {
        at: path.display().to_string(),
        message: e.to_string(),
    })?;
    let root = canonical
        .parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
    let mut reader = Reader {
        root,
        chain: Vec::new(),
        total: 0,
    };
    let text = reader.load(&canonical, None)?;
    reader.chain.push(canonical);
    reader.parse(path, &text)
}

/// Parses `text` as if read from `path`; includes are read from disk,
/// below `path`'s directory.
///
/// # Errors
/// As [`read_file`].
pub fn parse_text(path: &Path, text: &str) -> Result<Block, ParseError> {
    let root = path
        .parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
    let root = root.canonicalize().unwrap_or(root);
    let mut reader = Reader {
        root,
        chain: vec![path.to_path_buf()],
        total: text.len(),
    };
    if text.len() > MAX_FILE_SIZE {
        return Err(ParseError {
            at: path.display().to_string(),
            message: format!(
                "{} bytes; a configuration file is at most {MAX_FILE_SIZE} bytes",
                text.len()
            ),
        });
    }
    reader.parse(path, text)
}

struct Reader {
    /// Includes must resolve below this directory.
    root: PathBuf,
    /// The files being read, outermost first (canonical paths).
    chain: Vec<PathBuf>,
    /// Bytes read so far over all files.
    total: usize,
}

impl Reader {
    fn parse(&mut self, path: &Path, text: &str) -> Result<Block, ParseError> {
        let file: Arc<Path> = Arc::from(path);
        let mut stack = vec![Frame::new(Block {
            kind: String::new(),
            name: String::new(),
            at: Location { file, line: 1 },
            items: Vec::new(),
        })];
        self.parse_into(path, text, &mut stack)?;
        Ok(stack
            .pop()
            .unwrap_or_else(|| unreachable!("the root block stays"))
            .block)
    }

    /// Reads a file: a regular file, at most [`MAX_FILE_SIZE`] bytes,
    /// UTF-8, within the total budget.
    fn load(&mut self, path: &Path, from: Option<&Location>) -> Result<String, ParseError> {
        let error = |message: String| match from {
            Some(at) => ParseError::at(at, format!("{}: {message}", path.display())),
            None => ParseError {
                at: path.display().to_string(),
                message,
            },
        };
        let metadata = std::fs::metadata(path).map_err(|e| error(e.to_string()))?;
        if !metadata.is_file() {
            return Err(error("not a regular file".to_owned()));
        }
        let file = std::fs::File::open(path).map_err(|e| error(e.to_string()))?;
        let mut bytes = Vec::new();
        file.take(MAX_FILE_SIZE as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| error(e.to_string()))?;
        if bytes.len() > MAX_FILE_SIZE {
            return Err(error(format!(
                "larger than {MAX_FILE_SIZE} bytes; an mtpolicyd configuration file is far smaller"
            )));
        }
        self.total += bytes.len();
        if self.total > MAX_TOTAL_SIZE {
            return Err(error(format!(
                "the files read add up to more than {MAX_TOTAL_SIZE} bytes"
            )));
        }
        String::from_utf8(bytes).map_err(|e| {
            let line = e.as_bytes()[..e.utf8_error().valid_up_to()]
                .split(|b| *b == b'\n')
                .count();
            ParseError {
                at: format!("{}:{line}", path.display()),
                message: "not UTF-8 text".to_owned(),
            }
        })
    }

    fn parse_into(
        &mut self,
        path: &Path,
        text: &str,
        stack: &mut Vec<Frame>,
    ) -> Result<(), ParseError> {
        let file: Arc<Path> = Arc::from(path);
        let base = stack.len();
        let lines: Vec<&str> = text.lines().collect();
        let mut next = 0;
        while next < lines.len() {
            let at = Location {
                file: Arc::clone(&file),
                line: next + 1,
            };
            let mut line = lines[next].to_owned();
            next += 1;
            if line.trim_start().starts_with("/*") {
                while !line.contains("*/") {
                    let Some(more) = lines.get(next) else {
                        return Err(ParseError::at(&at, "/* comment not closed with */"));
                    };
                    (*more).clone_into(&mut line);
                    next += 1;
                }
                continue;
            }
            while line.ends_with('\\') && !line.ends_with("\\\\") {
                let Some(more) = lines.get(next) else {
                    return Err(ParseError::at(
                        &at,
                        "the last line ends with \\, continuing nothing",
                    ));
                };
                line.pop();
                line.push_str(more.trim_start());
                next += 1;
            }
            let line = strip_comment(&line);
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(target) = include_target(line) {
                self.include(&at, target, stack)?;
                continue;
            }
            if let Some(kind) = line.strip_prefix("</") {
                close_block(&at, line, kind, stack, base)?;
                continue;
            }
            if let Some(inner) = line.strip_prefix('<') {
                open_block(at, line, inner, stack)?;
                continue;
            }
            let (key, value) = split_setting(line).map_err(|m| ParseError::at(&at, m))?;
            let value = match heredoc_marker(value) {
                Some(marker) => heredoc(&lines, &mut next, &at, marker)?,
                None => unquote(value).replace("\\#", "#"),
            };
            let top = stack.last_mut().unwrap_or_else(|| unreachable!("root"));
            if let Some(earlier) = top.keys.get(key) {
                return Err(ParseError::at(
                    &at,
                    format!(
                        "{key} is set twice in {} (first at {earlier}); mtpolicyd refuses that too",
                        if top.block.kind.is_empty() {
                            "the file".to_owned()
                        } else {
                            top.block.title()
                        },
                    ),
                ));
            }
            top.keys.insert(key.to_owned(), at.clone());
            top.block.items.push(Item::Setting(Setting {
                key: key.to_owned(),
                value,
                at,
            }));
        }
        if stack.len() > base {
            let open = &stack[stack.len() - 1].block;
            return Err(ParseError::at(
                &open.at,
                format!(
                    "{} is not closed before the end of {}",
                    open.title(),
                    path.display()
                ),
            ));
        }
        Ok(())
    }

    fn include(
        &mut self,
        at: &Location,
        target: &str,
        stack: &mut Vec<Frame>,
    ) -> Result<(), ParseError> {
        if self.chain.len() > MAX_INCLUDE_DEPTH {
            return Err(ParseError::at(
                at,
                format!("includes nest deeper than {MAX_INCLUDE_DEPTH}"),
            ));
        }
        let including = self.chain.last().cloned().unwrap_or_default();
        let dir = at.file.parent().map_or_else(
            || {
                including
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default()
            },
            Path::to_path_buf,
        );
        let path = dir.join(target);
        let canonical = path
            .canonicalize()
            .map_err(|e| ParseError::at(at, format!("include {}: {e}", path.display())))?;
        if !canonical.starts_with(&self.root) {
            return Err(ParseError::at(
                at,
                format!(
                    "include {}: outside {}; includes are read only below the directory of the configuration",
                    canonical.display(),
                    self.root.display()
                ),
            ));
        }
        if self.chain.contains(&canonical) {
            return Err(ParseError::at(
                at,
                format!("include {}: includes itself (a loop)", canonical.display()),
            ));
        }
        let text = self.load(&canonical, Some(at))?;
        self.chain.push(canonical);
        let result = self.parse_into(&path, &text, stack);
        self.chain.pop();
        result
    }
}

/// `</Kind>`: closes the innermost block, which must be of that kind and
/// opened in the same file (at stack depth `base` or deeper).
fn close_block(
    at: &Location,
    line: &str,
    kind: &str,
    stack: &mut Vec<Frame>,
    base: usize,
) -> Result<(), ParseError> {
    let kind = kind
        .strip_suffix('>')
        .ok_or_else(|| ParseError::at(at, format!("{line:?}: missing '>'")))?
        .trim();
    if stack.len() <= base {
        return Err(ParseError::at(
            at,
            format!("</{kind}> closes no block opened in this file"),
        ));
    }
    let block = stack
        .pop()
        .unwrap_or_else(|| unreachable!("checked above"))
        .block;
    if !block.kind.eq_ignore_ascii_case(kind) {
        return Err(ParseError::at(
            at,
            format!(
                "</{kind}> does not close {} opened at {}",
                block.title(),
                block.at
            ),
        ));
    }
    push_block(stack, block)
}

/// `<Kind name>`: opens a block.
fn open_block(
    at: Location,
    line: &str,
    inner: &str,
    stack: &mut Vec<Frame>,
) -> Result<(), ParseError> {
    let inner = inner
        .strip_suffix('>')
        .ok_or_else(|| ParseError::at(&at, format!("{line:?}: missing '>'")))?
        .trim();
    let (kind, name) = inner.split_once(char::is_whitespace).unwrap_or((inner, ""));
    if kind.is_empty()
        || !kind
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(ParseError::at(
            &at,
            format!("{line:?} is not a block opening such as <Plugin name>"),
        ));
    }
    if stack.len() > MAX_BLOCK_DEPTH {
        return Err(ParseError::at(
            &at,
            format!("blocks nest deeper than {MAX_BLOCK_DEPTH}"),
        ));
    }
    stack.push(Frame::new(Block {
        kind: kind.to_owned(),
        name: unquote(name.trim()).to_owned(),
        at,
        items: Vec::new(),
    }));
    Ok(())
}

/// Adds a closed block to its parent; a block of the same kind and name
/// given twice is an error.
fn push_block(stack: &mut [Frame], block: Block) -> Result<(), ParseError> {
    let parent = stack.last_mut().unwrap_or_else(|| unreachable!("root"));
    let id = (block.kind.clone(), block.name.clone());
    if let Some(earlier) = parent.blocks.get(&id) {
        return Err(ParseError::at(
            &block.at,
            format!(
                "{} is given twice in the same block (first at {earlier}); mtpolicyd refuses that too",
                block.title(),
            ),
        ));
    }
    parent.blocks.insert(id, block.at.clone());
    parent.block.items.push(Item::Block(block));
    Ok(())
}

/// A block being read, with what it holds indexed: duplicates are found
/// in constant time, however many a hostile file gives.
struct Frame {
    block: Block,
    keys: HashMap<String, Location>,
    blocks: HashMap<(String, String), Location>,
}

impl Frame {
    fn new(block: Block) -> Self {
        Self {
            block,
            keys: HashMap::new(),
            blocks: HashMap::new(),
        }
    }
}

/// The line without its comment: an unescaped `#` starts one.
fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'#' && (i == 0 || bytes[i - 1] != b'\\') {
            return &line[..i];
        }
    }
    line
}

/// The file of `<<include FILE>>` or `include FILE`.
fn include_target(line: &str) -> Option<&str> {
    if let Some(inner) = line.strip_prefix("<<").and_then(|l| l.strip_suffix(">>")) {
        let (word, rest) = inner.trim().split_once(char::is_whitespace)?;
        return word
            .eq_ignore_ascii_case("include")
            .then(|| unquote(rest.trim()));
    }
    let (word, rest) = line.split_once(char::is_whitespace)?;
    let rest = rest.trim();
    (word.eq_ignore_ascii_case("include") && !rest.starts_with('='))
        .then(|| unquote(rest))
        .filter(|target| !target.is_empty())
}

/// `key = value`, `key=value` or `key value`.
fn split_setting(line: &str) -> Result<(&str, &str), String> {
    let end = line
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(line.len());
    let key = &line[..end];
    if key.is_empty() {
        return Err(format!("{line:?}: a setting starts with its name"));
    }
    if key.starts_with(['"', '\'', '<', '>']) {
        return Err(format!("{line:?} is neither `key = value` nor a block"));
    }
    let rest = line[end..].trim_start();
    match rest.strip_prefix('=') {
        Some(value) => Ok((key, value.trim())),
        None if rest.is_empty() => Err(format!("{key:?} has no value; write `{key} = value`")),
        None => Ok((key, rest)),
    }
}

/// Strips one pair of surrounding double or single quotes.
fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(quote) && value.ends_with(quote) {
            return &value[1..value.len() - 1];
        }
    }
    value
}

/// The marker of `<<MARKER`, a heredoc's start.
fn heredoc_marker(value: &str) -> Option<&str> {
    let marker = value.strip_prefix("<<")?.trim();
    (!marker.is_empty()
        && marker
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_'))
    .then_some(marker)
}

/// The lines of a heredoc from `next` up to its `marker` line, which
/// `next` is moved past.
fn heredoc(
    lines: &[&str],
    next: &mut usize,
    at: &Location,
    marker: &str,
) -> Result<String, ParseError> {
    let start = *next;
    loop {
        let Some(more) = lines.get(*next) else {
            return Err(ParseError::at(
                at,
                format!("heredoc <<{marker} has no closing {marker} line"),
            ));
        };
        *next += 1;
        if more.trim() == marker {
            return Ok(dedent(&lines[start..*next - 1]));
        }
    }
}

/// Heredoc lines without their common indentation, joined by newlines.
fn dedent(lines: &[&str]) -> String {
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    lines
        .iter()
        .map(|l| l.get(indent..).unwrap_or("").trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}
