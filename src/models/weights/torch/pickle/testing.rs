//! Test support: a pickle assembler ([`Pickle`]) for writing the opcode sequences
//! `torch.save` emits (and hostile ones) by hand, the arguments of one tensor ([`T`]),
//! and helpers that run the machine and pick out a malformed-pickle reason. Used by the
//! tests of `pickle` and of the whole reader.

use super::{op, Machine, PickleError, MAX_VALUES};

pub(in super::super) type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A hand-assembled pickle byte string.
pub(in super::super) struct Pickle(pub(super) Vec<u8>);

/// Arguments of one `_rebuild_tensor_v2` call.
pub(in super::super) struct T<'a> {
    pub(in super::super) class: &'a str,
    pub(in super::super) key: &'a str,
    pub(in super::super) numel: i64,
    pub(in super::super) offset: i64,
    pub(in super::super) size: &'a [i64],
    pub(in super::super) stride: &'a [i64],
}

impl Pickle {
    pub(in super::super) fn new(protocol: u8) -> Self {
        Self(vec![op::PROTO, protocol])
    }

    pub(in super::super) fn op(&mut self, opcode: u8) -> &mut Self {
        self.0.push(opcode);
        self
    }

    pub(in super::super) fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }

    pub(in super::super) fn str(&mut self, s: &str) -> &mut Self {
        let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
        self.op(op::BINUNICODE).raw(&len.to_le_bytes()).raw(s.as_bytes())
    }

    /// An int: BININT when it fits, else LONG1.
    pub(in super::super) fn int(&mut self, v: i64) -> &mut Self {
        match i32::try_from(v) {
            Ok(v) => self.op(op::BININT).raw(&v.to_le_bytes()),
            Err(_) => self.op(op::LONG1).op(8).raw(&v.to_le_bytes()),
        }
    }

    pub(in super::super) fn float(&mut self, v: f64) -> &mut Self {
        self.op(op::BINFLOAT).raw(&v.to_be_bytes())
    }

    pub(in super::super) fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.op(op::GLOBAL).raw(module.as_bytes()).op(b'\n').raw(name.as_bytes()).op(b'\n')
    }

    pub(in super::super) fn put(&mut self, index: u8) -> &mut Self {
        self.op(op::BINPUT).op(index)
    }

    pub(in super::super) fn get(&mut self, index: u8) -> &mut Self {
        self.op(op::BINGET).op(index)
    }

    pub(in super::super) fn ordered_dict(&mut self) -> &mut Self {
        self.global("collections", "OrderedDict").op(op::EMPTY_TUPLE).op(op::REDUCE)
    }

    pub(in super::super) fn int_tuple(&mut self, values: &[i64]) -> &mut Self {
        self.op(op::MARK);
        for &v in values {
            self.int(v);
        }
        self.op(op::TUPLE)
    }

    pub(in super::super) fn storage(&mut self, class: &str, key: &str, numel: i64) -> &mut Self {
        self.op(op::MARK)
            .str("storage")
            .global("torch", class)
            .str(key)
            .str("cpu")
            .int(numel)
            .op(op::TUPLE)
            .op(op::BINPERSID)
    }

    pub(in super::super) fn tensor(&mut self, t: &T) -> &mut Self {
        self.global("torch._utils", "_rebuild_tensor_v2")
            .op(op::MARK)
            .storage(t.class, t.key, t.numel)
            .int(t.offset)
            .int_tuple(t.size)
            .int_tuple(t.stride)
            .op(op::NEWFALSE)
            .ordered_dict()
            .op(op::TUPLE)
            .op(op::REDUCE)
    }

    pub(in super::super) fn finish(&mut self) -> Vec<u8> {
        self.op(op::STOP);
        self.0.clone()
    }
}

pub(in super::super) fn run_pickle(data: &[u8]) -> Result<(), PickleError> {
    Machine::new(data, MAX_VALUES).run().map(|_| ())
}

pub(in super::super) fn malformed_reason(result: Result<(), PickleError>) -> String {
    match result {
        Err(PickleError::Malformed { reason, .. }) => reason,
        other => format!("unexpected: {other:?}"),
    }
}
