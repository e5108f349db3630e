//! Tests of the pickle machine on its own: the value budget, malformed input, the text
//! (protocol 0) and container opcodes, and the decoding of LONG and raw-unicode-escape
//! payloads.

use super::testing::{malformed_reason, run_pickle, Pickle, TestResult, T};
use super::*;

#[test]
fn value_budget_is_enforced() {
    let mut p = Pickle::new(2);
    p.op(op::NONE);
    for _ in 0..200 {
        p.op(op::DUP);
    }
    let pickle = p.finish();
    let result = Machine::new(&pickle, 100).run().map(|_| ());
    assert_eq!(malformed_reason(result), "more than 100 values; refusing to go on");

    let mut p = Pickle::new(2);
    p.op(op::NONE);
    for i in 0..200u32 {
        p.op(op::LONG_BINPUT).raw(&i.to_le_bytes());
    }
    let pickle = p.finish();
    let result = Machine::new(&pickle, 100).run().map(|_| ());
    assert_eq!(malformed_reason(result), "more than 100 values; refusing to go on");
}

#[test]
fn copies_out_of_shared_objects_are_charged() -> TestResult {
    // One long memoized string named as a module over and over.
    let mut p = Pickle::new(4);
    p.str(&"m".repeat(16_000)).put(0);
    for _ in 0..100 {
        p.get(0).get(0).op(op::STACK_GLOBAL).op(op::POP);
    }
    let pickle = p.finish();
    let result = Machine::new(&pickle, 1000).run().map(|_| ());
    assert_eq!(malformed_reason(result), "more than 1000 values; refusing to go on");

    // One tensor of high rank under many names: each copy made for the state dict
    // is charged.
    let dims = [1i64; 100];
    let mut p = Pickle::new(2);
    p.op(op::EMPTY_DICT).op(op::MARK);
    p.str("t0");
    p.tensor(&T { class: "FloatStorage", key: "0", numel: 1, offset: 0, size: &dims, stride: &dims });
    p.put(0);
    for i in 1..50 {
        p.str(&format!("t{i}")).get(0);
    }
    p.op(op::SETITEMS);
    let pickle = p.finish();
    let mut machine = Machine::new(&pickle, 2000);
    let root = machine.run().map_err(|e| format!("{e:?}"))?;
    let result = machine.tensors_of(root).map(|_| ());
    assert_eq!(malformed_reason(result), "more than 2000 values; refusing to go on");
    let mut machine = Machine::new(&pickle, MAX_VALUES);
    let root = machine.run().map_err(|e| format!("{e:?}"))?;
    let tensors = machine.tensors_of(root).map_err(|e| format!("{e:?}"))?.ok_or("no dict")?;
    assert_eq!(tensors.len(), 50);
    Ok(())
}

#[test]
fn pickle_values_stay_small() {
    assert!(std::mem::size_of::<Value>() <= 16);
    assert!(std::mem::size_of::<Obj>() <= 32);
}

#[test]
fn malformed_pickles_are_errors() {
    let cases: [(&[u8], &str); 9] = [
        (&[op::PROTO, 2], "the pickle ends without STOP"),
        (&[op::PROTO, 2, op::REDUCE, op::STOP], "stack underflow"),
        (&[op::PROTO, 2, op::NONE, op::MARK, op::STOP], "stack underflow"),
        (&[op::PROTO, 2, op::BINGET, 3, op::STOP], "memo entry 3 is not set"),
        (&[op::PROTO, 2, op::APPENDS, op::STOP], "no MARK on the stack"),
        (&[op::PROTO, 2, op::NONE, op::MARK, op::NONE, op::SETITEMS], "odd number of items for a dict"),
        (&[op::PROTO, 2, op::NONE, op::NONE, op::APPEND], "APPEND target is not a list"),
        (&[op::PROTO, 9], "unknown pickle protocol 9"),
        (&[op::PROTO, 2, op::GLOBAL, b'x'], "unterminated text argument"),
    ];
    for (pickle, expected) in cases {
        assert_eq!(malformed_reason(run_pickle(pickle)), expected, "{pickle:?}");
    }
    let mut p = Pickle::new(2);
    p.op(op::MARK).str("storage").op(op::TUPLE1).op(op::BINPERSID);
    let reason = malformed_reason(run_pickle(&p.finish()));
    assert!(reason.starts_with("persistent id is a tuple, not a ('storage'"), "{reason}");
    let reason = malformed_reason(run_pickle(b"Pfoo\n."));
    assert!(reason.starts_with("persistent id is a str"), "{reason}");
}

