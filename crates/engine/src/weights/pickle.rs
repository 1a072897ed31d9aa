//! A safe unpickler for `torch.save` state dicts: a small pickle VM that knows only the
//! opcodes and globals needed to rebuild tensors — the equivalent of
//! `torch.load(weights_only=True)`. It never calls anything: the few allowed globals are
//! recognised by name and *interpreted* here (an `OrderedDict` becomes a dict, a
//! `_rebuild_tensor_v2` call becomes a [`TensorRef`] description). Any other global
//! (`os.system`, `builtins.eval`, …) is refused the moment it is named.
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use anyhow::{anyhow, bail, Result};
use tch::Kind;

/// Where a tensor's bytes live: the `('storage', torch.FloatStorage, key, location, numel)`
/// persistent id that `torch.save` writes for `<archive>/data/<key>`.
#[derive(Debug, PartialEq)]
pub struct StorageRef {
    pub key: String,
    pub kind: Kind,
    /// The storage type as written in the file, for error messages (`torch.FloatStorage`).
    pub type_name: String,
    pub numel: u64,
}

/// A tensor view on a storage, as `_rebuild_tensor_v2(storage, offset, size, stride, …)` has it.
#[derive(Debug)]
pub struct TensorRef {
    pub storage: Rc<StorageRef>,
    pub offset: i64,
    pub size: Vec<i64>,
    pub stride: Vec<i64>,
}

/// The globals a state dict may name. Anything else is refused.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    RebuildParameterWithState,
    /// `torch.FloatStorage` etc.; only meaningful inside a persistent id.
    Storage(Kind, &'static str),
    /// `torch.float32` etc.; a constant.
    Dtype(Kind),
    /// `_codecs.encode(str, 'latin1')`, how protocol 2 writes `bytes`.
    CodecsEncode,
}

/// The items of a tuple or list. Dropped iteratively so that a crafted, deeply nested
/// pickle cannot overflow the stack when it is freed.
#[derive(Debug, Default)]
pub struct Items(pub Vec<Value>);

/// A dict's entries in insertion order, with an index for the hashable keys.
#[derive(Debug, Default)]
pub struct DictItems {
    pub entries: Vec<(Value, Value)>,
    index: HashMap<String, usize>,
}

#[derive(Clone, Debug)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Tuple(Rc<Items>),
    List(Rc<RefCell<Items>>),
    Dict(Rc<RefCell<DictItems>>),
    Global(Global),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "global",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
        }
    }
}

impl DictItems {
    fn key_repr(key: &Value) -> Option<String> {
        match key {
            Value::Str(s) => Some(format!("s{s}")),
            Value::Int(i) => Some(format!("i{i}")),
            Value::Bool(b) => Some(format!("b{b}")),
            Value::None => Some("n".into()),
            _ => None,
        }
    }
    pub fn insert(&mut self, key: Value, value: Value) {
        match Self::key_repr(&key) {
            Some(repr) => match self.index.get(&repr) {
                Some(&i) => self.entries[i].1 = value,
                None => {
                    self.index.insert(repr, self.entries.len());
                    self.entries.push((key, value));
                }
            },
            None => self.entries.push((key, value)),
        }
    }
    pub fn get_str(&self, key: &str) -> Option<&Value> {
        self.index.get(&format!("s{key}")).map(|&i| &self.entries[i].1)
    }
}

/// Moves the children of uniquely owned containers onto `work` instead of recursing.
fn detach_children(v: Value, work: &mut Vec<Value>) {
    match v {
        Value::Tuple(rc) => {
            if let Ok(mut items) = Rc::try_unwrap(rc) {
                work.append(&mut items.0);
            }
        }
        Value::List(rc) => {
            if let Ok(cell) = Rc::try_unwrap(rc) {
                work.append(&mut cell.into_inner().0);
            }
        }
        Value::Dict(rc) => {
            if let Ok(cell) = Rc::try_unwrap(rc) {
                let mut d = cell.into_inner();
                for (k, v) in d.entries.drain(..) {
                    work.push(k);
                    work.push(v);
                }
            }
        }
        _ => {}
    }
}

impl Drop for Items {
    fn drop(&mut self) {
        let mut work = std::mem::take(&mut self.0);
        while let Some(v) = work.pop() {
            detach_children(v, &mut work);
        }
    }
}

