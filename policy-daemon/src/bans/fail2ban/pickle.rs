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

use std::{collections::HashMap, fmt};

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

struct Decoder<'a> {
    input: &'a [u8],
    pos: usize,
    /// Offset of the opcode being executed, for errors.
    at: usize,
    stack: Vec<Value>,
    /// Stack lengths at each open `MARK`.
    marks: Vec<usize>,
    /// Memo entries `0..memo.len()`, as Python writes them (`MEMOIZE`
    /// always, `BINPUT` in practice). Copies, not shared references: a
    /// container memoized before it was filled reads back empty. fail2ban's
    /// replies only fetch strings, tuples and globals from the memo.
    memo: Vec<Value>,
    /// Entries a `BINPUT` stored past the end of `memo`; every key is at
    /// least `memo.len()`.
    sparse_memo: HashMap<u64, Value>,
    spent: usize,
    budget: usize,
}

impl<'a> Decoder<'a> {
    fn new(input: &'a [u8]) -> Self {
        Self {
            input,
            pos: 0,
            at: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: Vec::new(),
            sparse_memo: HashMap::new(),
            spent: 0,
            budget: input
                .len()
                .saturating_mul(BUDGET_PER_INPUT_BYTE)
                .saturating_add(BUDGET_BASE),
        }
    }

    fn run(mut self) -> Result<Value, PickleError> {
        loop {
            self.at = self.pos;
            let opcode = self.byte()?;
            if opcode == op::STOP {
                return self.stop();
            }
            self.step(opcode)?;
        }
    }

    fn stop(&mut self) -> Result<Value, PickleError> {
        if self.pos != self.input.len() {
            return Err(self.malformed("bytes after STOP"));
        }
        if !self.marks.is_empty() {
            return Err(self.malformed("MARK without its closing opcode"));
        }
        match (self.stack.pop(), self.stack.is_empty()) {
            (Some(value), true) => Ok(value),
            (None, _) => Err(self.malformed("STOP with an empty stack")),
            (Some(_), false) => Err(self.malformed("STOP with more than one value on the stack")),
        }
    }

