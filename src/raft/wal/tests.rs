//! The WAL against a file layer that simulates power cuts: [`CrashFs`] keeps, for every
//! file, what was synced apart from what was only written, and for the directory, what was
//! synced apart from what was only renamed or created. A power cut keeps the synced state and,
//! for a torn cut, a random subset of the unsynced 512-byte sectors.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::fs::{WalFile, WalFs};
use super::*;

#[derive(Default)]
struct MemFile {
    /// What a reader sees.
    written: Mutex<Vec<u8>>,
    /// What a power cut keeps.
    synced: Mutex<Vec<u8>>,
}

impl WalFile for MemFile {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        let mut w = self.written.lock().unwrap();
        let end = offset as usize + buf.len();
        if w.len() < end {
            w.resize(end, 0);
        }
        w[offset as usize..end].copy_from_slice(buf);
        Ok(())
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let w = self.written.lock().unwrap();
        let src = w
            .get(offset as usize..offset as usize + buf.len())
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn sync_data(&self) -> std::io::Result<()> {
        let w = self.written.lock().unwrap().clone();
        *self.synced.lock().unwrap() = w;
        Ok(())
    }
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.written.lock().unwrap().len() as u64)
    }
}

#[derive(Default)]
struct Dir {
    live: BTreeMap<String, Arc<MemFile>>,
    synced: BTreeMap<String, Arc<MemFile>>,
}

/// The simulated disk.
#[derive(Default, Clone)]
struct CrashFs {
    dir: Arc<Mutex<Dir>>,
}

impl WalFs for CrashFs {
    fn list(&self) -> std::io::Result<Vec<String>> {
        Ok(self.dir.lock().unwrap().live.keys().cloned().collect())
    }
    fn open(&self, name: &str) -> std::io::Result<Arc<dyn WalFile>> {
        let d = self.dir.lock().unwrap();
        let f = d
            .live
            .get(name)
            .cloned()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
        Ok(f)
    }
    fn create_zeroed(&self, name: &str, len: u64) -> std::io::Result<Arc<dyn WalFile>> {
        let f = Arc::new(MemFile::default());
        f.write_all_at(&vec![0; len as usize], 0)?;
        f.sync_data()?;
        self.dir
            .lock()
            .unwrap()
            .live
            .insert(name.to_string(), f.clone());
        Ok(f)
    }
    fn rename(&self, from: &str, to: &str) -> std::io::Result<()> {
        let mut d = self.dir.lock().unwrap();
        let f = d
            .live
            .remove(from)
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
        d.live.insert(to.to_string(), f);
        Ok(())
    }
    fn remove(&self, name: &str) -> std::io::Result<()> {
        self.dir.lock().unwrap().live.remove(name);
        Ok(())
    }
    fn sync_dir(&self) -> std::io::Result<()> {
        let mut d = self.dir.lock().unwrap();
        d.synced = d.live.clone();
        Ok(())
    }
}

impl CrashFs {
    /// The disk after a power cut now: synced names and bytes, plus (when `torn`) a random
    /// subset of the sectors written since the last sync.
    fn power_cut(&self, rng: Option<&mut StdRng>) -> CrashFs {
        let d = self.dir.lock().unwrap();
        let mut rng = rng;
        let mut live = BTreeMap::new();
        for (name, f) in &d.synced {
            let mut bytes = f.synced.lock().unwrap().clone();
            if let Some(rng) = rng.as_deref_mut() {
                let written = f.written.lock().unwrap();
                if bytes.len() < written.len() {
                    bytes.resize(written.len(), 0);
                }
                for s in (0..written.len()).step_by(512) {
                    let e = (s + 512).min(written.len());
                    if bytes[s..e] != written[s..e] && rng.gen_bool(0.5) {
                        bytes[s..e].copy_from_slice(&written[s..e]);
                    }
                }
            }
            let nf = MemFile::default();
            *nf.written.lock().unwrap() = bytes.clone();
            *nf.synced.lock().unwrap() = bytes;
            live.insert(name.clone(), Arc::new(nf));
        }
        CrashFs {
            dir: Arc::new(Mutex::new(Dir {
                synced: live.clone(),
                live,
            })),
        }
    }

    fn names(&self) -> Vec<String> {
        self.list().unwrap()
    }
}

fn small() -> WalOptions {
    WalOptions {
        segment_bytes: 16 << 10,
    }
}

fn open(fs: &CrashFs) -> Result<Wal, WalError> {
    Wal::open(Arc::new(fs.clone()), small())
}

fn payload(index: u64, term: u64) -> Vec<u8> {
    let len = 10 + (index * 37 % 700) as usize;
    let mut v = vec![(index % 251) as u8; len];
    v[..8].copy_from_slice(&index.to_le_bytes());
    v[8] = term as u8;
    v
}

