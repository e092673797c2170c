//! Files that hold secrets or personal data (databases with meter keys and phone numbers, the
//! notification log, the technician socket): created with a narrow mode from the start, whatever
//! the umask, and narrowed if they already exist with a wider one.
use std::path::Path;

/// Owner read and write only: databases (meter keys, voucher secrets, phone numbers), sockets.
pub const OWNER_ONLY: u32 = 0o600;
/// Owner read and write, group read: logs an operator's group may read.
pub const OWNER_AND_GROUP_READ: u32 = 0o640;

/// Makes sure `path` exists as a regular file with at most `mode` (creating it empty if missing).
pub fn ensure_private(path: &Path, mode: u32) -> std::io::Result<()> {
    open_private_append(path, mode).map(drop)
}

/// Opens `path` for appending, created with `mode` if missing and narrowed to it if wider: one
/// open and one stat of the open file, for files appended to often (the notification log).
pub fn open_private_append(path: &Path, mode: u32) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(mode);
        let file = options.open(path)?;
        let current = file.metadata()?.permissions().mode() & 0o777;
        if current & !mode != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(current & mode))?;
        }
        Ok(file)
    }
    #[cfg(not(unix))]
    {
        let _ = mode;
        options.open(path)
    }
}

/// Narrows an existing file (or socket) to `mode` if its permissions are wider.
pub fn restrict(path: &Path, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let current = std::fs::metadata(path)?.permissions().mode() & 0o777;
        if current & !mode != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(current & mode))?;
        }
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_file_is_private_and_an_open_one_is_narrowed() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("new.db");
        ensure_private(&new, OWNER_ONLY).unwrap();
        assert_eq!(mode(&new), 0o600);
        let wide = dir.path().join("wide.log");
        std::fs::write(&wide, "phone numbers").unwrap();
        std::fs::set_permissions(&wide, std::fs::Permissions::from_mode(0o666)).unwrap();
        ensure_private(&wide, OWNER_AND_GROUP_READ).unwrap();
        assert_eq!(mode(&wide), 0o640);
        assert_eq!(std::fs::read_to_string(&wide).unwrap(), "phone numbers");
    }
}