impl Drop for DictItems {
    fn drop(&mut self) {
        let mut work = Vec::new();
        for (k, v) in self.entries.drain(..) {
            work.push(k);
            work.push(v);
        }
        while let Some(v) = work.pop() {
            detach_children(v, &mut work);
        }
    }
}

/// Resolves `module.name` to an allowed global, or refuses it. This is the whole policy.
fn resolve_global(module: &str, name: &str) -> Result<Global> {
    let g = match (module, name) {
        ("collections", "OrderedDict") => Global::OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
        ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
        ("torch._utils", "_rebuild_parameter_with_state") => Global::RebuildParameterWithState,
        ("_codecs", "encode") => Global::CodecsEncode,
        ("torch", storage) if storage.ends_with("Storage") => {
            let (kind, canonical) = match storage {
                "FloatStorage" => (Kind::Float, "torch.FloatStorage"),
                "DoubleStorage" => (Kind::Double, "torch.DoubleStorage"),
                "HalfStorage" => (Kind::Half, "torch.HalfStorage"),
                "BFloat16Storage" => (Kind::BFloat16, "torch.BFloat16Storage"),
                "LongStorage" => (Kind::Int64, "torch.LongStorage"),
                "IntStorage" => (Kind::Int, "torch.IntStorage"),
                "ShortStorage" => (Kind::Int16, "torch.ShortStorage"),
                "CharStorage" => (Kind::Int8, "torch.CharStorage"),
                "ByteStorage" => (Kind::Uint8, "torch.ByteStorage"),
                "BoolStorage" => (Kind::Bool, "torch.BoolStorage"),
                other => bail!("unsupported tensor dtype: storage type 'torch.{other}' (supported: float32, float64, float16, bfloat16, integer and bool storages)"),
            };
            Global::Storage(kind, canonical)
        }
        ("torch", dtype) => Global::Dtype(match dtype {
            "float32" | "float" => Kind::Float,
            "float64" | "double" => Kind::Double,
            "float16" | "half" => Kind::Half,
            "bfloat16" => Kind::BFloat16,
            "int64" | "long" => Kind::Int64,
            "int32" | "int" => Kind::Int,
            "uint8" => Kind::Uint8,
            "bool" => Kind::Bool,
            _ => return Err(refused(module, name)),
        }),
        _ => return Err(refused(module, name)),
    };
    Ok(g)
}

fn refused(module: &str, name: &str) -> anyhow::Error {
    anyhow!(
        "unsafe pickle: refusing global '{module}.{name}' (only the globals that rebuild tensors are allowed; nothing was executed)"
    )
}

/// Runs the pickle in `data` and returns the value it builds.
pub fn unpickle(data: &[u8]) -> Result<Value> {
    Vm { data, pos: 0, stack: Vec::new(), marks: Vec::new(), memo: HashMap::new(), nested: HashMap::new() }.run()
}

struct Vm<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    /// The lists and dicts already put inside another container, by address (held here,
    /// so an address is not reused while listed). They may not change any more: a pickle
    /// of acyclic data fills each container before it goes into its parent, and refusing
    /// the rest rules out reference cycles, which `Rc` would never free.
    nested: HashMap<usize, Value>,
}

/// The address of a mutable container (list or dict), its identity.
fn container_id(v: &Value) -> Option<usize> {
    match v {
        Value::List(l) => Some(Rc::as_ptr(l) as *const u8 as usize),
        Value::Dict(d) => Some(Rc::as_ptr(d) as *const u8 as usize),
        _ => None,
    }
}