/// Appends `indexes` in batches of up to 5, and sends each index on `acked` once its batch
/// is acknowledged.
fn append_all(wal: &Wal, indexes: std::ops::RangeInclusive<u64>, acked: &mpsc::Sender<u64>) {
    let all: Vec<u64> = indexes.collect();
    for batch in all.chunks(5) {
        let data: Vec<(u64, Vec<u8>)> = batch.iter().map(|&i| (i, payload(i, 1))).collect();
        let tx = acked.clone();
        let idx = batch.to_vec();
        wal.append(
            data.iter().map(|(i, b)| (*i, b.as_slice())),
            Some(Box::new(move |r| {
                if r.is_ok() {
                    for i in idx {
                        let _ = tx.send(i);
                    }
                }
            })),
        )
        .unwrap();
    }
}

fn check_entries(wal: &Wal, upto_at_least: u64) -> u64 {
    let st = wal.state();
    let (first, last) = st.entries.expect("entries");
    assert!(
        last >= upto_at_least,
        "lost acknowledged entries: last {last} < {upto_at_least}"
    );
    for i in first..=last {
        assert_eq!(wal.read(i).unwrap().unwrap(), payload(i, 1), "entry {i}");
    }
    last
}

#[test]
fn power_cuts_keep_every_acknowledged_entry() {
    for seed in 0..20u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let torn = seed % 2 == 1;
        let mut fs = CrashFs::default();
        let mut next = 1u64;
        let mut acked_upto = 0u64;
        for _round in 0..4 {
            let wal = open(&fs).unwrap();
            if acked_upto > 0 {
                next = check_entries(&wal, acked_upto) + 1;
            }
            let vote = format!("vote-{seed}-{next}");
            wal.save_vote(vote.as_bytes(), None).unwrap();
            let (tx, rx) = mpsc::channel();
            let n = rng.gen_range(20..200);
            append_all(&wal, next..=next + n, &tx);
            // Cut the power after some acknowledgements, while the writer is busy.
            let wait_for = rng.gen_range(0..n / 2);
            let mut seen = Vec::new();
            while seen.len() < wait_for as usize {
                seen.push(rx.recv().unwrap());
            }
            let cut = fs.power_cut(torn.then_some(&mut rng));
            seen.extend(rx.try_iter());
            // Acks after the cut was taken may not be in it: only count what came before.
            let before: Vec<u64> = seen[..wait_for as usize].to_vec();
            if let Some(&max) = before.iter().max() {
                acked_upto = acked_upto.max(max);
            }
            drop(wal);
            fs = cut;
        }
        let wal = open(&fs).unwrap();
        check_entries(&wal, acked_upto);
        assert!(wal.state().vote.is_some());
    }
}

#[test]
fn a_synced_vote_and_truncation_survive_a_power_cut() {
    let fs = CrashFs::default();
    let wal = open(&fs).unwrap();
    let (tx, _rx) = mpsc::channel();
    append_all(&wal, 1..=50, &tx);
    wal.sync_blocking().unwrap();
    wal.truncate(31, None).unwrap();
    wal.save_vote(b"v2", None).unwrap();
    wal.save_committed(b"c30").unwrap();
    wal.sync_blocking().unwrap();
    // Not synced: lost at the cut.
    wal.save_vote(b"v3", None).unwrap();
    let cut = fs.power_cut(None);
    drop(wal);
    let wal = open(&cut).unwrap();
    let st = wal.state();
    assert_eq!(st.entries, Some((1, 30)));
    assert_eq!(st.vote.as_deref(), Some(&b"v2"[..]));
    assert_eq!(st.committed.as_deref(), Some(&b"c30"[..]));
}

#[test]
fn purge_drops_whole_segments_and_keeps_the_state() {
    let fs = CrashFs::default();
    let wal = open(&fs).unwrap();
    wal.save_vote(b"v1", None).unwrap();
    wal.save_committed(b"c").unwrap();
    let (tx, _rx) = mpsc::channel();
    append_all(&wal, 1..=400, &tx);
    wal.sync_blocking().unwrap();
    let before = fs.names().len();
    assert!(before > 5, "expected many segments, got {before}");
    wal.purge(300, b"p300").unwrap();
    wal.sync_blocking().unwrap();
    // Deletion follows the sync that made the purge durable.
    wal.sync_blocking().unwrap();
    let after = fs.names().iter().filter(|n| n.ends_with(".wal")).count();
    assert!(
        after < before / 2,
        "segments before {before}, after {after}"
    );
    fs.sync_dir().unwrap();
    drop(wal);
    let wal = open(&fs.power_cut(None)).unwrap();
    let st = wal.state();
    assert_eq!(st.entries, Some((301, 400)));
    assert_eq!(st.purged, Some((300, b"p300".to_vec())));
    assert_eq!(st.vote.as_deref(), Some(&b"v1"[..]));
    assert_eq!(st.committed.as_deref(), Some(&b"c"[..]));
    for i in 301..=400 {
        assert_eq!(wal.read(i).unwrap().unwrap(), payload(i, 1));
    }
}

