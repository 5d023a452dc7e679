//! Just enough of Python's pickle format for fail2ban's control socket.
//!
//! Requests are lists of strings, written as protocol 2 (fail2ban unpickles
//! any protocol). Replies come from Python's default protocol (5 since
//! Python 3.8) and may hold exception objects and `builtins.str` instances
//! built by `REDUCE`; [`decode`] turns them into a small [`Value`] tree
//! that keeps class names.
//!
//! Why not the `serde-pickle` crate (1.2.0, measured on every reply in
//! `testdata/` and on the hostile inputs of the tests below): with
//! `keep_restore_state` it reads every reply, but a `REDUCE` of a class it
//! does not know loses the class. `UnknownJailException('nojail')`,
//! `Exception('Invalid command')` and `ValueError(…)` all come out as
//! `('nojail',)`-like tuples (or `None`), so the client could not tell a
//! missing jail (kept and retried) from a refused command (dropped), and
//! the addresses of `status` and `banned` come out as 1-tuples, as
//! `os.system('…')` does. Nor is it total on hostile input: it converts
//! and drops values recursively, so 2 KB of nested tuples abort a 2 MiB
//! thread such as the backend's worker (10 KB the main thread) with a
//! stack overflow; and it copies without a limit: each `MARK` reserves
//! 4 KiB (1 MB of them takes 4 GB), each `DUP` or `MEMOIZE` of a 1 KiB
//! string copies it (1 MB takes 1 GB). Capping the input length bounds
//! none of this.
//!
//! The decoder never executes anything, never recurses on input data and
//! bounds what a hostile reply can make it allocate: nesting is limited to
//! [`MAX_DEPTH`], and every value it builds or copies out of the memo, and
//! every open `MARK`, is charged against a budget proportional to the
//! input length.

mod decoder;
#[cfg(test)]
mod tests;

use std::fmt;

use decoder::Decoder;

/// Deepest nesting a reply may have; fail2ban's `status` reply is 5 deep.
pub const MAX_DEPTH: usize = 32;

/// Bytes of decoded values (counted with their in-memory size) allowed per
/// byte of input, on top of [`BUDGET_BASE`]. fail2ban's `status <jail>`
/// reply needs about 25 when its banned addresses are short IPv4 ones:
/// each is a `builtins.str` `REDUCE` whose string, argument tuple and
/// result Python all memoizes, and every tuple enclosing the list is
/// memoized (copied) once filled.
pub const BUDGET_PER_INPUT_BYTE: usize = 32;

/// Decoding budget every input gets regardless of its length.
pub const BUDGET_BASE: usize = 1 << 20;

/// A decoded pickle value.
///
/// Objects are not instantiated: a `REDUCE` of any callable other than
/// `builtins.str` becomes [`Value::Object`] carrying the class and its
/// arguments, which is how exceptions such as
/// `fail2ban.exceptions.UnknownJailException('nojail')` arrive.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    /// Items in the order they were pickled.
    Dict(Vec<(Value, Value)>),
    /// A reference to a class or function (`GLOBAL`, `STACK_GLOBAL`) that
    /// was never called.
    Global(Box<Global>),
    /// The result of calling a class or function (`REDUCE`, `NEWOBJ`).
    Object(Box<Object>),
}

/// A module-level name, e.g. `builtins.Exception`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Global {
    pub module: String,
    pub name: String,
}

/// An object as pickled: its class, constructor arguments and the state
/// `BUILD` applied, if any.
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    pub module: String,
    /// The class name without its module, e.g. `UnknownJailException`.
    pub class: String,
    pub args: Vec<Value>,
    pub state: Option<Value>,
}

impl Value {
    /// The text of a `Str`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(text) => Some(text),
            _ => None,
        }
    }

    /// The number in an `Int`, or 0/1 for a `Bool` (Python's `True == 1`).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Self::Int(n) => Some(*n),
            Self::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    /// The items of a `List` or `Tuple`.
    pub fn as_seq(&self) -> Option<&[Value]> {
        match self {
            Self::List(items) | Self::Tuple(items) => Some(items),
            _ => None,
        }
    }

    /// A one-line rendering for error messages, cut after about `limit`
    /// characters so a huge reply cannot flood a log line.
    pub fn summary(&self, limit: usize) -> String {
        let mut out = Summary {
            text: String::new(),
            limit,
        };
        // Writing into `Summary` only fails once the limit is reached.
        let _ = fmt::write(&mut out, format_args!("{self}"));
        if out.text.len() >= limit {
            out.text.push('…');
        }
        out.text
    }

    fn depth(&self) -> usize {
        match self {
            Self::Tuple(items) | Self::List(items) => {
                1 + items.iter().map(Self::depth).max().unwrap_or(0)
            }
            Self::Dict(items) => {
                1 + items
                    .iter()
                    .map(|(k, v)| k.depth().max(v.depth()))
                    .max()
                    .unwrap_or(0)
            }
            Self::Object(object) => {
                1 + object
                    .args
                    .iter()
                    .chain(object.state.as_ref())
                    .map(Self::depth)
                    .max()
                    .unwrap_or(0)
            }
            _ => 0,
        }
    }

    /// Approximate heap plus inline size, the unit of the decoding budget.
    fn weight(&self) -> usize {
        let own = size_of::<Self>();
        match self {
            Self::Str(text) => own + text.len(),
            Self::Bytes(bytes) => own + bytes.len(),
            Self::Tuple(items) | Self::List(items) => {
                own + items.iter().map(Self::weight).sum::<usize>()
            }
            Self::Dict(items) => {
                own + items
                    .iter()
                    .map(|(k, v)| k.weight() + v.weight())
                    .sum::<usize>()
            }
            Self::Global(global) => {
                own + size_of::<Global>() + global.module.len() + global.name.len()
            }
            Self::Object(object) => {
                own + size_of::<Object>()
                    + object.module.len()
                    + object.class.len()
                    + object
                        .args
                        .iter()
                        .chain(object.state.as_ref())
                        .map(Self::weight)
                        .sum::<usize>()
            }
            _ => own,
        }
    }
}