impl<'a> Vm<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let Some(end) = end else {
            bail!("pickle ends early (wanted {n} bytes at offset {} of {})", self.pos, self.data.len())
        };
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn len64(&mut self) -> Result<usize> {
        let n = self.u64()?;
        usize::try_from(n).map_err(|_| anyhow!("pickle length {n} is too large"))
    }
    fn line(&mut self) -> Result<&'a str> {
        let rest = &self.data[self.pos..];
        let n = rest.iter().position(|&b| b == b'\n').ok_or_else(|| anyhow!("pickle ends inside a GLOBAL name"))?;
        let s = std::str::from_utf8(&rest[..n]).map_err(|_| anyhow!("GLOBAL name is not UTF-8"))?;
        self.pos += n + 1;
        Ok(s)
    }
    fn text(&mut self, n: usize) -> Result<Value> {
        let b = self.take(n)?;
        let s = std::str::from_utf8(b).map_err(|_| anyhow!("pickle string at offset {} is not UTF-8", self.pos - n))?;
        Ok(Value::Str(s.into()))
    }
    fn pop(&mut self) -> Result<Value> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            bail!("malformed pickle: pop across a MARK at offset {}", self.pos)
        }
        self.stack.pop().ok_or_else(|| anyhow!("malformed pickle: stack underflow at offset {}", self.pos))
    }
    fn top(&mut self) -> Result<&mut Value> {
        let pos = self.pos;
        self.stack.last_mut().ok_or_else(|| anyhow!("malformed pickle: empty stack at offset {pos}"))
    }
    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let m = self.marks.pop().ok_or_else(|| anyhow!("malformed pickle: no MARK at offset {}", self.pos))?;
        Ok(self.stack.split_off(m))
    }
    fn memo_get(&self, i: u32) -> Result<Value> {
        self.memo.get(&i).cloned().ok_or_else(|| anyhow!("malformed pickle: memo {i} was never stored"))
    }
    fn memo_put(&mut self, i: u32) -> Result<()> {
        let v = self.stack.last().cloned().ok_or_else(|| anyhow!("malformed pickle: PUT on an empty stack"))?;
        self.memo.insert(i, v);
        Ok(())
    }
    fn tuple(&mut self, items: Vec<Value>) -> Value {
        self.nest(&items);
        Value::Tuple(Rc::new(Items(items)))
    }
    /// Notes that `items` are going into a container.
    fn nest(&mut self, items: &[Value]) {
        for v in items {
            if let Some(id) = container_id(v) {
                self.nested.entry(id).or_insert_with(|| v.clone());
            }
        }
    }
    /// Checks that `target` may receive `items` (see `nested`), and notes them as nested.
    fn fill(&mut self, target: &Value, items: &[Value], at: usize) -> Result<()> {
        let id = container_id(target);
        if id.is_some_and(|id| self.nested.contains_key(&id) || items.iter().any(|v| container_id(v) == Some(id))) {
            bail!("malformed pickle: changes a {} already inside another container at offset {at} (refused: it could form a reference cycle)", target.type_name())
        }
        self.nest(items);
        Ok(())
    }

    fn run(mut self) -> Result<Value> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        bail!("unsupported pickle protocol {proto}")
                    }
                }
                0x95 => {
                    self.u64()?; // FRAME: a length hint only
                }
                b'.' => {
                    let v = self.pop()?;
                    return Ok(v);
                }
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.stack.push(v);
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let v = self.u32()? as i32;
                    self.stack.push(Value::Int(v as i64))
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v as i64))
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(v as i64))
                }
                0x8a => {
                    // LONG1: little-endian two's complement, at most 8 bytes here.
                    let n = self.u8()? as usize;
                    if n > 8 {
                        bail!("integer of {n} bytes at offset {at} is too large")
                    }
                    let b = self.take(n)?;
                    let mut buf = if b.last().is_some_and(|&x| x & 0x80 != 0) { [0xffu8; 8] } else { [0u8; 8] };
                    buf[..n].copy_from_slice(b);
                    self.stack.push(Value::Int(i64::from_le_bytes(buf)))
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into().unwrap());
                    self.stack.push(Value::Float(v))
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let v = self.text(n)?;
                    self.stack.push(v)
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let v = self.text(n)?;
                    self.stack.push(v)
                }
                0x8d => {
                    let n = self.len64()?;
                    let v = self.text(n)?;
                    self.stack.push(v)
                }
                b'B' | b'C' | 0x8e => {
                    let n = match op {
                        b'B' => self.u32()? as usize,
                        b'C' => self.u8()? as usize,
                        _ => self.len64()?,
                    };
                    let b = self.take(n)?;
                    self.stack.push(Value::Bytes(b.into()))
                }
                b')' => {
                    let t = self.tuple(Vec::new());
                    self.stack.push(t)
                }
                b't' => {
                    let items = self.pop_mark()?;
                    let t = self.tuple(items);
                    self.stack.push(t)
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    let t = self.tuple(items);
                    self.stack.push(t)
                }
                b']' => self.stack.push(Value::List(Default::default())),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.nest(&items);
                    self.stack.push(Value::List(Rc::new(RefCell::new(Items(items)))))
                }
                b'a' => {
                    let v = self.pop()?;
                    let target = self.top()?.clone();
                    self.fill(&target, std::slice::from_ref(&v), at)?;
                    match self.top()? {
                        Value::List(l) => l.borrow_mut().0.push(v),
                        other => bail!("malformed pickle: APPEND to a {} at offset {at}", other.type_name()),
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    let target = self.top()?.clone();
                    self.fill(&target, &items, at)?;
                    match self.top()? {
                        Value::List(l) => l.borrow_mut().0.extend(items),
                        other => bail!("malformed pickle: APPENDS to a {} at offset {at}", other.type_name()),
                    }
                }
                b'}' => self.stack.push(Value::Dict(Default::default())),
                b'd' => {
                    let items = self.pop_mark()?;
                    self.nest(&items);
                    let d = Value::Dict(Default::default());
                    set_items(&d, items, at)?;
                    self.stack.push(d)
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let d = self.top()?.clone();
                    let items = vec![k, v];
                    self.fill(&d, &items, at)?;
                    set_items(&d, items, at)?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let d = self.top()?.clone();
                    self.fill(&d, &items, at)?;
                    set_items(&d, items, at)?;
                }
                b'q' => {
                    let i = self.u8()? as u32;
                    self.memo_put(i)?
                }
                b'r' => {
                    let i = self.u32()?;
                    self.memo_put(i)?
                }
                0x94 => {
                    let i = self.memo.len() as u32;
                    self.memo_put(i)?
                }
                b'h' => {
                    let i = self.u8()? as u32;
                    let v = self.memo_get(i)?;
                    self.stack.push(v)
                }
                b'j' => {
                    let i = self.u32()?;
                    let v = self.memo_get(i)?;
                    self.stack.push(v)
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let g = resolve_global(module, name)?;
                    self.stack.push(Value::Global(g))
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Value::Str(module), Value::Str(name)) = (&module, &name) else {
                        bail!("malformed pickle: STACK_GLOBAL needs two strings at offset {at}")
                    };
                    let g = resolve_global(module, name)?;
                    self.stack.push(Value::Global(g))
                }
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = call(&callable, &args, at)?;
                    self.stack.push(v)
                }
                b'b' => {
                    // BUILD sets an object's state. A state dict carries `_metadata` this way
                    // and a Parameter may carry hooks; neither matters for the weights.
                    let _state = self.pop()?;
                    match self.top()? {
                        Value::Dict(_) | Value::Tensor(_) => {}
                        other => bail!("malformed pickle: BUILD on a {} at offset {at}", other.type_name()),
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let storage = persistent_storage(&pid)?;
                    self.stack.push(Value::Storage(Rc::new(storage)))
                }
                other => bail!("unsupported pickle opcode 0x{other:02x} at offset {at} (not needed by a state dict)"),
            }
        }
    }
}

