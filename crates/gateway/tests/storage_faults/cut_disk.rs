//! A SQLite VFS that keeps every file in memory and loses what was not fsynced at a power cut; it
//! can also be made small (a full disk) or failing (an SD card's I/O errors).
//!
//! It is the disk of the power-cut test, in the manner of SQLite's own crash tests: a write changes
//! what reads see at once, but it reaches the "platter" only when its file is synced. [`arm`] picks
//! the mutating call (write, truncate or sync) at which the power fails: that call and every call
//! after it fails with `SQLITE_IOERR`, as the dying process would see its last calls fail.
//! [`power_on`] then makes the disk what a real one could be after the cut: each write that was not
//! synced is lost, kept, or torn (some of its 512-byte sectors written, others not), chosen by the
//! seed, and the shared-memory WAL index is gone, as RAM is.
//!
//! [`set_capacity`] bounds the bytes all files may hold: a write that would grow them beyond it
//! fails with `SQLITE_FULL`, and [`free_space`] reports what is left, as `statvfs` would.
//! [`fail_io`] makes every read, write and sync fail with `SQLITE_IOERR` until it is turned off,
//! with the power on.
//!
//! One connection at a time (locks always succeed); registered as the process's default VFS, so
//! the gateway opens its database through it without knowing.
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rusqlite::ffi;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::{Mutex, MutexGuard, Once};

const SECTOR: usize = 512;
const VFS_NAME: &CStr = c"gramgrid-cut-disk";

/// A change to a file that was not synced yet.
enum Pending {
    Write { offset: usize, bytes: Vec<u8> },
    Truncate { size: usize },
}

#[derive(Default)]
struct File {
    /// What reads see.
    current: Vec<u8>,
    /// What survives a power cut.
    durable: Vec<u8>,
    /// Changes since the last sync, in order.
    pending: Vec<Pending>,
}

impl Pending {
    fn apply_to(&self, data: &mut Vec<u8>) {
        match self {
            Pending::Write { offset, bytes } => write_at(data, *offset, bytes),
            Pending::Truncate { size } => data.truncate(*size),
        }
    }
}

fn write_at(data: &mut Vec<u8>, offset: usize, bytes: &[u8]) {
    let end = offset + bytes.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    data[offset..end].copy_from_slice(bytes);
}

/// The disk: files by path, the WAL index regions by database path, and the power switch.
#[derive(Default)]
struct Disk {
    files: HashMap<String, File>,
    shm: HashMap<String, Vec<Box<[u8]>>>,
    /// Mutating calls left before the power fails (None: not armed).
    countdown: Option<u64>,
    powered_off: bool,
    /// Bytes all files may hold (None: unbounded).
    capacity: Option<u64>,
    /// Every read, write and sync fails (an SD card's I/O errors).
    failing: bool,
    /// Mutating calls since the last [`reset`]: the workload's length, to choose cut points in.
    mutations: u64,
}

static DISK: Mutex<Option<Disk>> = Mutex::new(None);

fn disk() -> MutexGuard<'static, Option<Disk>> {
    DISK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn with_disk<T>(f: impl FnOnce(&mut Disk) -> T) -> T {
    f(disk().get_or_insert_with(Disk::default))
}

/// Registers the VFS as the process's default (once) and empties the disk.
pub fn reset() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(register);
    with_disk(|d| *d = Disk::default());
}

/// Fails the power at the `nth` mutating call from now (1 = the next one).
pub fn arm(nth: u64) {
    with_disk(|d| d.countdown = Some(nth.max(1)));
}

/// Whether the power has failed.
pub fn powered_off() -> bool {
    with_disk(|d| d.powered_off)
}

/// Bounds the bytes all files may hold (None: unbounded).
pub fn set_capacity(bytes: Option<u64>) {
    with_disk(|d| d.capacity = bytes);
}

/// Bytes the files hold now.
pub fn used() -> u64 {
    with_disk(|d| d.used())
}