    #[expect(
        clippy::too_many_lines,
        reason = "one arm per opcode reads best as a single table"
    )]
    fn step(&mut self, opcode: u8) -> Result<(), PickleError> {
        match opcode {
            op::PROTO => {
                if self.byte()? > 5 {
                    return Err(self.malformed("protocol newer than 5"));
                }
            }
            op::FRAME => {
                // Frames only help Python's buffering; their content
                // follows inline.
                self.take(8)?;
            }
            op::MARK => {
                self.charge(size_of::<usize>())?;
                self.marks.push(self.stack.len());
            }
            op::POP => {
                if self.marks.last() == Some(&self.stack.len()) {
                    self.marks.pop();
                } else {
                    self.pop()?;
                }
            }
            op::POP_MARK => {
                self.pop_mark()?;
            }
            op::DUP => {
                let top = self.peek()?.clone();
                self.charge(top.weight())?;
                self.stack.push(top);
            }
            op::NONE => self.push(Value::None)?,
            op::NEWTRUE => self.push(Value::Bool(true))?,
            op::NEWFALSE => self.push(Value::Bool(false))?,
            op::BININT => {
                let n = i32::from_le_bytes(self.array()?);
                self.push(Value::Int(n.into()))?;
            }
            op::BININT1 => {
                let n = self.byte()?;
                self.push(Value::Int(n.into()))?;
            }
            op::BININT2 => {
                let n = u16::from_le_bytes(self.array()?);
                self.push(Value::Int(n.into()))?;
            }
            op::LONG1 => {
                let len = usize::from(self.byte()?);
                let n = self.long(len)?;
                self.push(Value::Int(n))?;
            }
            op::BINFLOAT => {
                let x = f64::from_be_bytes(self.array()?);
                self.push(Value::Float(x))?;
            }
            op::SHORT_BINUNICODE => {
                let len = usize::from(self.byte()?);
                self.string(len)?;
            }
            op::BINUNICODE => {
                let len = self.len4()?;
                self.string(len)?;
            }
            op::BINUNICODE8 => {
                let len = self.len8()?;
                self.string(len)?;
            }
            op::SHORT_BINBYTES => {
                let len = usize::from(self.byte()?);
                self.bytes(len)?;
            }
            op::BINBYTES => {
                let len = self.len4()?;
                self.bytes(len)?;
            }
            op::BINBYTES8 => {
                let len = self.len8()?;
                self.bytes(len)?;
            }
            op::EMPTY_TUPLE => self.push(Value::Tuple(Vec::new()))?,
            op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                let n = usize::from(opcode - op::TUPLE1 + 1);
                let at = self
                    .stack
                    .len()
                    .checked_sub(n)
                    .filter(|&at| self.marks.last().is_none_or(|&mark| mark <= at))
                    .ok_or_else(|| self.malformed("tuple of more values than the stack holds"))?;
                let items = self.stack.split_off(at);
                self.container(Value::Tuple(items))?;
            }
            op::TUPLE => {
                let items = self.pop_mark()?;
                self.container(Value::Tuple(items))?;
            }
            op::EMPTY_LIST => self.push(Value::List(Vec::new()))?,
            op::LIST => {
                let items = self.pop_mark()?;
                self.container(Value::List(items))?;
            }
            op::APPEND => {
                let item = self.pop()?;
                self.extend_list(vec![item])?;
            }
            op::APPENDS => {
                let items = self.pop_mark()?;
                self.extend_list(items)?;
            }
            op::EMPTY_DICT => self.push(Value::Dict(Vec::new()))?,
            op::DICT => {
                let items = self.pop_mark()?;
                let pairs = self.pairs(items)?;
                self.container(Value::Dict(pairs))?;
            }
            op::SETITEM => {
                let value = self.pop()?;
                let key = self.pop()?;
                self.extend_dict(vec![key, value])?;
            }
            op::SETITEMS => {
                let items = self.pop_mark()?;
                self.extend_dict(items)?;
            }
            op::MEMOIZE => {
                // Python's `len(memo)`: both parts hold distinct keys.
                let index = (self.memo.len() + self.sparse_memo.len()) as u64;
                self.put(index)?;
            }
            op::BINPUT => {
                let index = self.byte()?;
                self.put(index.into())?;
            }
            op::LONG_BINPUT => {
                let index = u32::from_le_bytes(self.array()?);
                self.put(index.into())?;
            }
            op::BINGET => {
                let index = self.byte()?;
                self.get(index.into())?;
            }
            op::LONG_BINGET => {
                let index = u32::from_le_bytes(self.array()?);
                self.get(index.into())?;
            }
            op::GLOBAL => {
                let line = self.line()?;
                // Protocols 0-2 use Python 2's module names.
                let module = if matches!(line.as_str(), "__builtin__" | "exceptions") {
                    "builtins".to_owned()
                } else {
                    line
                };
                let name = self.line()?;
                self.push(Value::Global(Box::new(Global { module, name })))?;
            }
            op::STACK_GLOBAL => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Value::Str(module), Value::Str(name)) = (module, name) else {
                    return Err(self.malformed("STACK_GLOBAL of non-strings"));
                };
                self.push(Value::Global(Box::new(Global { module, name })))?;
            }
            op::REDUCE | op::NEWOBJ => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let value = self.call(callable, args)?;
                self.container(value)?;
            }
            op::BUILD => {
                let state = self.pop()?;
                self.check_child_depth([&state])?;
                match self.top_mut() {
                    Some(Value::Object(object)) => {
                        object.state = Some(state);
                    }
                    _ => return Err(self.malformed("BUILD on something other than an object")),
                }
            }
            opcode => {
                return Err(PickleError::UnknownOpcode {
                    opcode,
                    offset: self.at,
                });
            }
        }
        Ok(())
    }

    fn call(&self, callable: Value, args: Value) -> Result<Value, PickleError> {
        let Value::Global(global) = callable else {
            return Err(self.malformed("REDUCE of something other than a class"));
        };
        let Value::Tuple(mut args) = args else {
            return Err(self.malformed("REDUCE arguments are not a tuple"));
        };
        let Global { module, name } = *global;
        let is_str = matches!(
            (module.as_str(), name.as_str()),
            ("builtins", "str" | "unicode")
        );
        if is_str && args.len() == 1 && matches!(args[0], Value::Str(_)) {
            return Ok(args.swap_remove(0));
        }
        Ok(Value::Object(Box::new(Object {
            module,
            class: name,
            args,
            state: None,
        })))
    }

    fn byte(&mut self) -> Result<u8, PickleError> {
        let byte = *self.input.get(self.pos).ok_or(PickleError::Truncated {
            offset: self.input.len(),
        })?;
        self.pos += 1;
        Ok(byte)
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], PickleError> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.input.len())
            .ok_or(PickleError::Truncated {
                offset: self.input.len(),
            })?;
        let bytes = &self.input[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], PickleError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn len4(&mut self) -> Result<usize, PickleError> {
        usize::try_from(u32::from_le_bytes(self.array()?)).map_err(|_| PickleError::Truncated {
            offset: self.input.len(),
        })
    }

    fn len8(&mut self) -> Result<usize, PickleError> {
        // A length beyond the address space cannot fit in the input either.
        usize::try_from(u64::from_le_bytes(self.array()?)).map_err(|_| PickleError::Truncated {
            offset: self.input.len(),
        })
    }

    /// Little-endian two's complement of `len` bytes, as `LONG1` stores it.
    fn long(&mut self, len: usize) -> Result<i64, PickleError> {
        let bytes = self.take(len)?;
        if len > 8 {
            return Err(self.malformed("integer wider than 64 bits"));
        }
        let fill = if bytes.last().is_some_and(|&b| b & 0x80 != 0) {
            0xff
        } else {
            0
        };
        let mut le = [fill; 8];
        le[..len].copy_from_slice(bytes);
        Ok(i64::from_le_bytes(le))
    }

    /// A text line of `GLOBAL`, without its newline.
    fn line(&mut self) -> Result<String, PickleError> {
        let rest = &self.input[self.pos..];
        let len = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(PickleError::Truncated {
                offset: self.input.len(),
            })?;
        let start = self.pos;
        let text = self.take(len)?;
        self.pos += 1;
        let text = std::str::from_utf8(text)
            .map_err(|_| PickleError::InvalidUtf8 { offset: start })?
            .to_owned();
        self.charge(text.len())?;
        Ok(text)
    }

    fn string(&mut self, len: usize) -> Result<(), PickleError> {
        let start = self.pos;
        let bytes = self.take(len)?;
        let text =
            std::str::from_utf8(bytes).map_err(|_| PickleError::InvalidUtf8 { offset: start })?;
        self.push(Value::Str(text.to_owned()))
    }

    fn bytes(&mut self, len: usize) -> Result<(), PickleError> {
        let bytes = self.take(len)?.to_vec();
        self.push(Value::Bytes(bytes))
    }

    fn charge(&mut self, weight: usize) -> Result<(), PickleError> {
        self.spent = self.spent.saturating_add(weight);
        if self.spent > self.budget {
            return Err(PickleError::TooLarge {
                offset: self.at,
                limit: self.budget,
            });
        }
        Ok(())
    }

    /// Pushes a freshly decoded leaf.
    fn push(&mut self, value: Value) -> Result<(), PickleError> {
        self.charge(value.weight())?;
        self.stack.push(value);
        Ok(())
    }

    /// Pushes a container built from values already on the stack (charged
    /// when they were pushed): only its own size is new.
    fn container(&mut self, value: Value) -> Result<(), PickleError> {
        if value.depth() > MAX_DEPTH {
            return Err(PickleError::TooDeep { offset: self.at });
        }
        self.charge(size_of::<Value>())?;
        self.stack.push(value);
        Ok(())
    }

    fn peek(&self) -> Result<&Value, PickleError> {
        match (self.stack.last(), self.marks.last()) {
            (Some(value), Some(&mark)) if mark < self.stack.len() => Ok(value),
            (Some(value), None) => Ok(value),
            _ => Err(self.malformed("stack underflow")),
        }
    }

    /// The top of the stack unless a `MARK` sits above it.
    fn top_mut(&mut self) -> Option<&mut Value> {
        let mark = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() > mark {
            self.stack.last_mut()
        } else {
            None
        }
    }

    fn pop(&mut self) -> Result<Value, PickleError> {
        self.peek()?;
        self.stack
            .pop()
            .ok_or_else(|| self.malformed("stack underflow"))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, PickleError> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| self.malformed("no MARK to pop to"))?;
        Ok(self.stack.split_off(mark))
    }

    fn extend_list(&mut self, items: Vec<Value>) -> Result<(), PickleError> {
        self.check_child_depth(&items)?;
        match self.top_mut() {
            Some(Value::List(list)) => {
                list.extend(items);
                Ok(())
            }
            _ => Err(self.malformed("APPEND to something other than a list")),
        }
    }

    fn extend_dict(&mut self, items: Vec<Value>) -> Result<(), PickleError> {
        self.check_child_depth(&items)?;
        let pairs = self.pairs(items)?;
        match self.top_mut() {
            Some(Value::Dict(dict)) => {
                dict.extend(pairs);
                Ok(())
            }
            _ => Err(self.malformed("SETITEM on something other than a dict")),
        }
    }

    fn pairs(&self, items: Vec<Value>) -> Result<Vec<(Value, Value)>, PickleError> {
        if !items.len().is_multiple_of(2) {
            return Err(self.malformed("odd number of dict items"));
        }
        let mut pairs = Vec::with_capacity(items.len() / 2);
        let mut items = items.into_iter();
        while let (Some(key), Some(value)) = (items.next(), items.next()) {
            pairs.push((key, value));
        }
        Ok(pairs)
    }

    /// Values on the stack are at most [`MAX_DEPTH`] deep; a container
    /// that takes `children` stays within it when they are one level less.
    fn check_child_depth<'v>(
        &self,
        children: impl IntoIterator<Item = &'v Value>,
    ) -> Result<(), PickleError> {
        if children.into_iter().any(|child| child.depth() >= MAX_DEPTH) {
            return Err(PickleError::TooDeep { offset: self.at });
        }
        Ok(())
    }

    fn put(&mut self, index: u64) -> Result<(), PickleError> {
        let value = self.peek()?.clone();
        self.charge(value.weight())?;
        let next = self.memo.len();
        match usize::try_from(index) {
            Ok(slot) if slot < next => self.memo[slot] = value,
            Ok(slot) if slot == next => {
                self.sparse_memo.remove(&index);
                self.memo.push(value);
            }
            _ => {
                // A hash-map entry costs about twice its size.
                self.charge(2 * size_of::<(u64, Value)>())?;
                self.sparse_memo.insert(index, value);
            }
        }
        Ok(())
    }

    fn get(&mut self, index: u64) -> Result<(), PickleError> {
        let stored = match usize::try_from(index) {
            Ok(slot) if slot < self.memo.len() => self.memo.get(slot),
            _ => self.sparse_memo.get(&index),
        };
        let value = stored
            .ok_or(PickleError::MissingMemo {
                index,
                offset: self.at,
            })?
            .clone();
        self.charge(value.weight())?;
        self.stack.push(value);
        Ok(())
    }

    fn malformed(&self, reason: &'static str) -> PickleError {
        PickleError::Malformed {
            offset: self.at,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Value {
        Value::Str(text.into())
    }

    fn object(module: &str, class: &str, args: Vec<Value>) -> Value {
        Value::Object(Box::new(Object {
            module: module.into(),
            class: class.into(),
            args,
            state: None,
        }))
    }

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|pair| {
                u8::from_str_radix(std::str::from_utf8(pair).expect("ascii"), 16).expect("hex")
            })
            .collect()
    }

    /// Every reply captured from fail2ban-server 1.0.2 (testdata/README.md).
    const CAPTURED: &[(&str, &[u8])] = &[
        ("ping", include_bytes!("testdata/ping.pickle")),
        ("banip_new", include_bytes!("testdata/banip_new.pickle")),
        ("banip_again", include_bytes!("testdata/banip_again.pickle")),
        ("banip_many", include_bytes!("testdata/banip_many.pickle")),
        (
            "unknown_jail",
            include_bytes!("testdata/unknown_jail.pickle"),
        ),
        (
            "invalid_command",
            include_bytes!("testdata/invalid_command.pickle"),
        ),
        (
            "unbanip_absent_report",
            include_bytes!("testdata/unbanip_absent_report.pickle"),
        ),
        ("status", include_bytes!("testdata/status.pickle")),
        ("get_banned", include_bytes!("testdata/get_banned.pickle")),
        (
            "get_banned_large",
            include_bytes!("testdata/get_banned_large.pickle"),
        ),
        ("banned_all", include_bytes!("testdata/banned_all.pickle")),
        (
            "get_banip_time",
            include_bytes!("testdata/get_banip_time.pickle"),
        ),
        ("unpicklable", include_bytes!("testdata/unpicklable.pickle")),
        ("kitchen_p2", include_bytes!("testdata/kitchen_p2.pickle")),
        ("kitchen_p5", include_bytes!("testdata/kitchen_p5.pickle")),
    ];

    fn captured(name: &str) -> Value {
        let (_, bytes) = CAPTURED.iter().find(|(n, _)| *n == name).expect("vector");
        decode(bytes).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    #[test]
    fn reference_bytes_decode() {
        // REFERENCE.md: the request fail2ban-client sends and the reply.
        let request = hex(
            "80 05 95 29 00 00 00 00 00 00 00 5d 94 28 8c 03 736574 94 8c 07 706f7374666978 94
             8c 05 62616e6970 94 8c 09 3139322e302e322e37 94 65 2e",
        );
        assert_eq!(
            decode(&request),
            Ok(Value::List(vec![
                s("set"),
                s("postfix"),
                s("banip"),
                s("192.0.2.7")
            ]))
        );
        let reply = hex("80 05 95 07 00 00 00 00 00 00 00 4b 00 4b 01 86 94 2e");
        assert_eq!(
            decode(&reply),
            Ok(Value::Tuple(vec![Value::Int(0), Value::Int(1)]))
        );
    }

    #[test]
    fn captured_replies_decode() {
        let ok = |value| Value::Tuple(vec![Value::Int(0), value]);
        assert_eq!(captured("ping"), ok(s("pong")));
        assert_eq!(captured("banip_new"), ok(Value::Int(1)));
        assert_eq!(captured("banip_again"), ok(Value::Int(0)));
        assert_eq!(captured("banip_many"), ok(Value::Int(1500)));
        assert_eq!(
            captured("unknown_jail"),
            Value::Tuple(vec![
                Value::Int(1),
                object(
                    "fail2ban.exceptions",
                    "UnknownJailException",
                    vec![s("nojail")]
                )
            ])
        );
        assert_eq!(
            captured("invalid_command"),
            Value::Tuple(vec![
                Value::Int(1),
                object("builtins", "Exception", vec![s("Invalid command")])
            ])
        );
        assert_eq!(
            captured("unbanip_absent_report"),
            Value::Tuple(vec![
                Value::Int(1),
                object(
                    "builtins",
                    "ValueError",
                    vec![s("not banned: ['192.0.2.8']")]
                )
            ])
        );
        let banned = Value::List(vec![s("192.0.2.7"), s("2001:db8::7"), s("198.51.100.9")]);
        assert_eq!(captured("get_banned"), ok(banned.clone()));
        assert_eq!(
            captured("banned_all"),
            ok(Value::List(vec![Value::Dict(vec![(
                s("spamwall"),
                banned.clone()
            )])]))
        );
        let pair = |name: &str, value| Value::Tuple(vec![s(name), value]);
        assert_eq!(
            captured("status"),
            ok(Value::List(vec![
                pair(
                    "Filter",
                    Value::List(vec![
                        pair("Currently failed", Value::Int(0)),
                        pair("Total failed", Value::Int(0)),
                        pair("File list", Value::List(vec![s("/tmp/f2b/empty.log")])),
                    ])
                ),
                pair(
                    "Actions",
                    Value::List(vec![
                        pair("Currently banned", Value::Int(3)),
                        pair("Total banned", Value::Int(3)),
                        pair("Banned IP list", banned),
                    ])
                ),
            ]))
        );
        assert_eq!(
            captured("unpicklable"),
            s("ERROR: pickle data was truncated")
        );
        let Value::Tuple(with_time) = captured("get_banip_time") else {
            panic!("tuple");
        };
        assert!(
            with_time[1].as_seq().expect("list")[0]
                .as_str()
                .expect("str")
                .starts_with("192.0.2.7 \t")
        );
    }

    #[test]
    fn large_banned_list_decodes_within_budget() {
        let Value::Tuple(reply) = captured("get_banned_large") else {
            panic!("tuple");
        };
        let list = reply[1].as_seq().expect("list");
        assert_eq!(list.len(), 1502);
        assert_eq!(list[2], s("10.0.0.1"));
        assert!(list.iter().all(|item| item.as_str().is_some()));
    }

    /// A list of `builtins.str` objects as fail2ban's Python writes it
    /// (batches of 1000, `STACK_GLOBAL` once then `BINGET`), for a list
    /// memoized as entry `memo`.
    fn str_list(out: &mut Vec<u8>, memo: u8, addresses: &[&str]) {
        out.extend_from_slice(b"]\x94");
        for (n, batch) in addresses.chunks(1000).enumerate() {
            out.push(b'(');
            for (i, address) in batch.iter().enumerate() {
                if n == 0 && i == 0 {
                    out.extend_from_slice(b"\x8c\x08builtins\x94\x8c\x03str\x94\x93\x94");
                } else {
                    out.extend_from_slice(&[b'h', memo + 3]);
                }
                out.extend_from_slice(&[0x8c, u8::try_from(address.len()).expect("short")]);
                out.extend_from_slice(address.as_bytes());
                out.extend_from_slice(b"\x94\x85\x94R\x94");
            }
            out.push(b'e');
        }
    }

    /// Protocol 5 framing around `body`, in one frame: Python splits
    /// frames at 64 KiB, which the decoder does not look at.
    fn framed(body: &[u8]) -> Vec<u8> {
        let mut out = vec![0x80, 5, 0x95];
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(body);
        out
    }

    /// `get <jail> banned` → `(0, [addresses])`.
    fn banned_reply(addresses: &[&str]) -> Vec<u8> {
        let mut body = b"K\x00".to_vec();
        str_list(&mut body, 0, addresses);
        body.extend_from_slice(b"\x86\x94.");
        framed(&body)
    }

    /// `status <jail>` with `addresses` banned (the counters stay those of
    /// the captured reply).
    fn status_reply(addresses: &[&str]) -> Vec<u8> {
        let captured: &[u8] = include_bytes!("testdata/status.pickle");
        let mut body = captured[11..183].to_vec();
        str_list(&mut body, 19, addresses);
        body.extend_from_slice(b"\x86\x94e\x86\x94e\x86\x94.");
        framed(&body)
    }

    #[test]
    fn real_banned_lists_fit_the_budget_at_any_size() {
        // The generators reproduce the captured replies byte for byte.
        let large: Vec<String> = ["192.0.2.7".to_owned(), "2001:db8::7".to_owned()]
            .into_iter()
            .chain((0..1500).map(|i| format!("10.{}.{}.1", i / 256, i % 256)))
            .collect();
        let large: Vec<&str> = large.iter().map(String::as_str).collect();
        assert_eq!(
            banned_reply(&large),
            include_bytes!("testdata/get_banned_large.pickle")
        );
        assert_eq!(
            status_reply(&["192.0.2.7", "2001:db8::7", "198.51.100.9"]),
            include_bytes!("testdata/status.pickle")
        );
        // 60,000 short addresses: far past the base budget, and the
        // reply shape that decodes to the most bytes per input byte.
        let many: Vec<String> = (0..60_000u32)
            .map(|i| format!("1.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let Value::Tuple(banned) = decode(&banned_reply(&many)).expect("banned") else {
            panic!("tuple");
        };
        let banned = banned[1].as_seq().expect("list");
        assert_eq!(banned.len(), many.len());
        assert_eq!(banned.last(), Some(&s("1.0.234.95")));
        let Value::Tuple(status) = decode(&status_reply(&many)).expect("status") else {
            panic!("tuple");
        };
        let actions = &status[1].as_seq().expect("sections")[1]
            .as_seq()
            .expect("pair")[1];
        let listed = &actions.as_seq().expect("entries")[2]
            .as_seq()
            .expect("pair")[1];
        assert_eq!(listed.as_seq().expect("list").len(), many.len());
    }

    #[test]
    fn kitchen_sink_decodes_in_both_protocols() {
        let mut error = object("builtins", "ValueError", vec![s("bad value")]);
        if let Value::Object(object) = &mut error {
            object.state = Some(Value::Dict(vec![(s("note"), Value::Int(7))]));
        }
        let unique: Vec<Value> = (0..300).map(|i| s(&format!("u{i}"))).collect();
        for (name, bytes) in [
            (
                "kitchen_p2",
                Value::Object(Box::new(Object {
                    module: "_codecs".into(),
                    class: "encode".into(),
                    args: vec![s("by"), s("latin1")],
                    state: None,
                })),
            ),
            ("kitchen_p5", Value::Bytes(b"by".to_vec())),
        ] {
            let expected = Value::Tuple(vec![
                Value::None,
                Value::Bool(true),
                Value::Bool(false),
                Value::Int(-1),
                Value::Int(255),
                Value::Int(65535),
                Value::Int(70000),
                Value::Int(-(1 << 40)),
                Value::Int(1 << 62),
                Value::Float(1.5),
                s("é"),
                bytes,
                Value::List(vec![]),
                Value::List(vec![Value::Int(1), Value::Int(2)]),
                Value::Dict(vec![]),
                Value::Dict(vec![
                    (s("a"), Value::Int(1)),
                    (s("b"), Value::List(vec![Value::Int(2)])),
                ]),
                Value::Tuple(vec![]),
                Value::Tuple((1..=4).map(Value::Int).collect()),
                error.clone(),
                Value::List(unique.clone()),
                s("shared-x"),
                // Fetched from the memo with LONG_BINGET (index > 255).
                Value::List(vec![s("shared-x")]),
            ]);
            assert_eq!(captured(name), expected, "{name}");
        }
    }

    #[test]
    fn commands_encode_as_protocol_2_lists() {
        let bytes = encode_command(&["set", "spamwall", "banip", "2001:db8::7"]).expect("encode");
        assert_eq!(&bytes[..4], &[0x80, 2, b']', b'(']);
        assert_eq!(
            decode(&bytes),
            Ok(Value::List(vec![
                s("set"),
                s("spamwall"),
                s("banip"),
                s("2001:db8::7")
            ]))
        );
        assert_eq!(
            decode(&encode_command(&[]).expect("encode")),
            Ok(Value::List(vec![]))
        );
    }

    #[test]
    fn display_is_pythonic_and_summary_is_bounded() {
        assert_eq!(
            captured("unknown_jail").to_string(),
            "(1, UnknownJailException(\"nojail\"))"
        );
        let long = captured("get_banned_large").summary(50);
        assert!(long.chars().count() <= 51 && long.ends_with('…'), "{long}");
    }

    #[test]
    fn malformed_inputs_are_errors() {
        let cases: &[(&[u8], PickleError)] = &[
            (b"", PickleError::Truncated { offset: 0 }),
            (b"\x80\x05", PickleError::Truncated { offset: 2 }),
            (
                b"K\x01K\x02.",
                PickleError::Malformed {
                    offset: 4,
                    reason: "STOP with more than one value on the stack",
                },
            ),
            (
                b".",
                PickleError::Malformed {
                    offset: 0,
                    reason: "STOP with an empty stack",
                },
            ),
            (
                b"N.x",
                PickleError::Malformed {
                    offset: 1,
                    reason: "bytes after STOP",
                },
            ),
            (
                b"\xff",
                PickleError::UnknownOpcode {
                    opcode: 0xff,
                    offset: 0,
                },
            ),
            (
                b"h\x07",
                PickleError::MissingMemo {
                    index: 7,
                    offset: 0,
                },
            ),
            (b"\x8c\x02\xff\xfe.", PickleError::InvalidUtf8 { offset: 2 }),
            (
                b"(a",
                PickleError::Malformed {
                    offset: 1,
                    reason: "stack underflow",
                },
            ),
            (
                b"N(N\x86",
                PickleError::Malformed {
                    offset: 3,
                    reason: "tuple of more values than the stack holds",
                },
            ),
            (
                b"Ne",
                PickleError::Malformed {
                    offset: 1,
                    reason: "no MARK to pop to",
                },
            ),
            (
                b"\x8d\xff\xff\xff\xff\xff\xff\xff\xff",
                PickleError::Truncated { offset: 9 },
            ),
            (b"X\xff\xff\xff\xff", PickleError::Truncated { offset: 5 }),
            (
                b"\x8a\x09123456789",
                PickleError::Malformed {
                    offset: 0,
                    reason: "integer wider than 64 bits",
                },
            ),
            (
                b"N)R",
                PickleError::Malformed {
                    offset: 2,
                    reason: "REDUCE of something other than a class",
                },
            ),
            (
                b"\x80\x06",
                PickleError::Malformed {
                    offset: 0,
                    reason: "protocol newer than 5",
                },
            ),
            (
                b"(N.",
                PickleError::Malformed {
                    offset: 2,
                    reason: "MARK without its closing opcode",
                },
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(decode(input).as_ref(), Err(expected), "{input:?}");
        }
    }

    #[test]
    fn memo_misuse_and_extension_opcodes_are_errors() {
        assert_eq!(
            decode(b"j\xff\xff\xff\xff."),
            Err(PickleError::MissingMemo {
                index: u64::from(u32::MAX),
                offset: 0,
            })
        );
        assert_eq!(
            decode(b"\x94N."),
            Err(PickleError::Malformed {
                offset: 0,
                reason: "stack underflow",
            })
        );
        // EXT1: a class from the copyreg extension registry.
        assert_eq!(
            decode(b"\x82\x01N."),
            Err(PickleError::UnknownOpcode {
                opcode: 0x82,
                offset: 0,
            })
        );
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut input = vec![b']'; 10_000];
        input.extend(std::iter::repeat_n(b'a', 9_999));
        input.push(b'.');
        assert!(matches!(decode(&input), Err(PickleError::TooDeep { .. })));
        let mut tuples = vec![b'N'];
        tuples.extend(std::iter::repeat_n(0x85, 1_000_000));
        tuples.push(b'.');
        assert!(matches!(decode(&tuples), Err(PickleError::TooDeep { .. })));
        // {1: {1: {1: …}}} filled from the inside out by SETITEM.
        let mut dicts = vec![b'}'];
        for _ in 0..10_000 {
            dicts.extend_from_slice(b"K\x01}");
        }
        dicts.extend(std::iter::repeat_n(b's', 10_000));
        dicts.push(b'.');
        assert!(matches!(decode(&dicts), Err(PickleError::TooDeep { .. })));
        // m.f(m.f(m.f(…))) by REDUCE, and as BUILD state.
        let mut objects = b"cm\nf\n".repeat(10_000);
        objects.push(b'N');
        objects.extend(b"\x85R".repeat(10_000));
        objects.push(b'.');
        assert!(matches!(decode(&objects), Err(PickleError::TooDeep { .. })));
        let mut states = b"cm\nf\n)R".repeat(10_000);
        states.push(b'N');
        states.extend(std::iter::repeat_n(b'b', 10_000));
        states.push(b'.');
        assert!(matches!(decode(&states), Err(PickleError::TooDeep { .. })));
        let mut ok = vec![b'N'];
        ok.extend(std::iter::repeat_n(0x85, MAX_DEPTH));
        ok.push(b'.');
        assert!(decode(&ok).is_ok());
    }

    #[test]
    fn memo_amplification_is_refused() {
        // A 1 KiB string, then 30 rounds of "list of two copies of the
        // previous value", each memoized: 2^30 KiB if copied naively.
        let mut input = vec![b'X'];
        input.extend_from_slice(&1024u32.to_le_bytes());
        input.extend(std::iter::repeat_n(b'a', 1024));
        input.extend_from_slice(b"q\x00");
        for round in 0..30u8 {
            input.extend_from_slice(&[
                b'0',
                b']',
                b'(',
                b'h',
                round,
                b'h',
                round,
                b'e',
                b'q',
                round + 1,
            ]);
        }
        input.push(b'.');
        assert!(
            matches!(decode(&input), Err(PickleError::TooLarge { .. })),
            "{:?}",
            decode(&input).map(|v| v.weight())
        );
        // DUP is charged too.
        let mut dup = vec![b'(', b'X'];
        dup.extend_from_slice(&1024u32.to_le_bytes());
        dup.extend(std::iter::repeat_n(b'a', 1024));
        dup.extend(std::iter::repeat_n(b'2', 100_000));
        dup.extend_from_slice(b"t.");
        assert!(matches!(decode(&dup), Err(PickleError::TooLarge { .. })));
    }

    #[test]
    fn every_truncated_reply_asks_for_more() {
        // The client reads until a reply decodes; a cut reply must say
        // `Truncated` (read on), never decode or fail otherwise.
        for (name, bytes) in CAPTURED {
            let step = if bytes.len() > 4096 { 97 } else { 1 };
            for len in (0..bytes.len()).step_by(step) {
                assert!(
                    matches!(decode(&bytes[..len]), Err(PickleError::Truncated { .. })),
                    "{name} cut at {len}: {:?}",
                    decode(&bytes[..len])
                );
            }
        }
    }

    #[test]
    fn huge_declared_lengths_are_checked_against_the_input() {
        // Lengths are compared with the bytes present before anything is
        // allocated.
        for (opcode, len) in [
            (0x8d, 1u64 << 60), // BINUNICODE8
            (0x8e, 1 << 60),    // BINBYTES8
            (0x8d, u64::MAX),
        ] {
            let mut input = vec![0x80, 5, opcode];
            input.extend_from_slice(&len.to_le_bytes());
            input.extend_from_slice(b"abc.");
            assert_eq!(decode(&input), Err(PickleError::Truncated { offset: 15 }));
        }
        for opcode in [b'X', b'B'] {
            let mut input = vec![opcode];
            input.extend_from_slice(&u32::MAX.to_le_bytes());
            input.extend_from_slice(b"abc.");
            assert_eq!(decode(&input), Err(PickleError::Truncated { offset: 9 }));
        }
        // A FRAME's length is never used: what follows is read as usual.
        let mut frame = vec![0x80, 5, 0x95];
        frame.extend_from_slice(&(1u64 << 63).to_le_bytes());
        frame.extend_from_slice(b"N.");
        assert_eq!(decode(&frame), Ok(Value::None));
    }

    #[test]
    fn globals_are_recorded_never_called() {
        let system = |arg: &str| object("os", "system", vec![s(arg)]);
        // GLOBAL + REDUCE, STACK_GLOBAL + REDUCE (protocol 4), NEWOBJ.
        assert_eq!(
            decode(b"cos\nsystem\n(X\x0a\x00\x00\x00echo pwnedtR."),
            Ok(system("echo pwned"))
        );
        assert_eq!(
            decode(
                b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94\x93\x94\x8c\x0aecho pwned\x94\x85\x94R\x94."
            ),
            Ok(system("echo pwned"))
        );
        assert_eq!(
            decode(b"\x80\x02cos\nsystem\nX\x01\x00\x00\x00x\x85\x81."),
            Ok(system("x"))
        );
        // BUILD only records the state.
        let Ok(Value::Object(built)) =
            decode(b"cos\nsystem\n(X\x01\x00\x00\x00xtR}X\x01\x00\x00\x00aK\x01sb.")
        else {
            panic!("object");
        };
        assert_eq!(
            built.state,
            Some(Value::Dict(vec![(s("a"), Value::Int(1))]))
        );
        // INST and OBJ, protocol 0/1's way to instantiate, are refused.
        assert_eq!(
            decode(b"(X\x0a\x00\x00\x00echo pwnedios\nsystem\n."),
            Err(PickleError::UnknownOpcode {
                opcode: b'i',
                offset: 16
            })
        );
        assert_eq!(
            decode(b"(cos\nsystem\nX\x0a\x00\x00\x00echo pwnedo."),
            Err(PickleError::UnknownOpcode {
                opcode: b'o',
                offset: 27
            })
        );
        // Only builtins.str becomes a string; a lookalike keeps its class.
        assert_eq!(
            decode(
                b"\x80\x02K\x00](cbuiltins\nstr\nX\x09\x00\x00\x00192.0.2.7\x85R\
                  cos\nsystem\nX\x09\x00\x00\x00192.0.2.8\x85Re\x86."
            ),
            Ok(Value::Tuple(vec![
                Value::Int(0),
                Value::List(vec![s("192.0.2.7"), system("192.0.2.8")])
            ]))
        );
    }

    #[test]
    fn floods_of_small_opcodes_stay_within_the_budget() {
        // One-byte opcodes decode to at most one 32-byte value each (or
        // an 8-byte mark), which the budget allows: each flood runs to its
        // structural error, in time linear in its length. Copies of larger
        // values are what the budget refuses (`memo_amplification_is_refused`).
        let more = "STOP with more than one value on the stack";
        let open = "MARK without its closing opcode";
        for (unit, reason) in [
            (&b"N"[..], more),
            (b"]", more),
            (b"N\x94", more),
            (b"(N", open),
            (b"(", open),
            (b"N0", "STOP with an empty stack"),
        ] {
            let mut input = unit.repeat((1 << 21) / unit.len());
            input.push(b'.');
            let started = std::time::Instant::now();
            assert_eq!(
                decode(&input).map(drop),
                Err(PickleError::Malformed {
                    offset: 1 << 21,
                    reason
                }),
                "{unit:?}"
            );
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "{unit:?}: {:?}",
                started.elapsed()
            );
        }
    }

    #[test]
    fn memo_indices_follow_python() {
        // MEMOIZE stores at len(memo), which entries put out of order by
        // BINPUT count towards; pickle.loads gives (8, 10, None, 11).
        assert_eq!(
            decode(b"Nq\x020K\x07\x940K\x08q\x000K\x0aq\x010K\x0b\x940(h\x00h\x01h\x02h\x03t."),
            Ok(Value::Tuple(vec![
                Value::Int(8),
                Value::Int(10),
                Value::None,
                Value::Int(11)
            ]))
        );
    }

    /// xorshift64*: deterministic, so a failure reproduces from its seed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % n as u64).expect("fits")
        }

        fn byte(&mut self) -> u8 {
            self.next().to_le_bytes()[0]
        }
    }

    /// Opcodes the decoder knows, so mutations reach deep code paths.
    const OPCODES: &[u8] =
        b"(.012GJKMNRXBCabcdehjlqrstu})]\x80\x81\x85\x86\x87\x88\x89\x8a\x8c\x8d\x8e\x93\x94\x95";

    #[test]
    fn random_and_mutated_inputs_never_panic() {
        let mut rng = Rng(0x5eed_f2b0_0000_0001);
        let mut decoded = 0;
        for round in 0..20_000 {
            let input: Vec<u8> = if round % 4 == 0 {
                let len = rng.below(64);
                (0..len)
                    .map(|_| {
                        if rng.below(3) == 0 {
                            rng.byte()
                        } else {
                            OPCODES[rng.below(OPCODES.len())]
                        }
                    })
                    .collect()
            } else {
                let (_, seed) = CAPTURED[rng.below(CAPTURED.len())];
                let mut input = seed.to_vec();
                for _ in 0..=rng.below(4) {
                    let at = rng.below(input.len().max(1));
                    match rng.below(5) {
                        0 if !input.is_empty() => input[at] = rng.byte(),
                        1 if !input.is_empty() => input[at] = OPCODES[rng.below(OPCODES.len())],
                        2 => input.insert(at.min(input.len()), OPCODES[rng.below(OPCODES.len())]),
                        3 if !input.is_empty() => {
                            input.remove(at);
                        }
                        _ => input.truncate(at),
                    }
                }
                input
            };
            if decode(&input).is_ok() {
                decoded += 1;
            }
        }
        // Some mutations leave a valid pickle; most do not.
        assert!(decoded > 50, "only {decoded} inputs decoded");
    }
}
