//! The memory bank of a video session: per object, the reference's four output
//! dictionaries (conditioning, tracking, and their temporary versions) plus which frames
//! were tracked in which direction.
//!
//! Every output is written through to a directory as it is produced. That does two jobs:
//! RAM holds only what SAM 2 can still attend to (conditioning and temporary outputs, and
//! tracking outputs near the current frame — a 10,000-frame video costs what a 100-frame
//! one does), and a new worker started on the same directory after a crash picks up the
//! state of the dead one instead of recomputing the video.
use super::bank_undo::{self, LoggedOp, UndoLog};
use sam2_api::session::ObjectId;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use tch::{Device, Kind, Tensor};

/// One object's output on one frame (`compact_current_out` of the reference).
pub struct Entry {
    /// `[1,64,e,e]` bf16, None until the memory encoder ran (temporary outputs).
    pub maskmem: Option<Tensor>,
    /// `[1,1,4e,4e]` low-res logits (after hole filling).
    pub pred_masks: Tensor,
    /// `[1,256]`.
    pub obj_ptr: Tensor,
    /// `[1,1]`.
    pub score: Tensor,
}

impl Entry {
    pub fn shallow(&self) -> Entry {
        Entry {
            maskmem: self.maskmem.as_ref().map(|t| t.shallow_clone()),
            pred_masks: self.pred_masks.shallow_clone(),
            obj_ptr: self.obj_ptr.shallow_clone(),
            score: self.score.shallow_clone(),
        }
    }
}

/// One entry of [`MemoryBank::keep_copied_many`]: `entry` is kept (on the device),
/// `on_disk` — the same values on the host — is written.
pub struct CopiedPut {
    pub id: ObjectId,
    pub slot: Slot,
    pub frame: usize,
    pub entry: Entry,
    pub on_disk: Entry,
    pub tracked: Option<bool>,
}

/// The files of a `keep_copied_many`, to be written, and the records its entries replaced.
pub struct PendingWrites {
    files: Vec<(PathBuf, EntryFile)>,
    replaced: Vec<(ObjectId, Slot, usize, Option<Record>)>,
}

impl PendingWrites {
    /// Each file's path and bytes (borrowed from the entries' host tensors); for
    /// `write_files`, on any thread: plain bytes, no libtorch call.
    pub fn parts(&self) -> Vec<(PathBuf, Vec<&[u8]>)> {
        self.files.iter().map(|(path, f)| (path.clone(), f.parts())).collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    Cond,
    NonCond,
    TempCond,
    TempNonCond,
}

impl Slot {
    fn name(self) -> &'static str {
        match self {
            Slot::Cond => "cond",
            Slot::NonCond => "noncond",
            Slot::TempCond => "tempcond",
            Slot::TempNonCond => "tempnoncond",
        }
    }
    fn parse(s: &str) -> Option<Slot> {
        [Slot::Cond, Slot::NonCond, Slot::TempCond, Slot::TempNonCond].into_iter().find(|x| x.name() == s)
    }
}

/// Tracking outputs kept in RAM on each side of the current frame: the 6 memory frames
/// and 15 pointer frames SAM 2 looks back at, plus slack.
const HOT_WINDOW: usize = 24;

#[derive(Default)]
struct Record {
    /// Some(reverse) once the frame was tracked (`frames_tracked_per_obj`).
    tracked: Option<bool>,
    /// Loaded entry, if in RAM.
    entry: RefCell<Option<Rc<Entry>>>,
}

/// An entry held in RAM only (see `MemoryBank::stage`), with what it replaced.
pub struct Staged {
    pub id: ObjectId,
    pub slot: Slot,
    pub frame: usize,
    previous: Option<Record>,
}

pub struct MemoryBank {
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    index: HashMap<ObjectId, BTreeMap<(Slot, usize), Record>>,
    device: Device,
    /// The undo log of the op in flight, when that op is one that can be taken back
    /// (see `bank_undo`): every change to the directory is preserved before it is made.
    undo: Option<UndoLog>,
}

const MAGIC: &[u8; 4] = b"S2MB";

thread_local! {
    static BEFORE_CHANGE: RefCell<Option<Box<dyn Fn()>>> = const { RefCell::new(None) };
}

