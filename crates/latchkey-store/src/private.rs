//! File-system permissions of the data folder: only the service's own user
//! may read it. SQLite creates its `-wal` and `-shm` files with the mode of
//! the database file, so creating that file 0600 covers all three.

use std::path::Path;

use crate::StoreError;

fn io_err(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Key(format!("{}: {e}", path.display()))
}

/// Create `data_dir` (0700) and the database file (0600) if missing, and
/// tighten them (and SQLite's side files) if an older version left them
/// readable by others.
#[cfg(unix)]
pub(crate) fn prepare_sqlite(data_dir: &Path, db: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    create_private_dir(data_dir)?;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(db)
        .map_err(|e| io_err(db, e))?;
    for side in ["", "-wal", "-shm", "-journal"] {
        let mut f = db.as_os_str().to_owned();
        f.push(side);
        let f = Path::new(&f);
        if f.exists() {
            tighten(f, 0o600)?;
        }
    }
    Ok(())
}

/// Create `dir` (0700) if missing; take group and other access away from an
/// existing one.
#[cfg(unix)]
pub fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io_err(dir, e))?;
    tighten(dir, 0o700)
}

/// Remove the permissions outside `max` from `path` (never widen).
#[cfg(unix)]
fn tighten(path: &Path, max: u32) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| io_err(path, e))?
        .permissions()
        .mode()
        & 0o777;
    if mode & !max != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & max)).map_err(|e| io_err(path, e))?;
        tracing::warn!(path = %path.display(), from = format!("{mode:o}"), to = format!("{:o}", mode & max), "tightened permissions");
    }
    Ok(())
}

#[cfg(not(unix))]
pub fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))
}

#[cfg(not(unix))]
pub(crate) fn prepare_sqlite(data_dir: &Path, _db: &Path) -> Result<(), StoreError> {
    create_private_dir(data_dir)
}

/// Refuse a key file that others may read: whoever reads it can open every
/// sealed secret. (A file others can only write is refused too.)
#[cfg(unix)]
pub(crate) fn check_key_file(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| io_err(path, e))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(StoreError::Key(format!(
            "{} is accessible to other users (mode {mode:o}); it must be readable by the service's user only: chmod 600 {}",
            path.display(),
            path.display()
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
pub(crate) fn check_key_file(_path: &Path) -> Result<(), StoreError> {
    Ok(())
}
