//! The pickle virtual machine that reads `data.pkl`: bounded and panic-free.
//!
//! It understands the opcodes `torch.save` emits (protocols 2 to 5) and nothing from the
//! file is ever executed or imported. Objects live in a flat arena and containers refer
//! to their items by index, so no nesting depth can overflow the stack; every value
//! created is charged against a budget ([`MAX_VALUES`]); every length read from the
//! file is checked against the bytes that remain. Malformed input gives a
//! [`PickleError`] with the byte offset of the opcode, never a panic.
//!
//! - `mod.rs`: the opcodes, the machine's values and objects, reading input, the stack
//!   and memo, and the main loop.
//! - `rebuild.rs`: what `torch.save`'s callables (`_rebuild_tensor_v2`,
//!   `_rebuild_parameter`, `OrderedDict`…) and persistent ids (storages) mean.
//! - `inspect.rs`: reading the result: dicts, their string keys, the tensors of a state
//!   dict, and short descriptions of values for error messages.
//! - `testing.rs` (tests only): a pickle assembler and helpers, shared with the tests
//!   of the whole reader.
//! - `tests.rs`: tests of the machine on its own.

mod inspect;
mod rebuild;
#[cfg(test)]
pub(super) mod testing;
#[cfg(test)]
mod tests;

use std::cell::Cell;
use std::collections::HashMap;
use std::path::Path;

use super::{DType, TensorInfo, TorchError};

/// The pickle machine's budget, in values (about 16 bytes each): every stack push, mark
/// and memo entry costs one, and copying text or tensor metadata out of existing objects
/// costs in proportion. This bounds its memory to a few hundred MB whatever the file.
pub(super) const MAX_VALUES: usize = 10_000_000;

/// Pickle opcodes (see CPython's `Lib/pickle.py`).
pub(super) mod op {
    pub const MARK: u8 = b'(';
    pub const STOP: u8 = b'.';
    pub const POP: u8 = b'0';
    pub const POP_MARK: u8 = b'1';
    pub const DUP: u8 = b'2';
    pub const FLOAT: u8 = b'F';
    pub const INT: u8 = b'I';
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const LONG: u8 = b'L';
    pub const BININT2: u8 = b'M';
    pub const NONE: u8 = b'N';
    pub const PERSID: u8 = b'P';
    pub const BINPERSID: u8 = b'Q';
    pub const REDUCE: u8 = b'R';
    pub const BINSTRING: u8 = b'T';
    pub const SHORT_BINSTRING: u8 = b'U';
    pub const UNICODE: u8 = b'V';
    pub const BINUNICODE: u8 = b'X';
    pub const APPEND: u8 = b'a';
    pub const BUILD: u8 = b'b';
    pub const GLOBAL: u8 = b'c';
    pub const DICT: u8 = b'd';
    pub const EMPTY_DICT: u8 = b'}';
    pub const APPENDS: u8 = b'e';
    pub const GET: u8 = b'g';
    pub const BINGET: u8 = b'h';
    pub const LONG_BINGET: u8 = b'j';
    pub const LIST: u8 = b'l';
    pub const EMPTY_LIST: u8 = b']';
    pub const PUT: u8 = b'p';
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const SETITEM: u8 = b's';
    pub const TUPLE: u8 = b't';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const SETITEMS: u8 = b'u';
    pub const BINFLOAT: u8 = b'G';
    pub const BINBYTES: u8 = b'B';
    pub const SHORT_BINBYTES: u8 = b'C';
    pub const PROTO: u8 = 0x80;
    pub const NEWOBJ: u8 = 0x81;
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const LONG1: u8 = 0x8a;
    pub const LONG4: u8 = 0x8b;
    pub const SHORT_BINUNICODE: u8 = 0x8c;
    pub const BINUNICODE8: u8 = 0x8d;
    pub const BINBYTES8: u8 = 0x8e;
    pub const EMPTY_SET: u8 = 0x8f;
    pub const ADDITEMS: u8 = 0x90;
    pub const FROZENSET: u8 = 0x91;
    pub const NEWOBJ_EX: u8 = 0x92;
    pub const STACK_GLOBAL: u8 = 0x93;
    pub const MEMOIZE: u8 = 0x94;
    pub const FRAME: u8 = 0x95;
    pub const BYTEARRAY8: u8 = 0x96;
}