/// Text (protocol 0) opcodes and the remaining container opcodes.
#[test]
fn text_and_container_opcodes() -> TestResult {
    let mut p = Pickle(Vec::new());
    p.op(op::MARK);
    p.raw(b"Vkey\\u00e9\n").op(op::PUT).raw(b"7\n");
    p.op(op::INT).raw(b"12345678901234567890\n");
    p.raw(b"Vflag\n").op(op::INT).raw(b"01\n");
    p.raw(b"Vlong\n").op(op::LONG).raw(b"-42L\n");
    p.raw(b"Vfloat\n").op(op::FLOAT).raw(b"2.5\n");
    p.raw(b"Vagain\n").op(op::GET).raw(b"7\n");
    p.raw(b"Vlist\n").op(op::MARK).op(op::BININT1).op(1).op(op::BININT2).raw(&[0, 1]).op(op::LIST);
    p.raw(b"Vset\n").op(op::EMPTY_SET).op(op::MARK).op(op::NONE).op(op::ADDITEMS);
    p.raw(b"Vfrozen\n").op(op::MARK).op(op::NONE).op(op::FROZENSET);
    p.raw(b"Vbytes\n").op(op::SHORT_BINBYTES).op(2).raw(b"ab");
    p.raw(b"Vpy2\n").op(op::SHORT_BINSTRING).op(2).raw(b"ab");
    p.raw(b"Vpopped\n").op(op::NONE).op(op::NONE).op(op::POP).op(op::MARK).op(op::NONE).op(op::POP_MARK);
    p.raw(b"Vnewobj_ex\n").global("some.module", "Thing").op(op::EMPTY_TUPLE).op(op::EMPTY_DICT);
    p.op(op::NEWOBJ_EX).op(op::MARK).op(op::NONE).op(op::APPENDS);
    p.raw(b"Vdup\n").op(op::EMPTY_LIST).op(op::DUP).op(op::POP);
    p.op(op::DICT);
    let pickle = p.finish();

    let mut machine = Machine::new(&pickle, MAX_VALUES);
    let root = machine.run().map_err(|e| format!("{e:?}"))?;
    let get = |key| machine.dict_get(root, key).map(|v| machine.describe(v));
    assert_eq!(get("key\u{e9}").as_deref(), Some("a large int"));
    assert_eq!(get("flag").as_deref(), Some("the bool True"));
    assert_eq!(get("long").as_deref(), Some("the int -42"));
    assert_eq!(get("float").as_deref(), Some("the float 2.5"));
    assert_eq!(get("again").as_deref(), Some("a str"));
    assert_eq!(get("list").as_deref(), Some("a list"));
    assert_eq!(get("set").as_deref(), Some("a set"));
    assert_eq!(get("frozen").as_deref(), Some("a set"));
    assert_eq!(get("bytes").as_deref(), Some("a bytes object"));
    assert_eq!(get("py2").as_deref(), Some("a str"));
    assert_eq!(get("popped").as_deref(), Some("None"));
    assert_eq!(get("newobj_ex").as_deref(), Some("an object of class some.module.Thing"));
    assert_eq!(get("dup").as_deref(), Some("a list"));
    let list = machine.dict_get(root, "list").and_then(|v| machine.items(v));
    assert!(matches!(list, Some([Value::Int(1), Value::Int(256)])));
    Ok(())
}

#[test]
fn long_and_escape_decoding() {
    assert!(matches!(decode_long(&[]), Value::Int(0)));
    assert!(matches!(decode_long(&[0xff]), Value::Int(-1)));
    assert!(matches!(decode_long(&[0x00, 0x80]), Value::Int(-32768)));
    assert!(matches!(decode_long(&[0xff, 0x00]), Value::Int(255)));
    assert!(matches!(decode_long(&[1; 9]), Value::BigInt));
    assert_eq!(decode_raw_unicode_escape(b"a\\u00e9\\U0001F600\xe9\\x\\u12"), "a\u{e9}\u{1F600}\u{e9}\\x\\u12");
}