/// Writes 30 entries and syncs; returns the disk and the offset of entry 10's record.
fn thirty_entries() -> (CrashFs, String) {
    let fs = CrashFs::default();
    let wal = open(&fs).unwrap();
    let (tx, _rx) = mpsc::channel();
    append_all(&wal, 1..=30, &tx);
    wal.sync_blocking().unwrap();
    drop(wal);
    let name = fs
        .names()
        .into_iter()
        .find(|n| n.ends_with(".wal"))
        .unwrap();
    (fs, name)
}

#[test]
fn a_flipped_bit_before_good_records_is_refused_with_the_place() {
    let (fs, name) = thirty_entries();
    let f = fs.open(&name).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, 300).unwrap();
    f.write_all_at(&[b[0] ^ 0x10], 300).unwrap();
    let err = open(&fs).err().expect("corrupt wal opened");
    let msg = err.to_string();
    assert!(matches!(err, WalError::Corrupt { .. }), "{msg}");
    assert!(msg.contains(&name) && msg.contains("offset"), "{msg}");
}

#[test]
fn a_torn_last_record_is_cut_and_the_log_goes_on() {
    let (fs, name) = thirty_entries();
    let wal = open(&fs).unwrap();
    let last_ok = wal.state().entries.unwrap().1;
    assert_eq!(last_ok, 30);
    // A torn append: the record of entry 31 with one sector lost.
    let (tx, _rx) = mpsc::channel();
    append_all(&wal, 31..=31, &tx);
    wal.sync_blocking().unwrap();
    drop(wal);
    let f = fs.open(&name).unwrap();
    let mut buf = vec![0u8; f.size().unwrap() as usize];
    f.read_exact_at(&mut buf, 0).unwrap();
    let end = buf.iter().rposition(|&b| b != 0).unwrap();
    // Zero the last sector the record touches (never its header's sector: it is long).
    let sector = end / 512 * 512;
    f.write_all_at(&vec![0; end + 1 - sector], sector as u64)
        .unwrap();
    let wal = open(&fs).unwrap();
    assert_eq!(
        wal.state().entries,
        Some((1, 30)),
        "torn entry 31 must be cut"
    );
    let (tx, _rx) = mpsc::channel();
    append_all(&wal, 31..=40, &tx);
    wal.sync_blocking().unwrap();
    drop(wal);
    let wal = open(&fs).unwrap();
    check_entries(&wal, 40);
}

#[test]
fn a_foreign_file_is_refused_naming_the_format() {
    let fs = CrashFs::default();
    let f = fs.create_zeroed("0000000000000000.wal", 4096).unwrap();
    f.write_all_at(b"bbolt? sled? something else entirely", 0)
        .unwrap();
    let err = open(&fs).err().expect("foreign file opened");
    assert!(matches!(err, WalError::Foreign { .. }), "{err}");
    assert!(err.to_string().contains("minietcd-wal-v1"), "{err}");
    let fs = CrashFs::default();
    fs.create_zeroed("notes.txt", 10).unwrap();
    assert!(matches!(open(&fs), Err(WalError::Foreign { .. })));
}

#[test]
fn large_entries_get_a_segment_of_their_own() {
    let fs = CrashFs::default();
    let wal = open(&fs).unwrap();
    let big = vec![7u8; 100 << 10];
    wal.append([(1, big.as_slice()), (2, b"small".as_slice())], None)
        .unwrap();
    wal.sync_blocking().unwrap();
    drop(wal);
    let wal = open(&fs.power_cut(None)).unwrap();
    assert_eq!(wal.read(1).unwrap().unwrap(), big);
    assert_eq!(wal.read(2).unwrap().unwrap(), b"small");
}

#[test]
fn real_files_sync_once_for_many_appends() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Arc::new(fs::StdFs::new(dir.path()).unwrap());
    let wal = Wal::open(fs.clone(), small()).unwrap();
    let syncs_before = wal.syncs();
    let (tx, rx) = mpsc::channel();
    append_all(&wal, 1..=500, &tx);
    wal.sync_blocking().unwrap();
    assert_eq!(rx.try_iter().count(), 500);
    let syncs = wal.syncs() - syncs_before;
    assert!(
        syncs < 100,
        "100 appends took {syncs} syncs: no group commit"
    );
    drop(wal);
    let wal = Wal::open(fs, small()).unwrap();
    check_entries(&wal, 500);
}