struct Summary {
    text: String,
    limit: usize,
}

impl fmt::Write for Summary {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.limit.saturating_sub(self.text.len());
        if s.len() <= room {
            self.text.push_str(s);
            return Ok(());
        }
        let mut cut = room;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        self.text.push_str(&s[..cut]);
        Err(fmt::Error)
    }
}

/// Python-like rendering: `(1, UnknownJailException('nojail'))`.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn items(f: &mut fmt::Formatter<'_>, items: &[Value]) -> fmt::Result {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{item}")?;
            }
            Ok(())
        }
        match self {
            Self::None => f.write_str("None"),
            Self::Bool(true) => f.write_str("True"),
            Self::Bool(false) => f.write_str("False"),
            Self::Int(n) => write!(f, "{n}"),
            Self::Float(x) => write!(f, "{x:?}"),
            Self::Str(text) => write!(f, "{text:?}"),
            Self::Bytes(bytes) => write!(f, "b{:?}", String::from_utf8_lossy(bytes)),
            Self::Tuple(values) => {
                f.write_str("(")?;
                items(f, values)?;
                if values.len() == 1 {
                    f.write_str(",")?;
                }
                f.write_str(")")
            }
            Self::List(values) => {
                f.write_str("[")?;
                items(f, values)?;
                f.write_str("]")
            }
            Self::Dict(pairs) => {
                f.write_str("{")?;
                for (i, (key, value)) in pairs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{key}: {value}")?;
                }
                f.write_str("}")
            }
            Self::Global(global) => write!(f, "{}.{}", global.module, global.name),
            Self::Object(object) => {
                write!(f, "{}(", object.class)?;
                items(f, &object.args)?;
                f.write_str(")")
            }
        }
    }
}

/// Why a reply could not be decoded. Offsets count from the first byte of
/// the pickle.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PickleError {
    #[error("pickle ends early at byte {offset}")]
    Truncated { offset: usize },
    #[error("unsupported pickle opcode 0x{opcode:02x} at byte {offset}")]
    UnknownOpcode { opcode: u8, offset: usize },
    #[error("malformed pickle at byte {offset}: {reason}")]
    Malformed { offset: usize, reason: &'static str },
    #[error("pickle nests deeper than {MAX_DEPTH} levels at byte {offset}")]
    TooDeep { offset: usize },
    #[error("pickle expands beyond its budget of {limit} bytes at byte {offset}")]
    TooLarge { offset: usize, limit: usize },
    #[error("pickle refers to memo entry {index}, which was never stored (byte {offset})")]
    MissingMemo { index: u64, offset: usize },
    #[error("pickle string at byte {offset} is not UTF-8")]
    InvalidUtf8 { offset: usize },
}

/// `pickle.dumps(args, protocol=2)` for a list of strings, the shape of
/// every fail2ban command. Not byte-identical to Python's output (no memo
/// entries), but unpickles to the same list. `None` when an argument is
/// 4 GiB or longer, which protocol 2 cannot express.
pub fn encode_command(args: &[&str]) -> Option<Vec<u8>> {
    let len = args.iter().map(|a| a.len() + 5).sum::<usize>() + 6;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&[op::PROTO, 2, op::EMPTY_LIST, op::MARK]);
    for arg in args {
        let arg_len = u32::try_from(arg.len()).ok()?;
        out.push(op::BINUNICODE);
        out.extend_from_slice(&arg_len.to_le_bytes());
        out.extend_from_slice(arg.as_bytes());
    }
    out.extend_from_slice(&[op::APPENDS, op::STOP]);
    Some(out)
}

/// Decodes one complete pickle (`STOP` must be its last byte).
pub fn decode(input: &[u8]) -> Result<Value, PickleError> {
    Decoder::new(input).run()
}

mod op {
    pub const MARK: u8 = b'(';
    pub const STOP: u8 = b'.';
    pub const POP: u8 = b'0';
    pub const POP_MARK: u8 = b'1';
    pub const DUP: u8 = b'2';
    pub const BINFLOAT: u8 = b'G';
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const BININT2: u8 = b'M';
    pub const NONE: u8 = b'N';
    pub const REDUCE: u8 = b'R';
    pub const BINUNICODE: u8 = b'X';
    pub const BINBYTES: u8 = b'B';
    pub const SHORT_BINBYTES: u8 = b'C';
    pub const APPEND: u8 = b'a';
    pub const BUILD: u8 = b'b';
    pub const GLOBAL: u8 = b'c';
    pub const DICT: u8 = b'd';
    pub const APPENDS: u8 = b'e';
    pub const BINGET: u8 = b'h';
    pub const LONG_BINGET: u8 = b'j';
    pub const LIST: u8 = b'l';
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const SETITEM: u8 = b's';
    pub const TUPLE: u8 = b't';
    pub const SETITEMS: u8 = b'u';
    pub const EMPTY_DICT: u8 = b'}';
    pub const EMPTY_LIST: u8 = b']';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const PROTO: u8 = 0x80;
    pub const NEWOBJ: u8 = 0x81;
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const LONG1: u8 = 0x8a;
    pub const SHORT_BINUNICODE: u8 = 0x8c;
    pub const BINUNICODE8: u8 = 0x8d;
    pub const BINBYTES8: u8 = 0x8e;
    pub const STACK_GLOBAL: u8 = 0x93;
    pub const MEMOIZE: u8 = 0x94;
    pub const FRAME: u8 = 0x95;
}
