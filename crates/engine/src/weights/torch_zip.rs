//! The `torch.save` zip archive: `<archive>/data.pkl` (the pickle, read by the safe
//! unpickler) and `<archive>/data/<key>` (one raw little-endian storage per key).
//! torch.save stores entries uncompressed and 64-byte aligned, so storages are sliced
//! straight out of the memory-mapped file and copied once, into their tensors.
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io::{Cursor, Read};

use anyhow::{anyhow, bail, Context, Result};
use tch::Tensor;
use zip::CompressionMethod;

use super::pickle::{self, StorageRef, TensorRef, Value};

/// One archive entry: where its bytes are in the file and how they are stored.
struct Entry {
    index: usize,
    data_start: u64,
    compressed_size: u64,
    size: u64,
    stored: bool,
    crc32: u32,
}

pub struct TorchZip<'a> {
    bytes: &'a [u8],
    archive: RefCell<zip::ZipArchive<Cursor<&'a [u8]>>>,
    entries: HashMap<String, Entry>,
    /// `archive/` — the folder every entry sits in (named after the file at save time).
    prefix: String,
}

impl<'a> TorchZip<'a> {
    pub fn open(bytes: &'a [u8]) -> Result<Self> {
        let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| {
            anyhow!("truncated or corrupt zip archive ({e}); the file is {} bytes — re-download it", bytes.len())
        })?;
        let mut entries = HashMap::new();
        for index in 0..zip.len() {
            let f = zip.by_index_raw(index).map_err(|e| anyhow!("corrupt zip entry #{index}: {e}"))?;
            let stored = match f.compression() {
                CompressionMethod::Stored => true,
                CompressionMethod::Deflated => false,
                other => bail!("zip entry '{}' uses unsupported compression {other:?}", f.name()),
            };
            let e = Entry {
                index,
                data_start: f.data_start(),
                compressed_size: f.compressed_size(),
                size: f.size(),
                stored,
                crc32: f.crc32(),
            };
            entries.insert(f.name().to_string(), e);
        }
        let pkl = entries
            .keys()
            .filter(|n| *n == "data.pkl" || (n.ends_with("/data.pkl") && n.matches('/').count() == 1))
            .min_by_key(|n| n.len())
            .ok_or_else(|| anyhow!("zip archive has no data.pkl: not a torch.save checkpoint"))?;
        let prefix = pkl.trim_end_matches("data.pkl").to_string();
        Ok(TorchZip { bytes, archive: RefCell::new(zip), entries, prefix })
    }

    /// The bytes of one entry: a slice of the file when stored, inflated otherwise. The
    /// CRC is checked either way, so a damaged download is caught here.
    fn read(&self, name: &str) -> Result<Option<Cow<'a, [u8]>>> {
        let Some(e) = self.entries.get(name) else { return Ok(None) };
        let start = usize::try_from(e.data_start).ok();
        let end = start.and_then(|s| s.checked_add(usize::try_from(e.compressed_size).ok()?));
        let data = match (start, end) {
            (Some(s), Some(t)) if t <= self.bytes.len() => &self.bytes[s..t],
            _ => bail!("zip entry '{name}' runs past the end of the file (truncated download?)"),
        };
        let data: Cow<'a, [u8]> = if e.stored {
            if e.size != e.compressed_size {
                bail!("zip entry '{name}' is stored but its sizes differ")
            }
            Cow::Borrowed(data)
        } else {
            // Not written by torch.save, but a re-zipped archive may deflate: inflate it.
            let mut zip = self.archive.borrow_mut();
            let mut f = zip.by_index(e.index).map_err(|err| anyhow!("zip entry '{name}': {err}"))?;
            let mut out = Vec::with_capacity(e.size.min(1 << 30) as usize);
            f.read_to_end(&mut out).with_context(|| format!("zip entry '{name}' does not inflate"))?;
            Cow::Owned(out)
        };
        if crc32fast::hash(&data) != e.crc32 {
            bail!("zip entry '{name}' is corrupt (CRC mismatch) — re-download the file")
        }
        Ok(Some(data))
    }

    fn byteorder_is_little(&self) -> Result<bool> {
        Ok(match self.read(&format!("{}byteorder", self.prefix))? {
            Some(b) => b.trim_ascii() == b"little",
            None => true, // older torch wrote no byteorder entry; it was always little-endian
        })
    }

    /// Runs the pickle and copies every tensor out of its storage.
    pub fn tensors(&self) -> Result<BTreeMap<String, Tensor>> {
        if !self.byteorder_is_little()? {
            bail!("big-endian checkpoints are not supported")
        }
        let pkl_name = format!("{}data.pkl", self.prefix);
        let pkl = self.read(&pkl_name)?.ok_or_else(|| anyhow!("zip archive has no {pkl_name}"))?;
        let root = pickle::unpickle(&pkl).with_context(|| format!("bad pickle in {pkl_name}"))?;
        let refs = state_dict_entries(&root)?;
        drop(root);

        let mut storages: HashMap<String, Cow<'a, [u8]>> = HashMap::new();
        let mut out = BTreeMap::new();
        for (key, t) in refs {
            let s = &t.storage;
            if !storages.contains_key(&s.key) {
                let name = format!("{}data/{}", self.prefix, s.key);
                let bytes =
                    self.read(&name)?.ok_or_else(|| anyhow!("tensor '{key}': storage entry '{name}' is missing"))?;
                let elt = s.kind.elt_size_in_bytes() as u64;
                if (bytes.len() as u64) < s.numel.saturating_mul(elt) {
                    bail!(
                        "tensor '{key}': storage '{name}' holds {} bytes, {} of {} need {}",
                        bytes.len(),
                        s.numel,
                        s.type_name,
                        s.numel * elt
                    )
                }
                storages.insert(s.key.clone(), bytes);
            }
            let tensor = materialize(&key, &t, &storages[&s.key]).with_context(|| format!("tensor '{key}'"))?;
            out.insert(key, tensor);
        }
        Ok(out)
    }
}

