//! The decoder: a stack machine over the opcodes fail2ban's replies use,
//! charging every value against the budget.

use std::collections::HashMap;

use super::{
    BUDGET_BASE, BUDGET_PER_INPUT_BYTE, Global, MAX_DEPTH, Object, PickleError, Value, op,
};

pub(super) struct Decoder<'a> {
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
    pub(super) fn new(input: &'a [u8]) -> Self {
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

    pub(super) fn run(mut self) -> Result<Value, PickleError> {
        self.execute()
    }

    /// [`Decoder::run`], also returning what the decode spent and the
    /// budget it had, for tests of the budget itself.
    #[cfg(test)]
    pub(super) fn run_measured(mut self) -> (Result<Value, PickleError>, usize, usize) {
        let result = self.execute();
        (result, self.spent, self.budget)
    }

    fn execute(&mut self) -> Result<Value, PickleError> {
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