/// A pickle value: scalars inline, everything else an index into the machine's arena.
#[derive(Debug, Clone, Copy)]
pub(super) enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer that does not fit in i64 (its digits are not kept).
    BigInt,
    Float(f64),
    Ref(usize),
}

/// A heap object of the pickle machine. Containers refer to their items by [`Value`], so
/// sharing and mutation through the memo behave as in Python, and dropping the arena
/// never recurses.
#[derive(Debug)]
enum Obj {
    Str(String),
    /// Bytes objects (their content is never needed).
    Bytes,
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Set(Vec<Value>),
    /// A class or function named by GLOBAL / STACK_GLOBAL.
    Global(Box<GlobalName>),
    Storage(Box<StorageRef>),
    Tensor(Box<TensorInfo>),
    /// An instance of a class this reader does not interpret; its state is dropped.
    Object {
        class: Value,
    },
}

#[derive(Debug)]
struct GlobalName {
    module: String,
    name: String,
}

#[derive(Debug)]
struct StorageRef {
    dtype: DType,
    key: String,
    location: String,
}

/// Budget units for copying `len` bytes of text.
fn text_units(len: usize) -> usize {
    len / 16 + 1
}

/// Budget units for a copy of `info`.
fn tensor_units(info: &TensorInfo) -> usize {
    let dtype_len = match &info.dtype {
        DType::Other(name) => name.len(),
        _ => 0,
    };
    1 + info.shape.len() + info.stride.len() + text_units(info.storage_key.len() + info.location.len() + dtype_len)
}

#[derive(Debug)]
pub(super) enum PickleError {
    Unsupported { opcode: u8, offset: usize },
    Malformed { offset: usize, reason: String },
}

impl PickleError {
    pub(super) fn into_torch(self, path: &Path) -> TorchError {
        match self {
            Self::Unsupported { opcode, offset } => {
                TorchError::UnsupportedOpcode { path: path.to_owned(), opcode, offset }
            }
            Self::Malformed { offset, reason } => TorchError::Pickle { path: path.to_owned(), offset, reason },
        }
    }
}

pub(super) type PResult<T> = Result<T, PickleError>;

pub(super) struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    /// Offset of the opcode being executed, for error messages.
    op_start: usize,
    stack: Vec<Value>,
    /// Stack lengths at each open MARK.
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    arena: Vec<Obj>,
    /// What is left of the budget (see [`MAX_VALUES`]); a `Cell` so that code reading
    /// the arena can charge it too.
    budget: Cell<usize>,
    max_values: usize,
}

impl<'a> Machine<'a> {
    pub(super) fn new(data: &'a [u8], max_values: usize) -> Self {
        Self {
            data,
            pos: 0,
            op_start: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            arena: Vec::new(),
            budget: Cell::new(max_values),
            max_values,
        }
    }

    fn malformed(&self, reason: impl Into<String>) -> PickleError {
        PickleError::Malformed { offset: self.op_start, reason: reason.into() }
    }

    // --- input ---------------------------------------------------------------------

    fn take(&mut self, len: usize) -> PResult<&'a [u8]> {
        let data = self.data;
        let remaining = data.len() - self.pos;
        if len > remaining {
            return Err(self.malformed(format!("needs {len} bytes but only {remaining} remain")));
        }
        let bytes = &data[self.pos..self.pos + len];
        self.pos += len;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> PResult<[u8; N]> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn u8(&mut self) -> PResult<u8> {
        Ok(self.array::<1>()?[0])
    }