/// Free bytes under the capacity (None when unbounded), as the gateway's disk probe reads them.
pub fn free_space() -> Option<u64> {
    with_disk(|d| d.capacity.map(|c| c.saturating_sub(d.used())))
}

/// Makes every read, write and sync fail (true) or work again (false).
pub fn fail_io(failing: bool) {
    with_disk(|d| d.failing = failing);
}

impl Disk {
    fn used(&self) -> u64 {
        self.files.values().map(|f| f.current.len() as u64).sum()
    }

    /// Whether a write growing `path` to `end` bytes fits the capacity.
    fn fits(&self, path: &str, end: usize) -> bool {
        let Some(capacity) = self.capacity else {
            return true;
        };
        let current = self.files.get(path).map_or(0, |f| f.current.len());
        let growth = end.saturating_sub(current) as u64;
        self.used() + growth <= capacity
    }
}

/// Mutating calls (writes, truncates, syncs) since the last [`reset`].
pub fn mutations() -> u64 {
    with_disk(|d| d.mutations)
}

/// Restores power: every file becomes what the disk held at the cut, unsynced writes lost, kept or
/// torn as `seed` decides. Returns how many unsynced changes there were. Call with no connection open.
pub fn power_on(seed: u64) -> usize {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    with_disk(|d| {
        let mut unsynced = 0;
        for file in d.files.values_mut() {
            let mut after = file.durable.clone();
            for change in file.pending.drain(..) {
                unsynced += 1;
                match rng.random_range(0..4) {
                    0 | 1 => {}
                    2 => change.apply_to(&mut after),
                    _ => tear(&change, &mut after, &mut rng),
                }
            }
            file.current = after.clone();
            file.durable = after;
        }
        d.shm.clear();
        d.countdown = None;
        d.powered_off = false;
        unsynced
    })
}

/// Writes some sectors of an unsynced write and not others (a truncate happens or not).
fn tear(change: &Pending, data: &mut Vec<u8>, rng: &mut ChaCha8Rng) {
    match change {
        Pending::Write { offset, bytes } => {
            for (i, sector) in bytes.chunks(SECTOR).enumerate() {
                if rng.random_bool(0.5) {
                    write_at(data, offset + i * SECTOR, sector);
                }
            }
        }
        Pending::Truncate { .. } => {
            if rng.random_bool(0.5) {
                change.apply_to(data);
            }
        }
    }
}

/// Counts a mutating call; false when the power fails at it (or failed before).
fn power_for_mutation(d: &mut Disk) -> bool {
    if d.powered_off || d.failing {
        return false;
    }
    d.mutations += 1;
    if let Some(left) = d.countdown.as_mut() {
        *left -= 1;
        if *left == 0 {
            d.countdown = None;
            d.powered_off = true;
            return false;
        }
    }
    true
}

#[repr(C)]
struct CutFile {
    base: ffi::sqlite3_file,
    path: String,
    delete_on_close: bool,
}

/// # Safety
/// `file` is a file this VFS opened.
unsafe fn path_of<'a>(file: *mut ffi::sqlite3_file) -> &'a str {
    unsafe { &(*(file as *mut CutFile)).path }
}

fn register() {
    // SAFETY: the default VFS is SQLite's unix VFS, alive for the process; ours copies its
    // randomness, sleep, time and dynamic-loading entries (which ignore the VFS argument) and
    // replaces the file ones. Both structs are leaked: SQLite keeps pointers to them.
    unsafe {
        ffi::sqlite3_initialize();
        let default = ffi::sqlite3_vfs_find(std::ptr::null());
        assert!(!default.is_null(), "SQLite has no default VFS");
        let mut vfs = std::ptr::read(default);
        vfs.iVersion = vfs.iVersion.min(2);
        vfs.szOsFile = std::mem::size_of::<CutFile>() as c_int;
        vfs.pNext = std::ptr::null_mut();
        vfs.zName = VFS_NAME.as_ptr();
        vfs.pAppData = std::ptr::null_mut();
        vfs.xOpen = Some(x_open);
        vfs.xDelete = Some(x_delete);
        vfs.xAccess = Some(x_access);
        vfs.xFullPathname = Some(x_full_pathname);
        let rc = ffi::sqlite3_vfs_register(Box::leak(Box::new(vfs)), 1);
        assert_eq!(rc, ffi::SQLITE_OK, "registering the VFS");
    }
}