/// The `(key, tensor)` pairs of `{"model": state_dict}` or of a bare state dict.
fn state_dict_entries(root: &Value) -> Result<Vec<(String, std::rc::Rc<TensorRef>)>> {
    let Value::Dict(d) = root else { bail!("the pickle holds a {}, not a state dict", root.type_name()) };
    let d = d.borrow();
    let sd = match d.get_str("model") {
        Some(Value::Dict(inner)) => inner.clone(),
        Some(other) => bail!("its \"model\" entry is a {}, not a state dict", other.type_name()),
        None => match root {
            Value::Dict(rc) => rc.clone(),
            _ => unreachable!(),
        },
    };
    drop(d);
    let sd = sd.borrow();
    let mut out = Vec::with_capacity(sd.entries.len());
    for (k, v) in &sd.entries {
        let Value::Str(k) = k else { bail!("state dict has a {} key, not a string", k.type_name()) };
        match v {
            Value::Tensor(t) => out.push((k.to_string(), t.clone())),
            other => bail!("state dict entry '{k}' is a {}, not a tensor (is this a training checkpoint? expected {{\"model\": state_dict}})", other.type_name()),
        }
    }
    if out.is_empty() {
        bail!("the state dict is empty")
    }
    Ok(out)
}

/// Copies one tensor view out of its storage bytes, checking that the view fits.
fn materialize(_key: &str, t: &TensorRef, storage: &[u8]) -> Result<Tensor> {
    let s: &StorageRef = &t.storage;
    let elt = s.kind.elt_size_in_bytes();
    let numel =
        t.size.iter().try_fold(1i64, |a, &d| a.checked_mul(d)).ok_or_else(|| anyhow!("size {:?} overflows", t.size))?;
    // Copied out contiguously, a view that repeats its storage (stride 0, overlapping
    // strides) would cost what its size claims, not what the file holds. A state dict
    // saves no such views.
    if numel as u64 > s.numel {
        bail!("view of {numel} elements (size {:?}, stride {:?}) on storage '{}', which holds {}: views that repeat their storage are not supported", t.size, t.stride, s.key, s.numel)
    }
    // The furthest element the view touches, plus one.
    let extent = if numel == 0 {
        0
    } else {
        t.size
            .iter()
            .zip(&t.stride)
            .try_fold(1i64, |a, (&d, &st)| a.checked_add((d - 1).checked_mul(st)?))
            .ok_or_else(|| anyhow!("size {:?} / stride {:?} overflow", t.size, t.stride))?
    };
    let end = t.offset.checked_add(extent).ok_or_else(|| anyhow!("storage offset overflows"))?;
    if end as u64 > s.numel {
        bail!(
            "view (offset {}, size {:?}, stride {:?}) needs {end} elements but storage '{}' holds {}",
            t.offset,
            t.size,
            t.stride,
            s.key,
            s.numel
        )
    }
    let bytes = &storage[t.offset as usize * elt..end as usize * elt];
    let contiguous = numel <= 1 || is_contiguous(&t.size, &t.stride);
    let tensor = if contiguous {
        Tensor::f_from_data_size(&bytes[..numel as usize * elt], &t.size, s.kind)?
    } else {
        // Rare (views saved on purpose): copy the span, then lay it out contiguously.
        let span = Tensor::f_from_data_size(bytes, &[extent], s.kind)?;
        span.f_as_strided(&t.size, &t.stride, 0)?.f_contiguous()?
    };
    Ok(tensor)
}