    /// A length read from the file, checked against the bytes that remain.
    fn sized(&mut self, len: u64, what: &str) -> PResult<&'a [u8]> {
        let remaining = self.data.len() - self.pos;
        match usize::try_from(len) {
            Ok(len) if len <= remaining => self.take(len),
            _ => Err(self.malformed(format!("{what} claims {len} bytes but only {remaining} remain"))),
        }
    }

    /// A signed 32-bit length (BINSTRING, LONG4).
    fn signed_len(&mut self, what: &str) -> PResult<&'a [u8]> {
        let len = i32::from_le_bytes(self.array()?);
        let len = u64::try_from(len).map_err(|_| self.malformed(format!("{what} has negative length {len}")))?;
        self.sized(len, what)
    }

    /// A newline-terminated line (text opcodes), without the newline.
    fn line(&mut self) -> PResult<&'a [u8]> {
        let data = self.data;
        let rest = &data[self.pos..];
        let end = rest.iter().position(|&b| b == b'\n').ok_or_else(|| self.malformed("unterminated text argument"))?;
        self.pos += end + 1;
        Ok(&rest[..end])
    }

    fn line_str(&mut self) -> PResult<&'a str> {
        let line = self.line()?;
        std::str::from_utf8(line).map_err(|_| self.malformed("text argument is not UTF-8"))
    }

    // --- stack -----------------------------------------------------------------------

    /// Charge `units` against the budget.
    fn spend(&self, units: usize) -> PResult<()> {
        match self.budget.get().checked_sub(units) {
            Some(left) => {
                self.budget.set(left);
                Ok(())
            }
            None => Err(self.malformed(format!("more than {} values; refusing to go on", self.max_values))),
        }
    }

    fn push(&mut self, value: Value) -> PResult<()> {
        self.spend(1)?;
        self.stack.push(value);
        Ok(())
    }

    fn push_obj(&mut self, obj: Obj) -> PResult<()> {
        let value = self.alloc(obj);
        self.push(value)
    }

    fn alloc(&mut self, obj: Obj) -> Value {
        self.arena.push(obj);
        Value::Ref(self.arena.len() - 1)
    }

    /// The stack length below which the current MARK protects the items.
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> PResult<Value> {
        if self.stack.len() <= self.floor() {
            return Err(self.malformed("stack underflow"));
        }
        self.stack.pop().ok_or_else(|| self.malformed("stack underflow"))
    }

    fn top(&self) -> PResult<Value> {
        if self.stack.len() <= self.floor() {
            return Err(self.malformed("stack underflow"));
        }
        self.stack.last().copied().ok_or_else(|| self.malformed("stack underflow"))
    }

    fn pop_mark(&mut self) -> PResult<Vec<Value>> {
        let mark = self.marks.pop().ok_or_else(|| self.malformed("no MARK on the stack"))?;
        Ok(self.stack.split_off(mark))
    }

    fn memo_put(&mut self, index: u32) -> PResult<()> {
        let value = self.top()?;
        self.spend(1)?;
        self.memo.insert(index, value);
        Ok(())
    }

    fn memo_get(&mut self, index: u32) -> PResult<()> {
        let value = *self.memo.get(&index).ok_or_else(|| self.malformed(format!("memo entry {index} is not set")))?;
        self.push(value)
    }

    fn obj(&self, value: Value) -> Option<&Obj> {
        match value {
            Value::Ref(i) => self.arena.get(i),
            _ => None,
        }
    }

    fn obj_mut(&mut self, value: Value) -> Option<&mut Obj> {
        match value {
            Value::Ref(i) => self.arena.get_mut(i),
            _ => None,
        }
    }

    fn str_of(&self, value: Value) -> Option<&str> {
        match self.obj(value) {
            Some(Obj::Str(s)) => Some(s),
            _ => None,
        }
    }

    // --- the main loop ---------------------------------------------------------------

    /// Run until STOP and return the pickled object.
    pub(super) fn run(&mut self) -> PResult<Value> {
        loop {
            self.op_start = self.pos;
            let opcode = self.u8().map_err(|_| self.malformed("the pickle ends without STOP"))?;
            match opcode {
                op::PROTO => {
                    let version = self.u8()?;
                    if version > 5 {
                        return Err(self.malformed(format!("unknown pickle protocol {version}")));
                    }
                }
                op::FRAME => {
                    // A size hint for buffered reading; the data is not framed otherwise.
                    self.array::<8>()?;
                }
                op::STOP => return self.pop(),
                op::MARK => {
                    self.spend(1)?;
                    self.marks.push(self.stack.len());
                }
                op::POP => {
                    if self.stack.len() > self.floor() {
                        self.stack.pop();
                    } else if self.marks.pop().is_none() {
                        return Err(self.malformed("stack underflow"));
                    }
                }
                op::POP_MARK => {
                    self.pop_mark()?;
                }
                op::DUP => {
                    let value = self.top()?;
                    self.push(value)?;
                }

                // Scalars.
                op::NONE => self.push(Value::None)?,
                op::NEWTRUE => self.push(Value::Bool(true))?,
                op::NEWFALSE => self.push(Value::Bool(false))?,
                op::BININT => {
                    let v = i32::from_le_bytes(self.array()?);
                    self.push(Value::Int(v.into()))?;
                }
                op::BININT1 => {
                    let v = self.u8()?;
                    self.push(Value::Int(v.into()))?;
                }
                op::BININT2 => {
                    let v = u16::from_le_bytes(self.array()?);
                    self.push(Value::Int(v.into()))?;
                }
                op::INT => {
                    let value = match self.line_str()? {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        text => self.parse_int(text)?,
                    };
                    self.push(value)?;
                }
                op::LONG => {
                    let text = self.line_str()?;
                    let value = self.parse_int(text.strip_suffix('L').unwrap_or(text))?;
                    self.push(value)?;
                }
                op::LONG1 => {
                    let len = self.u8()?;
                    let bytes = self.take(len.into())?;
                    self.push(decode_long(bytes))?;
                }
                op::LONG4 => {
                    let bytes = self.signed_len("LONG4")?;
                    self.push(decode_long(bytes))?;
                }
                op::BINFLOAT => {
                    let v = f64::from_be_bytes(self.array()?);
                    self.push(Value::Float(v))?;
                }
                op::FLOAT => {
                    let text = self.line_str()?;
                    let v =
                        text.trim().parse::<f64>().map_err(|_| self.malformed(format!("invalid float '{text}'")))?;
                    self.push(Value::Float(v))?;
                }

                // Strings and bytes.
                op::BINUNICODE => {
                    let len = u32::from_le_bytes(self.array()?);
                    let bytes = self.sized(len.into(), "BINUNICODE")?;
                    self.push_str(bytes)?;
                }
                op::SHORT_BINUNICODE => {
                    let len = self.u8()?;
                    let bytes = self.sized(len.into(), "SHORT_BINUNICODE")?;
                    self.push_str(bytes)?;
                }
                op::BINUNICODE8 => {
                    let len = u64::from_le_bytes(self.array()?);
                    let bytes = self.sized(len, "BINUNICODE8")?;
                    self.push_str(bytes)?;
                }
                op::UNICODE => {
                    let line = self.line()?;
                    self.push_obj(Obj::Str(decode_raw_unicode_escape(line)))?;
                }
                op::BINSTRING => {
                    let bytes = self.signed_len("BINSTRING")?;
                    self.push_str(bytes)?;
                }
                op::SHORT_BINSTRING => {
                    let len = self.u8()?;
                    let bytes = self.sized(len.into(), "SHORT_BINSTRING")?;
                    self.push_str(bytes)?;
                }
                op::BINBYTES => {
                    let len = u32::from_le_bytes(self.array()?);
                    self.sized(len.into(), "BINBYTES")?;
                    self.push_obj(Obj::Bytes)?;
                }
                op::SHORT_BINBYTES => {
                    let len = self.u8()?;
                    self.sized(len.into(), "SHORT_BINBYTES")?;
                    self.push_obj(Obj::Bytes)?;
                }
                op::BINBYTES8 | op::BYTEARRAY8 => {
                    let len = u64::from_le_bytes(self.array()?);
                    self.sized(len, "BINBYTES8")?;
                    self.push_obj(Obj::Bytes)?;
                }

                // Containers.
                op::EMPTY_TUPLE => self.push_obj(Obj::Tuple(Vec::new()))?,
                op::TUPLE => {
                    let items = self.pop_mark()?;
                    self.push_obj(Obj::Tuple(items))?;
                }
                op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                    let n = usize::from(opcode - op::TUPLE1) + 1;
                    let mut items = vec![Value::None; n];
                    for slot in items.iter_mut().rev() {
                        *slot = self.pop()?;
                    }
                    self.push_obj(Obj::Tuple(items))?;
                }
                op::EMPTY_LIST => self.push_obj(Obj::List(Vec::new()))?,
                op::LIST => {
                    let items = self.pop_mark()?;
                    self.push_obj(Obj::List(items))?;
                }
                op::EMPTY_DICT => self.push_obj(Obj::Dict(Vec::new()))?,
                op::DICT => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    self.push_obj(Obj::Dict(pairs))?;
                }
                op::EMPTY_SET => self.push_obj(Obj::Set(Vec::new()))?,
                op::FROZENSET => {
                    let items = self.pop_mark()?;
                    self.push_obj(Obj::Set(items))?;
                }
                op::APPEND => {
                    let item = self.pop()?;
                    self.extend_list(vec![item], "APPEND")?;
                }
                op::APPENDS => {
                    let items = self.pop_mark()?;
                    self.extend_list(items, "APPENDS")?;
                }
                op::SETITEM => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    self.extend_dict(vec![(key, value)], "SETITEM")?;
                }
                op::SETITEMS => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    self.extend_dict(pairs, "SETITEMS")?;
                }
                op::ADDITEMS => {
                    let items = self.pop_mark()?;
                    let target = self.top()?;
                    match self.obj_mut(target) {
                        Some(Obj::Set(set)) => set.extend(items),
                        Some(Obj::Object { .. }) => {}
                        _ => return Err(self.malformed("ADDITEMS target is not a set")),
                    }
                }

                // Memo.
                op::BINPUT => {
                    let index = self.u8()?;
                    self.memo_put(index.into())?;
                }
                op::LONG_BINPUT => {
                    let index = u32::from_le_bytes(self.array()?);
                    self.memo_put(index)?;
                }
                op::PUT => {
                    let index = self.memo_index()?;
                    self.memo_put(index)?;
                }
                op::MEMOIZE => {
                    let index = u32::try_from(self.memo.len()).map_err(|_| self.malformed("memo is full"))?;
                    self.memo_put(index)?;
                }
                op::BINGET => {
                    let index = self.u8()?;
                    self.memo_get(index.into())?;
                }
                op::LONG_BINGET => {
                    let index = u32::from_le_bytes(self.array()?);
                    self.memo_get(index)?;
                }
                op::GET => {
                    let index = self.memo_index()?;
                    self.memo_get(index)?;
                }

                // Classes, objects and persistent ids.
                op::GLOBAL => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push_obj(Obj::Global(Box::new(GlobalName {
                        module: String::from_utf8_lossy(module).into_owned(),
                        name: String::from_utf8_lossy(name).into_owned(),
                    })))?;
                }
                op::STACK_GLOBAL => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Some(module), Some(name)) = (self.str_of(module), self.str_of(name)) else {
                        return Err(self.malformed("STACK_GLOBAL needs two strings"));
                    };
                    let global = GlobalName { module: module.to_owned(), name: name.to_owned() };
                    self.spend(text_units(global.module.len() + global.name.len()))?;
                    self.push_obj(Obj::Global(Box::new(global)))?;
                }
                op::REDUCE => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let value = self.reduce(func, args, 0)?;
                    self.push(value)?;
                }
                op::NEWOBJ => {
                    let _args = self.pop()?;
                    let class = self.pop()?;
                    let value = self.new_object(class);
                    self.push(value)?;
                }
                op::NEWOBJ_EX => {
                    let _kwargs = self.pop()?;
                    let _args = self.pop()?;
                    let class = self.pop()?;
                    let value = self.new_object(class);
                    self.push(value)?;
                }
                op::BUILD => {
                    // The state only matters to classes this reader does not interpret
                    // (and to an OrderedDict's `_metadata`), so it is dropped.
                    let _state = self.pop()?;
                    self.top()?;
                }
                op::BINPERSID => {
                    let pid = self.pop()?;
                    let value = self.persistent_load(pid)?;
                    self.push(value)?;
                }
                op::PERSID => {
                    let line = self.line()?;
                    let pid = self.alloc(Obj::Str(String::from_utf8_lossy(line).into_owned()));
                    let value = self.persistent_load(pid)?;
                    self.push(value)?;
                }
                opcode => return Err(PickleError::Unsupported { opcode, offset: self.op_start }),
            }
        }
    }

    fn parse_int(&self, text: &str) -> PResult<Value> {
        let text = text.trim();
        if let Ok(v) = text.parse::<i64>() {
            return Ok(Value::Int(v));
        }
        let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Value::BigInt)
        } else {
            Err(self.malformed(format!("invalid integer '{text}'")))
        }
    }

    fn memo_index(&mut self) -> PResult<u32> {
        let text = self.line_str()?;
        text.trim().parse().map_err(|_| self.malformed(format!("invalid memo index '{text}'")))
    }

    fn push_str(&mut self, bytes: &[u8]) -> PResult<()> {
        self.push_obj(Obj::Str(String::from_utf8_lossy(bytes).into_owned()))
    }

    fn pairs(&self, items: Vec<Value>) -> PResult<Vec<(Value, Value)>> {
        if !items.len().is_multiple_of(2) {
            return Err(self.malformed("odd number of items for a dict"));
        }
        Ok(items.chunks_exact(2).map(|kv| (kv[0], kv[1])).collect())
    }

    fn extend_list(&mut self, items: Vec<Value>, opname: &str) -> PResult<()> {
        let target = self.top()?;
        match self.obj_mut(target) {
            Some(Obj::List(list)) => list.extend(items),
            // list subclasses of unknown classes: the items are not needed.
            Some(Obj::Object { .. }) => {}
            _ => return Err(self.malformed(format!("{opname} target is not a list"))),
        }
        Ok(())
    }

    fn extend_dict(&mut self, pairs: Vec<(Value, Value)>, opname: &str) -> PResult<()> {
        let target = self.top()?;
        match self.obj_mut(target) {
            Some(Obj::Dict(dict)) => dict.extend(pairs),
            // dict subclasses of unknown classes: the items are not needed.
            Some(Obj::Object { .. }) => {}
            _ => return Err(self.malformed(format!("{opname} target is not a dict"))),
        }
        Ok(())
    }
}

/// LONG1 / LONG4 payload: little-endian two's complement.
fn decode_long(bytes: &[u8]) -> Value {
    if bytes.len() > 8 {
        return Value::BigInt;
    }
    let Some(&last) = bytes.last() else {
        return Value::Int(0);
    };
    let fill = if last & 0x80 != 0 { 0xff } else { 0 };
    let mut array = [fill; 8];
    array[..bytes.len()].copy_from_slice(bytes);
    Value::Int(i64::from_le_bytes(array))
}

/// Python's `raw-unicode-escape`: Latin-1 text with `\uXXXX` and `\UXXXXXXXX` escapes.
fn decode_raw_unicode_escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let digits = match bytes.get(i + 1) {
                Some(b'u') => 4,
                Some(b'U') => 8,
                _ => 0,
            };
            let escaped = bytes
                .get(i + 2..i + 2 + digits)
                .filter(|_| digits > 0)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .and_then(char::from_u32);
            if let Some(c) = escaped {
                out.push(c);
                i += 2 + digits;
                continue;
            }
        }
        out.push(char::from(bytes[i]));
        i += 1;
    }
    out
}