static IO_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 2,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_lock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: Some(x_shm_map),
    xShmLock: Some(x_shm_lock),
    xShmBarrier: Some(x_shm_barrier),
    xShmUnmap: Some(x_shm_unmap),
    xFetch: None,
    xUnfetch: None,
};

unsafe extern "C" fn x_open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    static TEMP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let path = if name.is_null() {
        let n = TEMP.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("/cut-disk-temp/{n}")
    } else {
        unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned()
    };
    let exists = with_disk(|d| {
        if d.powered_off {
            return Err(ffi::SQLITE_IOERR);
        }
        if !d.files.contains_key(&path) {
            if flags & ffi::SQLITE_OPEN_CREATE == 0 {
                return Err(ffi::SQLITE_CANTOPEN);
            }
            d.files.insert(path.clone(), File::default());
        }
        Ok(())
    });
    if let Err(rc) = exists {
        unsafe { (*file).pMethods = std::ptr::null() };
        return rc;
    }
    // SAFETY: SQLite hands us `szOsFile` uninitialised bytes for the file object.
    unsafe {
        std::ptr::write(
            file as *mut CutFile,
            CutFile {
                base: ffi::sqlite3_file {
                    pMethods: &IO_METHODS,
                },
                path,
                delete_on_close: flags & ffi::SQLITE_OPEN_DELETEONCLOSE != 0,
            },
        );
        if !out_flags.is_null() {
            *out_flags = flags;
        }
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_delete(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    _sync_dir: c_int,
) -> c_int {
    let path = unsafe { CStr::from_ptr(name) }.to_string_lossy();
    with_disk(|d| {
        if d.powered_off {
            return ffi::SQLITE_IOERR_DELETE;
        }
        d.files.remove(path.as_ref());
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_access(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    _flags: c_int,
    out: *mut c_int,
) -> c_int {
    let path = unsafe { CStr::from_ptr(name) }.to_string_lossy();
    let exists = with_disk(|d| d.files.contains_key(path.as_ref()));
    unsafe { *out = c_int::from(exists) };
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_full_pathname(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    n_out: c_int,
    out: *mut c_char,
) -> c_int {
    let bytes = unsafe { CStr::from_ptr(name) }.to_bytes_with_nul();
    if bytes.len() > n_out as usize {
        return ffi::SQLITE_CANTOPEN;
    }
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr() as *const c_char, out, bytes.len()) };
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: x_open initialised this CutFile; SQLite closes each file once.
    let cut = unsafe { std::ptr::read(file as *mut CutFile) };
    if cut.delete_on_close {
        with_disk(|d| d.files.remove(&cut.path));
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amount: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    let path = unsafe { path_of(file) };
    let out = unsafe { std::slice::from_raw_parts_mut(buf as *mut u8, amount as usize) };
    with_disk(|d| {
        if d.powered_off || d.failing {
            return ffi::SQLITE_IOERR_READ;
        }
        let data = d.files.get(path).map(|f| &f.current[..]).unwrap_or(&[]);
        let start = (offset as usize).min(data.len());
        let available = (data.len() - start).min(out.len());
        out[..available].copy_from_slice(&data[start..start + available]);
        out[available..].fill(0);
        if available < out.len() {
            ffi::SQLITE_IOERR_SHORT_READ
        } else {
            ffi::SQLITE_OK
        }
    })
}

unsafe extern "C" fn x_write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amount: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    let path = unsafe { path_of(file) };
    let bytes = unsafe { std::slice::from_raw_parts(buf as *const u8, amount as usize) };
    with_disk(|d| {
        if !d.fits(path, offset as usize + bytes.len()) {
            return ffi::SQLITE_FULL;
        }
        if !power_for_mutation(d) {
            return ffi::SQLITE_IOERR_WRITE;
        }
        let file = d.files.entry(path.to_string()).or_default();
        write_at(&mut file.current, offset as usize, bytes);
        file.pending.push(Pending::Write {
            offset: offset as usize,
            bytes: bytes.to_vec(),
        });
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_truncate(file: *mut ffi::sqlite3_file, size: ffi::sqlite3_int64) -> c_int {
    let path = unsafe { path_of(file) };
    with_disk(|d| {
        if !power_for_mutation(d) {
            return ffi::SQLITE_IOERR_TRUNCATE;
        }
        let file = d.files.entry(path.to_string()).or_default();
        file.current.truncate(size as usize);
        file.pending.push(Pending::Truncate {
            size: size as usize,
        });
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_sync(file: *mut ffi::sqlite3_file, _flags: c_int) -> c_int {
    let path = unsafe { path_of(file) };
    with_disk(|d| {
        if !power_for_mutation(d) {
            return ffi::SQLITE_IOERR_FSYNC;
        }
        let file = d.files.entry(path.to_string()).or_default();
        for change in file.pending.drain(..) {
            change.apply_to(&mut file.durable);
        }
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_file_size(
    file: *mut ffi::sqlite3_file,
    size: *mut ffi::sqlite3_int64,
) -> c_int {
    let path = unsafe { path_of(file) };
    let len = with_disk(|d| d.files.get(path).map_or(0, |f| f.current.len()));
    unsafe { *size = len as ffi::sqlite3_int64 };
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_lock(_file: *mut ffi::sqlite3_file, _level: c_int) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_check_reserved_lock(
    _file: *mut ffi::sqlite3_file,
    out: *mut c_int,
) -> c_int {
    unsafe { *out = 0 };
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_file_control(
    _file: *mut ffi::sqlite3_file,
    _op: c_int,
    _arg: *mut c_void,
) -> c_int {
    ffi::SQLITE_NOTFOUND
}

unsafe extern "C" fn x_sector_size(_file: *mut ffi::sqlite3_file) -> c_int {
    SECTOR as c_int
}

unsafe extern "C" fn x_device_characteristics(_file: *mut ffi::sqlite3_file) -> c_int {
    // Nothing promised: no atomic writes, no safe appends, no power-safe overwrite.
    0
}

unsafe extern "C" fn x_shm_map(
    file: *mut ffi::sqlite3_file,
    region: c_int,
    region_size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    let path = unsafe { path_of(file) };
    with_disk(|d| {
        if d.powered_off {
            return ffi::SQLITE_IOERR_SHMMAP;
        }
        let regions = d.shm.entry(path.to_string()).or_default();
        let wanted = region as usize;
        if regions.len() <= wanted {
            if extend == 0 {
                unsafe { *out = std::ptr::null_mut() };
                return ffi::SQLITE_OK;
            }
            regions.resize_with(wanted + 1, || {
                vec![0u8; region_size as usize].into_boxed_slice()
            });
        }
        // The boxed region does not move while the map lives (the Vec holds pointers only).
        unsafe { *out = regions[wanted].as_mut_ptr() as *mut c_void };
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_shm_lock(
    _file: *mut ffi::sqlite3_file,
    _offset: c_int,
    _n: c_int,
    _flags: c_int,
) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_shm_barrier(_file: *mut ffi::sqlite3_file) {
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
}

unsafe extern "C" fn x_shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    if delete != 0 {
        let path = unsafe { path_of(file) };
        with_disk(|d| d.shm.remove(path));
    }
    ffi::SQLITE_OK
}
