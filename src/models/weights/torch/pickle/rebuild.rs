//! What `torch.save`'s objects mean to the pickle machine: REDUCE and NEWOBJ calls of
//! `torch._utils._rebuild_tensor_v2` / `_rebuild_parameter`,
//! `torch._tensor._rebuild_from_type_v2` and dict classes (`collections.OrderedDict`…)
//! become tensors and dicts, persistent ids become storage references, and every other
//! callable becomes an opaque object whose state is dropped. Tensor arguments are
//! checked (non-negative, matching ranks) before a [`TensorInfo`] is made.

use super::{tensor_units, text_units, Machine, Obj, PResult, StorageRef, Value};
use crate::models::weights::torch::{DType, TensorInfo};

/// How deeply `torch._tensor._rebuild_from_type_v2` wrappers may nest.
const MAX_REBUILD_DEPTH: usize = 4;

/// What a REDUCE / NEWOBJ callable means to this reader.
enum Callable {
    RebuildTensor,
    RebuildParameter,
    RebuildFromType,
    DictClass,
    Other,
}

impl Machine<'_> {
    fn classify(&self, func: Value) -> Callable {
        let Some(Obj::Global(global)) = self.obj(func) else {
            return Callable::Other;
        };
        match (global.module.as_str(), global.name.as_str()) {
            ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => Callable::RebuildTensor,
            ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => Callable::RebuildParameter,
            ("torch._tensor", "_rebuild_from_type_v2") => Callable::RebuildFromType,
            ("collections", "OrderedDict" | "defaultdict") | ("builtins" | "__builtin__", "dict") => {
                Callable::DictClass
            }
            _ => Callable::Other,
        }
    }

    /// The items of a tuple (or list) value.
    pub(super) fn items(&self, value: Value) -> Option<&[Value]> {
        match self.obj(value) {
            Some(Obj::Tuple(items) | Obj::List(items)) => Some(items),
            _ => None,
        }
    }

    /// REDUCE: call `func(*args)` for the callables torch.save uses, else make an opaque
    /// object.
    pub(super) fn reduce(&mut self, func: Value, args: Value, depth: usize) -> PResult<Value> {
        match self.classify(func) {
            Callable::RebuildTensor => {
                let tensor = self.rebuild_tensor(args)?;
                self.spend(tensor_units(&tensor))?;
                Ok(self.alloc(Obj::Tensor(Box::new(tensor))))
            }
            Callable::RebuildParameter => {
                // _rebuild_parameter(data, requires_grad, backward_hooks[, state])
                match self.items(args) {
                    Some(&[data, ..]) if matches!(self.obj(data), Some(Obj::Tensor(_))) => Ok(data),
                    _ => Err(self.malformed("_rebuild_parameter needs a tensor")),
                }
            }
            Callable::RebuildFromType => {
                // _rebuild_from_type_v2(func, new_type, args, state) calls func(*args).
                match self.items(args) {
                    Some(&[inner_func, _, inner_args, ..]) if depth < MAX_REBUILD_DEPTH => {
                        self.reduce(inner_func, inner_args, depth + 1)
                    }
                    _ => Err(self.malformed("malformed _rebuild_from_type_v2 call")),
                }
            }
            Callable::DictClass => Ok(self.alloc(Obj::Dict(Vec::new()))),
            Callable::Other => Ok(self.alloc(Obj::Object { class: func })),
        }
    }

    /// NEWOBJ / NEWOBJ_EX: `cls.__new__(cls, ...)`.
    pub(super) fn new_object(&mut self, class: Value) -> Value {
        match self.classify(class) {
            Callable::DictClass => self.alloc(Obj::Dict(Vec::new())),
            _ => self.alloc(Obj::Object { class }),
        }
    }

    /// `_rebuild_tensor_v2(storage, storage_offset, size, stride, ...)`.
    fn rebuild_tensor(&self, args: Value) -> PResult<TensorInfo> {
        let (storage, offset, size, stride) = match self.items(args) {
            Some(&[storage, offset, size, stride, ..]) => (storage, offset, size, stride),
            Some(_) => return Err(self.malformed("tensor rebuild needs at least 4 arguments")),
            None => return Err(self.malformed("tensor arguments are not a tuple")),
        };
        let Some(Obj::Storage(storage)) = self.obj(storage) else {
            return Err(
                self.malformed(format!("tensor storage is {}, not a storage reference", self.describe(storage)))
            );
        };
        let storage_offset = self.usize_of(offset, "storage offset")?;
        let shape = self.usize_seq(size, "size")?;
        let stride = self.usize_seq(stride, "stride")?;
        if shape.len() != stride.len() {
            return Err(self.malformed(format!(
                "tensor size has {} dimensions but stride has {}",
                shape.len(),
                stride.len()
            )));
        }
        Ok(TensorInfo {
            dtype: storage.dtype.clone(),
            shape,
            stride,
            storage_key: storage.key.clone(),
            storage_offset,
            location: storage.location.clone(),
        })
    }

    fn usize_of(&self, value: Value, what: &str) -> PResult<usize> {
        match value {
            Value::Int(v) => {
                usize::try_from(v).map_err(|_| self.malformed(format!("tensor {what} {v} is negative or too large")))
            }
            other => Err(self.malformed(format!("tensor {what} is {}, not an int", self.describe(other)))),
        }
    }

    fn usize_seq(&self, value: Value, what: &str) -> PResult<Vec<usize>> {
        let items = self.items(value).ok_or_else(|| self.malformed(format!("tensor {what} is not a tuple")))?;
        items.iter().map(|&v| self.usize_of(v, what)).collect()
    }

    /// BINPERSID: `('storage', storage_class, key, location, numel)` to a storage.
    pub(super) fn persistent_load(&mut self, pid: Value) -> PResult<Value> {
        let Some(&[tag, class, key, location, _numel]) = self.items(pid) else {
            return Err(self.malformed(format!(
                "persistent id is {}, not a ('storage', class, key, location, numel) tuple",
                self.describe(pid)
            )));
        };
        if self.str_of(tag) != Some("storage") {
            return Err(self.malformed("persistent id is not a 'storage' reference"));
        }
        let Some(Obj::Global(class)) = self.obj(class) else {
            return Err(self.malformed("storage class is not a class"));
        };
        let dtype = DType::from_storage_class(&class.name);
        let key = match (self.obj(key), key) {
            (Some(Obj::Str(s)), _) => s.clone(),
            (_, Value::Int(i)) => i.to_string(),
            _ => return Err(self.malformed("storage key is not a string")),
        };
        let location = self.str_of(location).unwrap_or_default().to_owned();
        self.spend(text_units(class.name.len() + key.len() + location.len()))?;
        Ok(self.alloc(Obj::Storage(Box::new(StorageRef { dtype, key, location }))))
    }
}