fn set_items(d: &Value, items: Vec<Value>, at: usize) -> Result<()> {
    let Value::Dict(d) = d else { bail!("malformed pickle: SETITEM on a {} at offset {at}", d.type_name()) };
    if !items.len().is_multiple_of(2) {
        bail!("malformed pickle: odd number of dict items at offset {at}")
    }
    let mut d = d.borrow_mut();
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        d.insert(k, v);
    }
    Ok(())
}

fn tuple_items(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Tuple(t) => Some(&t.0),
        _ => None,
    }
}

fn int_list(v: &Value, what: &str, at: usize) -> Result<Vec<i64>> {
    let items =
        tuple_items(v).ok_or_else(|| anyhow!("tensor {what} is a {} at offset {at}, not a tuple", v.type_name()))?;
    items
        .iter()
        .map(|x| match x {
            Value::Int(i) if *i >= 0 => Ok(*i),
            Value::Int(i) => Err(anyhow!("tensor {what} holds the negative number {i} at offset {at}")),
            other => Err(anyhow!("tensor {what} holds a {} at offset {at}", other.type_name())),
        })
        .collect()
}

/// Interprets a REDUCE (or NEWOBJ) of one of the allowed globals. Nothing is executed.
fn call(callable: &Value, args: &Value, at: usize) -> Result<Value> {
    let Value::Global(g) = callable else {
        bail!(
            "unsafe pickle: REDUCE on a {} at offset {at} (only the allowed globals may be called)",
            callable.type_name()
        )
    };
    let args = tuple_items(args)
        .ok_or_else(|| anyhow!("malformed pickle: REDUCE arguments are not a tuple at offset {at}"))?;
    match g {
        Global::OrderedDict => {
            let d = Value::Dict(Default::default());
            if let Some(pairs) = args.first() {
                let pairs = match pairs {
                    Value::List(l) => l.borrow().0.clone(),
                    Value::Tuple(t) => t.0.clone(),
                    other => bail!("OrderedDict built from a {} at offset {at}", other.type_name()),
                };
                for p in pairs {
                    match tuple_items(&p) {
                        Some([k, v]) => set_items(&d, vec![k.clone(), v.clone()], at)?,
                        _ => bail!("OrderedDict item is not a pair at offset {at}"),
                    }
                }
            }
            Ok(d)
        }
        Global::RebuildTensorV2 => {
            if !(6..=7).contains(&args.len()) {
                bail!("_rebuild_tensor_v2 with {} arguments at offset {at}", args.len())
            }
            let Value::Storage(storage) = &args[0] else {
                bail!("_rebuild_tensor_v2 on a {} instead of a storage at offset {at}", args[0].type_name())
            };
            let Value::Int(offset) = args[1] else { bail!("tensor storage offset is not an int at offset {at}") };
            if offset < 0 {
                bail!("negative storage offset {offset} at offset {at}")
            }
            let size = int_list(&args[2], "size", at)?;
            let stride = int_list(&args[3], "stride", at)?;
            if size.len() != stride.len() {
                bail!("tensor size {size:?} and stride {stride:?} differ in rank at offset {at}")
            }
            Ok(Value::Tensor(Rc::new(TensorRef { storage: storage.clone(), offset, size, stride })))
        }
        Global::RebuildParameter | Global::RebuildParameterWithState => match args.first() {
            Some(t @ Value::Tensor(_)) => Ok(t.clone()),
            _ => bail!("_rebuild_parameter without a tensor at offset {at}"),
        },
        Global::CodecsEncode => match args {
            [Value::Str(s), Value::Str(enc)] if &**enc == "latin1" || &**enc == "latin-1" => {
                let bytes: Option<Vec<u8>> = s.chars().map(|c| u8::try_from(c as u32).ok()).collect();
                Ok(Value::Bytes(bytes.ok_or_else(|| anyhow!("_codecs.encode: not latin-1 at offset {at}"))?.into()))
            }
            _ => bail!("_codecs.encode with unexpected arguments at offset {at}"),
        },
        Global::Storage(_, name) => {
            bail!("unsafe pickle: REDUCE calls '{name}' at offset {at} (storages come only from persistent ids)")
        }
        Global::Dtype(k) => bail!("unsafe pickle: REDUCE calls dtype {k:?} at offset {at}"),
    }
}

