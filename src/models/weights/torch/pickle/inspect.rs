//! Reading the pickle machine's result: whether a value is a dict, the value of a
//! string key, a dict's string keys with Python's semantics (first position, last
//! value), the tensors of a state dict, and a short description of any value for error
//! messages. Copies made out of shared objects are charged against the machine's budget.

use std::collections::HashMap;

use super::{tensor_units, text_units, Machine, Obj, PResult, Value};
use crate::models::weights::torch::TensorInfo;

impl Machine<'_> {
    pub(in super::super) fn is_dict(&self, value: Value) -> bool {
        matches!(self.obj(value), Some(Obj::Dict(_)))
    }

    /// The value of string key `key` in a dict (the last one set, as in Python).
    pub(in super::super) fn dict_get(&self, dict: Value, key: &str) -> Option<Value> {
        let Some(Obj::Dict(items)) = self.obj(dict) else {
            return None;
        };
        items.iter().rev().find(|(k, _)| self.str_of(*k) == Some(key)).map(|&(_, v)| v)
    }

    /// The distinct string keys of a dict, in insertion order; empty if not a dict.
    pub(in super::super) fn string_keys(&self, dict: Value) -> PResult<Vec<String>> {
        Ok(self.string_items(dict)?.map(|items| items.into_iter().map(|(k, _)| k).collect()).unwrap_or_default())
    }

    /// A dict's string-keyed items with Python semantics: a key keeps its first position
    /// and its last value. `None` if `dict` is not a dict.
    fn string_items(&self, dict: Value) -> PResult<Option<Vec<(String, Value)>>> {
        let Some(Obj::Dict(items)) = self.obj(dict) else {
            return Ok(None);
        };
        let mut out: Vec<(String, Value)> = Vec::new();
        // Keys are looked up by object first, so that one (possibly long) memoized key
        // used many times is hashed only once.
        let mut by_object: HashMap<usize, usize> = HashMap::new();
        let mut by_text: HashMap<&str, usize> = HashMap::new();
        for &(k, v) in items {
            let Value::Ref(id) = k else { continue };
            if let Some(&i) = by_object.get(&id) {
                out[i].1 = v;
                continue;
            }
            let Some(text) = self.str_of(k) else { continue };
            let i = match by_text.get(text) {
                Some(&i) => {
                    out[i].1 = v;
                    i
                }
                None => {
                    self.spend(text_units(text.len()))?;
                    by_text.insert(text, out.len());
                    out.push((text.to_owned(), v));
                    out.len() - 1
                }
            };
            by_object.insert(id, i);
        }
        Ok(Some(out))
    }

    /// The tensors of a state dict, or `None` if `dict` is not a dict.
    pub(in super::super) fn tensors_of(&self, dict: Value) -> PResult<Option<Vec<(String, TensorInfo)>>> {
        let Some(items) = self.string_items(dict)? else {
            return Ok(None);
        };
        let mut tensors = Vec::new();
        for (name, v) in items {
            if let Some(Obj::Tensor(info)) = self.obj(v) {
                self.spend(tensor_units(info))?;
                tensors.push((name, TensorInfo::clone(info)));
            }
        }
        Ok(Some(tensors))
    }

    /// A short description of a value for error messages ("a list", "an int"…).
    pub(in super::super) fn describe(&self, value: Value) -> String {
        match value {
            Value::None => "None".into(),
            Value::Bool(b) => format!("the bool {}", if b { "True" } else { "False" }),
            Value::Int(i) => format!("the int {i}"),
            Value::BigInt => "a large int".into(),
            Value::Float(f) => format!("the float {f}"),
            Value::Ref(_) => match self.obj(value) {
                Some(Obj::Str(_)) => "a str".into(),
                Some(Obj::Bytes) => "a bytes object".into(),
                Some(Obj::Tuple(_)) => "a tuple".into(),
                Some(Obj::List(_)) => "a list".into(),
                Some(Obj::Dict(_)) => "a dict".into(),
                Some(Obj::Set(_)) => "a set".into(),
                Some(Obj::Global(global)) => {
                    format!("the class {}.{}", global.module, global.name)
                }
                Some(Obj::Storage(_)) => "a storage".into(),
                Some(Obj::Tensor(_)) => "a tensor".into(),
                Some(Obj::Object { class }) => match self.obj(*class) {
                    Some(Obj::Global(global)) => {
                        format!("an object of class {}.{}", global.module, global.name)
                    }
                    _ => "an object".into(),
                },
                None => "an unknown value".into(),
            },
        }
    }
}