fn is_contiguous(size: &[i64], stride: &[i64]) -> bool {
    let mut expected = 1;
    for (&d, &st) in size.iter().zip(stride).rev() {
        if d != 1 && st != expected {
            return false;
        }
        expected *= d;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A torch-style archive holding `{"w": tensor}` whose view is (offset, size) on a
    /// FloatStorage that claims `numel` elements and has `bytes` bytes.
    fn archive(offset: u8, size: u8, numel: u8, bytes: usize) -> Vec<u8> {
        let mut p = vec![0x80, 2, b'}', b'X', 1, 0, 0, 0, b'w'];
        p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storage");
        p.extend(b"ctorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK");
        p.extend([numel, b't', b'Q', b'K', offset, b'K', size, 0x85, b'K', 1, 0x85, 0x89]);
        p.extend(b"ccollections\nOrderedDict\n)RtRs.");
        let mut buf = Cursor::new(Vec::new());
        let mut z = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
        z.start_file("archive/data.pkl", opts).unwrap();
        z.write_all(&p).unwrap();
        z.start_file("archive/data/0", opts).unwrap();
        z.write_all(&(0..bytes).map(|i| i as u8).collect::<Vec<_>>()).unwrap();
        z.finish().unwrap();
        buf.into_inner()
    }

    #[test]
    fn a_view_inside_its_storage_is_copied_out() {
        let bytes = archive(1, 2, 4, 16);
        let t = TorchZip::open(&bytes).unwrap().tensors().unwrap();
        let w = &t["w"];
        assert_eq!(w.size(), [2]);
        let mut raw = [0u8; 8];
        w.copy_data_u8(&mut raw, 2);
        assert_eq!(raw, [4, 5, 6, 7, 8, 9, 10, 11]);
    }

    #[test]
    fn a_view_past_the_end_of_its_storage_is_refused() {
        let bytes = archive(3, 2, 4, 16);
        let err = format!("{:#}", TorchZip::open(&bytes).unwrap().tensors().unwrap_err());
        assert!(err.contains("tensor 'w'") && err.contains("needs 5 elements") && err.contains("holds 4"), "{err}");
    }

    /// A view that repeats its storage (stride 0) would be copied out at the size it
    /// claims: 2^20 floats from a 4-byte storage here, 2^40 in a crafted file.
    #[test]
    fn a_view_claiming_more_elements_than_its_storage_holds_is_refused() {
        let mut p = vec![0x80, 2, b'}', b'X', 1, 0, 0, 0, b'w'];
        p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storage");
        p.extend(b"ctorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x01tQK\x00");
        p.extend(b"J\x00\x00\x10\x00\x85K\x00\x85\x89"); // size (2^20,), stride (0,)
        p.extend(b"ccollections\nOrderedDict\n)RtRs.");
        let mut buf = Cursor::new(Vec::new());
        let mut z = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
        z.start_file("archive/data.pkl", opts).unwrap();
        z.write_all(&p).unwrap();
        z.start_file("archive/data/0", opts).unwrap();
        z.write_all(&[0; 4]).unwrap();
        z.finish().unwrap();
        let bytes = buf.into_inner();
        let err = format!("{:#}", TorchZip::open(&bytes).unwrap().tensors().map(|t| t.len()).unwrap_err());
        assert!(err.contains("tensor 'w'") && err.contains("1048576 elements") && err.contains("holds 1"), "{err}");
    }

    #[test]
    fn a_storage_shorter_than_its_declared_numel_is_refused() {
        let bytes = archive(0, 2, 4, 12);
        let err = format!("{:#}", TorchZip::open(&bytes).unwrap().tensors().unwrap_err());
        assert!(err.contains("holds 12 bytes") && err.contains("need 16"), "{err}");
    }
}