/// `('storage', torch.FloatStorage, '0', 'cpu', numel)` → where the bytes are.
fn persistent_storage(pid: &Value) -> Result<StorageRef> {
    let items = tuple_items(pid).ok_or_else(|| anyhow!("persistent id is a {}, not a tuple", pid.type_name()))?;
    match items {
        [Value::Str(tag), Value::Global(Global::Storage(kind, name)), Value::Str(key), Value::Str(_location), Value::Int(numel)]
            if &**tag == "storage" && *numel >= 0 =>
        {
            if key.is_empty() || key.contains(['/', '\\']) || key.contains("..") {
                bail!("storage key '{key}' is not a plain name")
            }
            Ok(StorageRef { key: key.to_string(), kind: *kind, type_name: name.to_string(), numel: *numel as u64 })
        }
        _ => {
            // Only type names: a crafted id may nest deeply, and Debug would recurse.
            let shape: Vec<&str> = items.iter().map(Value::type_name).collect();
            bail!(
                "unsupported persistent id ({}) (expected ('storage', torch.<T>Storage, key, location, numel))",
                shape.join(", ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global(module: &str, name: &str) -> Vec<u8> {
        format!("c{module}\n{name}\n").into_bytes()
    }

    #[test]
    fn a_reduce_of_os_system_is_refused_naming_the_global() {
        let mut p = vec![0x80, 2];
        p.extend(global("os", "system"));
        p.extend(b"X\x05\x00\x00\x00touch\x85R.");
        let err = unpickle(&p).unwrap_err().to_string();
        assert!(err.contains("'os.system'"), "{err}");
    }

    #[test]
    fn stack_global_is_checked_like_global() {
        // protocol 4: SHORT_BINUNICODE 'builtins', SHORT_BINUNICODE 'eval', STACK_GLOBAL
        let mut p = vec![0x80, 4, 0x8c, 8];
        p.extend(b"builtins");
        p.extend([0x8c, 4]);
        p.extend(b"eval");
        p.extend([0x93, b')', b'R', b'.']);
        let err = unpickle(&p).unwrap_err().to_string();
        assert!(err.contains("'builtins.eval'"), "{err}");
    }

    #[test]
    fn calling_a_storage_type_is_refused() {
        let mut p = vec![0x80, 2];
        p.extend(global("torch", "FloatStorage"));
        p.extend(b")R.");
        let err = unpickle(&p).unwrap_err().to_string();
        assert!(err.contains("torch.FloatStorage"), "{err}");
    }

    #[test]
    fn unsupported_storage_dtypes_are_named() {
        let mut p = vec![0x80, 2];
        p.extend(global("torch", "ComplexFloatStorage"));
        p.push(b'.');
        let err = unpickle(&p).unwrap_err().to_string();
        assert!(err.contains("torch.ComplexFloatStorage") && err.contains("dtype"), "{err}");
    }

    #[test]
    fn a_tensor_is_described_not_built() {
        let mut p = vec![0x80, 2];
        p.extend(global("torch._utils", "_rebuild_tensor_v2"));
        p.extend(b"((X\x07\x00\x00\x00storage");
        p.extend(global("torch", "BFloat16Storage"));
        p.extend(b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x0ctQ"); // pid → storage
        p.extend(b"K\x02K\x02K\x03\x86K\x01K\x02\x86\x89"); // offset 2, size (2,3), stride (1,2)
        p.extend(global("collections", "OrderedDict"));
        p.extend(b")RtR.");
        let Value::Tensor(t) = unpickle(&p).unwrap() else { panic!("not a tensor") };
        assert_eq!((t.offset, t.size.clone(), t.stride.clone()), (2, vec![2, 3], vec![1, 2]));
        assert_eq!((t.storage.key.as_str(), t.storage.kind, t.storage.numel), ("0", Kind::BFloat16, 12));
    }

    #[test]
    fn truncated_pickles_and_unknown_opcodes_are_errors_not_panics() {
        assert!(unpickle(b"\x80\x02X\xff\xff\xff\xff").unwrap_err().to_string().contains("ends early"));
        assert!(unpickle(b"\x80\x02").is_err());
        assert!(unpickle(b"").is_err());
        assert!(unpickle(b"\x80\x02I1\n.").unwrap_err().to_string().contains("opcode 0x49"));
        assert!(unpickle(b"\x80\x02h\x05.").unwrap_err().to_string().contains("memo"));
        assert!(unpickle(b"\x80\x02(s.").is_err());
    }

    /// Reference cycles would never be freed (a leak per load, and what libFuzzer's leak
    /// checker reports): a list appended to itself, a dict set into itself, a list put
    /// into a dict that is then appended to that list.
    #[test]
    fn containers_that_would_contain_themselves_are_refused() {
        for (what, p) in [
            ("list in itself", &b"\x80\x02]2a."[..]),
            ("list in itself via APPENDS", b"\x80\x02]2(2e."),
            ("dict in itself", b"\x80\x02}q\x00K\x01h\x00s."),
            ("dict in itself via SETITEMS", b"\x80\x02}q\x00(K\x01h\x00u."),
            ("dict → list → dict", b"\x80\x02}q\x00K\x01]q\x01sh\x01h\x00a."),
        ] {
            let err = unpickle(p).map(|v| v.type_name()).unwrap_err().to_string();
            assert!(err.contains("cycle"), "{what}: {err}");
        }
        // Sharing without a cycle stays allowed: one list twice in a dict, a list of lists.
        assert!(unpickle(b"\x80\x02}(K\x01]q\x00K\x02h\x00u.").is_ok_and(|v| matches!(v, Value::Dict(_))));
        assert!(unpickle(b"\x80\x02]]q\x00ah\x00.").is_ok());
    }

    #[test]
    fn deeply_nested_lists_are_freed_without_overflowing_the_stack() {
        // [[[[...]]]] two million deep via the memo: ']' 'q0' then repeatedly
        // 'h0' ']' 'r' ... is long; instead push many lists and APPEND them into each other.
        let depth = 2_000_000;
        let mut p = vec![0x80, 2];
        p.extend(std::iter::repeat_n(b']', depth));
        p.extend(std::iter::repeat_n(b'a', depth - 1));
        p.push(b'.');
        let v = unpickle(&p).unwrap();
        drop(v);
    }
}