/// Runs `hook` just before every change the banks of this thread make on disk (None
/// removes it): the worker's fault injection crashes there to prove that a crash at any
/// of those instants leaves the session as if it had not happened.
pub fn set_before_change(hook: Option<Box<dyn Fn()>>) {
    BEFORE_CHANGE.with(|h| *h.borrow_mut() = hook);
}

impl MemoryBank {
    /// Opens (or creates) a bank directory; None = a private temporary one.
    pub fn open(dir: Option<PathBuf>, device: Device) -> anyhow::Result<Self> {
        let (dir, temp) = match dir {
            Some(d) => (d, None),
            None => {
                let t = tempfile::Builder::new().prefix("sam2-tui-bank-").tempdir()?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("{}: cannot create memory bank: {e}", dir.display()))?;
        // An op that a dead worker left half-done is taken back before anything is read.
        if bank_undo::logged(&dir)?.is_some_and(|op| !op.committed) {
            bank_undo::roll_back(&dir)?;
        }
        let mut bank = MemoryBank { dir, _temp: temp, index: HashMap::new(), device, undo: None };
        bank.scan()?;
        Ok(bank)
    }

    /// Starts op `seq`: from here until `commit_op`, every change can be taken back.
    pub fn begin_op(&mut self, seq: u64) -> anyhow::Result<()> {
        self.undo = Some(UndoLog::begin(&self.dir, seq)?);
        Ok(())
    }

    /// Starts an op that is never taken back whole (a propagation resumes instead): the
    /// previous op's log goes, nothing is logged.
    pub fn begin_unlogged_op(&mut self) -> anyhow::Result<()> {
        self.undo = None;
        bank_undo::discard(&self.dir)
    }

    pub fn commit_op(&mut self) -> anyhow::Result<()> {
        match self.undo.take() {
            Some(log) => log.commit(),
            None => Ok(()),
        }
    }

    /// The op whose changes the bank can still take back.
    pub fn logged_op(&self) -> anyhow::Result<Option<LoggedOp>> {
        bank_undo::logged(&self.dir)
    }

    /// Takes back every change of the logged op and forgets what RAM held.
    pub fn roll_back_op(&mut self) -> anyhow::Result<()> {
        self.undo = None;
        bank_undo::roll_back(&self.dir)?;
        self.index.clear();
        self.scan()
    }

    /// Called before `path` (inside the bank) is written, overwritten or removed.
    fn preserve(&mut self, path: &Path) -> anyhow::Result<()> {
        BEFORE_CHANGE.with(|h| {
            if let Some(hook) = h.borrow().as_ref() {
                hook();
            }
        });
        match self.undo.as_mut() {
            Some(log) => log.preserve(path),
            None => Ok(()),
        }
    }

    /// Rebuilds the index from the files (entries load lazily).
    fn scan(&mut self) -> anyhow::Result<()> {
        for obj_dir in std::fs::read_dir(&self.dir)?.flatten() {
            let name = obj_dir.file_name().to_string_lossy().to_string();
            let Some(id) = name.strip_prefix('o').and_then(|s| s.parse::<ObjectId>().ok()) else { continue };
            for f in std::fs::read_dir(obj_dir.path())?.flatten() {
                let fname = f.file_name().to_string_lossy().to_string();
                let Some(stem) = fname.strip_suffix(".bin") else { continue };
                let Some((slot, frame)) = stem.split_once('-') else { continue };
                let (Some(slot), Ok(frame)) = (Slot::parse(slot), frame.parse::<usize>()) else { continue };
                let tracked = read_header(&f.path())?.0;
                self.index.entry(id).or_default().insert((slot, frame), Record { tracked, entry: RefCell::new(None) });
            }
        }
        Ok(())
    }

    fn path(&self, id: ObjectId, slot: Slot, frame: usize) -> PathBuf {
        self.dir.join(format!("o{id}")).join(format!("{}-{frame:07}.bin", slot.name()))
    }

    pub fn contains(&self, id: ObjectId, slot: Slot, frame: usize) -> bool {
        self.index.get(&id).is_some_and(|m| m.contains_key(&(slot, frame)))
    }

    /// Some(reverse) if the frame was tracked for this object.
    pub fn tracked(&self, id: ObjectId, frame: usize) -> Option<bool> {
        let m = self.index.get(&id)?;
        [Slot::Cond, Slot::NonCond].iter().find_map(|s| m.get(&(*s, frame)).and_then(|r| r.tracked))
    }

    pub fn get(&self, id: ObjectId, slot: Slot, frame: usize) -> Option<Rc<Entry>> {
        let rec = self.index.get(&id)?.get(&(slot, frame))?;
        if let Some(e) = rec.entry.borrow().as_ref() {
            return Some(e.clone());
        }
        let e = Rc::new(
            read_entry(&self.path(id, slot, frame), self.device).unwrap_or_else(|err| panic!("memory bank: {err:#}")),
        );
        *rec.entry.borrow_mut() = Some(e.clone());
        Some(e)
    }

    pub fn frames(&self, id: ObjectId, slot: Slot) -> Vec<usize> {
        self.index.get(&id).map(|m| m.keys().filter(|(s, _)| *s == slot).map(|(_, f)| *f).collect()).unwrap_or_default()
    }

    pub fn cond_frames(&self, id: ObjectId) -> Vec<usize> {
        self.frames(id, Slot::Cond)
    }

    /// Stores an entry (replacing any), written through to disk.
    pub fn put(
        &mut self,
        id: ObjectId,
        slot: Slot,
        frame: usize,
        entry: Entry,
        tracked: Option<bool>,
    ) -> anyhow::Result<()> {
        let path = self.path(id, slot, frame);
        self.preserve(&path)?;
        write_entry(&path, &entry, tracked)?;
        self.keep(id, slot, frame, entry, tracked);
        Ok(())
    }

    /// As `put` for several entries (the objects of one propagation frame), in two
    /// halves so that the caller can work while the files are written: each kept entry
    /// (on the device) is in RAM when this returns, and its file is to be written from
    /// `on_disk`, the same values already on the host, so the write does not wait for the
    /// device. Every path is preserved here. Then the caller writes the files
    /// (`write_files` over `PendingWrites::parts`: several threads at once, each file
    /// whole or absent) and hands the outcome to `settle_copied_many`. Propagation hands a
    /// frame on only after that, so nothing outside it sees the entries before their files
    /// are written.
    pub fn keep_copied_many(&mut self, puts: Vec<CopiedPut>) -> anyhow::Result<PendingWrites> {
        let mut files = Vec::with_capacity(puts.len());
        for p in &puts {
            let path = self.path(p.id, p.slot, p.frame);
            self.preserve(&path)?;
            files.push((path, EntryFile::of(&p.on_disk, p.tracked)));
        }
        let replaced = puts
            .into_iter()
            .map(|p| (p.id, p.slot, p.frame, self.keep(p.id, p.slot, p.frame, p.entry, p.tracked)))
            .collect();
        Ok(PendingWrites { files, replaced })
    }

    /// The end of `keep_copied_many`: on a failed write the entries written stay, each
    /// other one's previous record is back in RAM, and the first error (in `puts` order)
    /// is returned.
    pub fn settle_copied_many(
        &mut self,
        pending: PendingWrites,
        written: Vec<anyhow::Result<()>>,
    ) -> anyhow::Result<()> {
        let mut first_error = None;
        for ((id, slot, frame, previous), outcome) in pending.replaced.into_iter().zip(written) {
            if let Err(e) = outcome {
                let m = self.index.entry(id).or_default();
                match previous {
                    Some(r) => m.insert((slot, frame), r),
                    None => m.remove(&(slot, frame)),
                };
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Puts an entry in RAM; the record it replaces, if any.
    fn keep(&mut self, id: ObjectId, slot: Slot, frame: usize, entry: Entry, tracked: Option<bool>) -> Option<Record> {
        self.index
            .entry(id)
            .or_default()
            .insert((slot, frame), Record { tracked, entry: RefCell::new(Some(Rc::new(entry))) })
    }

    /// Stores an entry in RAM only, for the frame being tracked while the previous one is
    /// still being written out (propagation runs one frame ahead of its outputs). `put`
    /// writes it through later; `unstage` undoes it exactly, older record included.
    pub fn stage(&mut self, id: ObjectId, slot: Slot, frame: usize, entry: Entry, tracked: Option<bool>) -> Staged {
        let record = Record { tracked, entry: RefCell::new(Some(Rc::new(entry))) };
        let previous = self.index.entry(id).or_default().insert((slot, frame), record);
        Staged { id, slot, frame, previous }
    }

    pub fn unstage(&mut self, staged: Staged) {
        let m = self.index.entry(staged.id).or_default();
        match staged.previous {
            Some(r) => m.insert((staged.slot, staged.frame), r),
            None => m.remove(&(staged.slot, staged.frame)),
        };
    }

    pub fn take(&mut self, id: ObjectId, slot: Slot, frame: usize) -> anyhow::Result<Option<Entry>> {
        if !self.contains(id, slot, frame) {
            return Ok(None);
        }
        let e = self.get(id, slot, frame).map(|e| e.shallow());
        self.index.get_mut(&id).unwrap().remove(&(slot, frame));
        let path = self.path(id, slot, frame);
        self.preserve(&path)?;
        let _ = std::fs::remove_file(path);
        Ok(e)
    }

    fn set_tracked(&mut self, id: ObjectId, frame: usize, tracked: Option<bool>) -> anyhow::Result<()> {
        for slot in [Slot::Cond, Slot::NonCond] {
            if self.contains(id, slot, frame) {
                let e = self.get(id, slot, frame).unwrap();
                let path = self.path(id, slot, frame);
                self.preserve(&path)?;
                write_entry(&path, &e, tracked)?;
                self.index.get_mut(&id).unwrap().get_mut(&(slot, frame)).unwrap().tracked = tracked;
            }
        }
        Ok(())
    }

    pub fn mark_tracked(&mut self, id: ObjectId, frame: usize, reverse: bool) -> anyhow::Result<()> {
        if self.tracked(id, frame) == Some(reverse) {
            return Ok(());
        }
        self.set_tracked(id, frame, Some(reverse))
    }

    /// Drops from RAM the tracking outputs SAM 2 can no longer attend to from `frame`
    /// (they stay on disk for corrections and reverse passes).
    pub fn advance(&mut self, frame: usize, _reverse: bool) {
        for m in self.index.values() {
            for ((slot, f), rec) in m.iter() {
                if *slot == Slot::NonCond && f.abs_diff(frame) > HOT_WINDOW {
                    rec.entry.borrow_mut().take();
                }
            }
        }
    }

    pub fn remove_object(&mut self, id: ObjectId) -> anyhow::Result<()> {
        self.index.remove(&id);
        let d = self.dir.join(format!("o{id}"));
        if d.exists() {
            // Under an undo log, preserving the directory is what removes it.
            self.preserve(&d)?;
            if d.exists() {
                std::fs::remove_dir_all(&d)?;
            }
        }
        Ok(())
    }

    pub fn clear(&mut self) -> anyhow::Result<()> {
        let ids: Vec<ObjectId> = self.index.keys().copied().collect();
        for id in ids {
            self.remove_object(id)?;
        }
        let state = self.dir.join("state.json");
        self.preserve(&state)?;
        let _ = std::fs::remove_file(state);
        Ok(())
    }

    /// The objects (in order) and their prompts, saved after every op.
    pub fn save_state<T: serde::Serialize>(&mut self, state: &T) -> anyhow::Result<()> {
        let path = self.dir.join("state.json");
        self.preserve(&path)?;
        sam2_api::util::atomic_write(&path, serde_json::to_string(state)?.as_bytes())
    }

    pub fn load_state<T: serde::de::DeserializeOwned + Default>(&self) -> anyhow::Result<T> {
        let p = self.dir.join("state.json");
        if !p.exists() {
            return Ok(T::default());
        }
        let text = std::fs::read_to_string(&p)?;
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: corrupt memory bank state: {e}", p.display()))
    }
}

/// An entry as its file holds it: a 10-byte header (magic, tracked direction, whether
/// memory features follow, the mask's side), then the values of its tensors, each a
/// contiguous host tensor of its kind: the memory features in bf16 (when present), the
/// mask logits, the object pointer and the score in fp32.
struct EntryFile {
    header: [u8; 10],
    tensors: Vec<Tensor>,
}

impl EntryFile {
    fn of(e: &Entry, tracked: Option<bool>) -> EntryFile {
        let mut header = [0u8; 10];
        header[..4].copy_from_slice(MAGIC);
        header[4] = match tracked {
            None => 0,
            Some(false) => 1,
            Some(true) => 2,
        };
        header[5] = e.maskmem.is_some() as u8;
        header[6..].copy_from_slice(&(e.pred_masks.size()[3] as u32).to_le_bytes());
        // No-ops for the host copies propagation hands over (already host, kind, dense).
        let host = |t: &Tensor, kind: Kind| t.to_device(Device::Cpu).to_kind(kind).contiguous();
        let mut tensors: Vec<Tensor> = e.maskmem.iter().map(|m| host(m, Kind::BFloat16)).collect();
        tensors.extend([host(&e.pred_masks, Kind::Float), host(&e.obj_ptr, Kind::Float), host(&e.score, Kind::Float)]);
        EntryFile { header, tensors }
    }

    /// The file's bytes in order, borrowed from `self`.
    fn parts(&self) -> Vec<&[u8]> {
        let mut parts = vec![&self.header[..]];
        parts.extend(self.tensors.iter().map(|t| {
            let len = t.numel() * t.kind().elt_size_in_bytes();
            // SAFETY: `t` is a contiguous CPU tensor of `len` bytes, owned by `self` and
            // not written while the slice (tied to `&self`) is in use.
            unsafe { std::slice::from_raw_parts(t.data_ptr() as *const u8, len) }
        }));
        parts
    }
}

/// Writes each file (path, its bytes in parts) atomically (unflushed, as `write_entry`),
/// with several threads for several files, each writing from the parts (the entries'
/// host tensors) straight into the file. One frame of 16 objects is 16 files of 787 KB;
/// written one after another they took 35–45 ms a frame on a 2-core VM (each write waits
/// on fresh page-cache pages), four at a time about a tenth of that (a Python loop
/// writing the same files: 22–39 against 3.5–3.9 ms a frame). Serialised into buffers on
/// the model thread first, then written by four threads, they still took 7.9 ms of an
/// H100 host's 25 ms frame, which the host then bounded. The threads run no libtorch
/// code, so they start no OpenMP teams (see `VideoPredictor::write_out`).
pub fn write_files(files: &[(PathBuf, Vec<&[u8]>)]) -> Vec<anyhow::Result<()>> {
    // Writes wait on the page cache more than on a core: four threads pay even on two cores.
    let threads = crate::host_threads::cores().clamp(4, 8);
    crate::host_threads::map(files.iter().collect(), threads, |(path, parts)| {
        sam2_api::util::atomic_write_parts_unflushed(path, parts)
    })
}

/// Written unflushed: entries must survive the engine crashing (they do, in the page
/// cache); a flush per frame would put a disk round trip on every frame.
fn write_entry(path: &Path, e: &Entry, tracked: Option<bool>) -> anyhow::Result<()> {
    sam2_api::util::atomic_write_parts_unflushed(path, &EntryFile::of(e, tracked).parts())
}

fn read_header(path: &Path) -> anyhow::Result<(Option<bool>, bool, i64)> {
    use std::io::Read;
    let mut h = [0u8; 10];
    std::fs::File::open(path)?.read_exact(&mut h).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    anyhow::ensure!(&h[..4] == MAGIC, "{}: not a memory bank entry", path.display());
    let tracked = match h[4] {
        1 => Some(false),
        2 => Some(true),
        _ => None,
    };
    Ok((tracked, h[5] == 1, u32::from_le_bytes([h[6], h[7], h[8], h[9]]) as i64))
}

fn read_entry(path: &Path, device: Device) -> anyhow::Result<Entry> {
    let (_, has_mem, e4) = read_header(path)?;
    let bytes = std::fs::read(path)?;
    let e = e4 / 4;
    let mut off = 10usize;
    let mut take = |n: usize, kind: Kind, shape: &[i64]| -> anyhow::Result<Tensor> {
        let len = n * kind.elt_size_in_bytes();
        anyhow::ensure!(off + len <= bytes.len(), "{}: truncated memory bank entry", path.display());
        let t = Tensor::from_data_size(&bytes[off..off + len], shape, kind);
        off += len;
        Ok(t.to_device(device))
    };
    let maskmem = if has_mem { Some(take((64 * e * e) as usize, Kind::BFloat16, &[1, 64, e, e])?) } else { None };
    let pred_masks = take((e4 * e4) as usize, Kind::Float, &[1, 1, e4, e4])?;
    let obj_ptr = take(256, Kind::Float, &[1, 256])?;
    let score = take(1, Kind::Float, &[1, 1])?;
    Ok(Entry { maskmem, pred_masks, obj_ptr, score })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(value: f64) -> Entry {
        let t = |shape: &[i64]| Tensor::full(shape, value, (Kind::Float, Device::Cpu));
        Entry {
            maskmem: Some(t(&[1, 64, 4, 4]).to_kind(Kind::BFloat16)),
            pred_masks: t(&[1, 1, 16, 16]),
            obj_ptr: t(&[1, 256]),
            score: t(&[1, 1]),
        }
    }

    fn put(id: ObjectId, value: f64) -> CopiedPut {
        CopiedPut {
            id,
            slot: Slot::NonCond,
            frame: 3,
            entry: entry(value),
            on_disk: entry(value),
            tracked: Some(false),
        }
    }

    #[test]
    fn a_frames_entries_are_in_ram_while_their_files_are_written_and_a_failed_one_gives_back_what_it_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let mut bank = MemoryBank::open(Some(dir.path().to_path_buf()), Device::Cpu).unwrap();
        // Object 2's folder cannot be made: a file stands at its name.
        std::fs::write(dir.path().join("o2"), b"not a folder").unwrap();
        for id in [1, 2] {
            let _ = bank.stage(id, Slot::NonCond, 3, entry(-1.0), Some(false));
        }
        let pending = bank.keep_copied_many(vec![put(1, 1.0), put(2, 2.0)]).unwrap();
        // Kept in RAM before any file is written (what the frame's masks are read from).
        for (id, value) in [(1, 1.0), (2, 2.0)] {
            let score = bank.get(id, Slot::NonCond, 3).unwrap().score.double_value(&[0, 0]);
            assert_eq!(score, value, "object {id} in RAM");
        }
        let written = write_files(&pending.parts());
        let e = bank.settle_copied_many(pending, written).unwrap_err().to_string();
        assert!(e.contains("o2"), "the error names the entry that failed: {e}");
        // Object 1 is written and kept; object 2 has its staged entry back, and no file.
        assert_eq!(bank.get(1, Slot::NonCond, 3).unwrap().score.double_value(&[0, 0]), 1.0);
        let on_disk = read_entry(&bank.path(1, Slot::NonCond, 3), Device::Cpu).unwrap();
        assert_eq!(on_disk.score.double_value(&[0, 0]), 1.0, "object 1's file is whole");
        assert_eq!(bank.get(2, Slot::NonCond, 3).unwrap().score.double_value(&[0, 0]), -1.0);
    }

    #[test]
    fn a_frames_files_are_written_whole_by_several_threads_and_each_failure_is_reported_for_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let blocked = dir.path().join("not-a-folder");
        std::fs::write(&blocked, b"a file where a folder is expected").unwrap();
        let contents: Vec<Vec<u8>> = (0..9u8).map(|i| vec![i; 300_000 + i as usize]).collect();
        // Each file from three parts, as an entry's header and tensors.
        let mut files: Vec<(PathBuf, Vec<&[u8]>)> = contents
            .iter()
            .enumerate()
            .map(|(i, c)| (dir.path().join(format!("e{i}")), vec![&c[..10], &c[10..1000], &c[1000..]]))
            .collect();
        // Two entries that cannot be written: their folder is a file.
        files[3].0 = blocked.join("e3");
        files[6].0 = blocked.join("e6");
        let results = write_files(&files);
        assert_eq!(results.len(), files.len());
        for (i, (((path, _), bytes), result)) in files.iter().zip(&contents).zip(&results).enumerate() {
            if i == 3 || i == 6 {
                assert!(result.is_err(), "entry {i} cannot be written");
                assert!(!path.exists());
            } else {
                assert!(result.is_ok(), "entry {i}: {result:?}");
                assert_eq!(&std::fs::read(path).unwrap(), bytes, "entry {i} whole");
            }
        }
        // Nothing else was left behind (no temporary files of the atomic writes).
        let mut names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names.len(), 8, "{names:?}");
    }
}
